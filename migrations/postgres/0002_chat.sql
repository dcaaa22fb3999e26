-- Chat: session chat (session_id set) and local rooms (room_id, a geohash cell, set).
-- Session chat goes with its session.
CREATE TABLE chat_messages (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id   UUID REFERENCES sessions (id) ON DELETE CASCADE,
    room_id      VARCHAR(12),
    user_id      UUID NOT NULL,
    display_name VARCHAR(100) NOT NULL,
    avatar_color VARCHAR(7) NOT NULL,
    content      TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CHECK ((session_id IS NULL) <> (room_id IS NULL))
);

CREATE INDEX chat_messages_session ON chat_messages (session_id, id) WHERE session_id IS NOT NULL;
CREATE INDEX chat_messages_room ON chat_messages (room_id, id) WHERE room_id IS NOT NULL;
-- Retention deletes by age.
CREATE INDEX chat_messages_created ON chat_messages (created_at);
-- Retention deletes ended sessions by end time.
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE NOT is_active;
