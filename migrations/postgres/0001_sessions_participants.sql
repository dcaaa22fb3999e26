-- Sessions and their participants (seed 000's tables, with ended_at for the record).
CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    name          VARCHAR(255),
    creator_id    UUID NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at    TIMESTAMPTZ NOT NULL,
    last_activity TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    is_active     BOOLEAN NOT NULL DEFAULT TRUE,
    ended_at      TIMESTAMPTZ
);

-- The sweeper's query: live sessions by end time and by activity.
CREATE INDEX sessions_live_expires ON sessions (expires_at) WHERE is_active;
CREATE INDEX sessions_live_activity ON sessions (last_activity) WHERE is_active;

CREATE TABLE participants (
    session_id   UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id      UUID NOT NULL,
    display_name VARCHAR(100) NOT NULL,
    avatar_color VARCHAR(7) NOT NULL DEFAULT '#FF5733',
    joined_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_seen    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    is_active    BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (session_id, user_id)
);

CREATE INDEX participants_active ON participants (session_id) WHERE is_active;
