-- Sessions and their participants. Times are Unix milliseconds (UTC); ids are UUID text.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT,
    creator_id    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    last_activity INTEGER NOT NULL,
    is_active     INTEGER NOT NULL DEFAULT 1,
    ended_at      INTEGER
);

-- The sweeper's query: live sessions by end time and by activity.
CREATE INDEX sessions_live_expires ON sessions (expires_at) WHERE is_active = 1;
CREATE INDEX sessions_live_activity ON sessions (last_activity) WHERE is_active = 1;

CREATE TABLE participants (
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    avatar_color TEXT NOT NULL,
    joined_at    INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    is_active    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (session_id, user_id)
);

CREATE INDEX participants_active ON participants (session_id) WHERE is_active = 1;
