-- Trails: each participant's path in the session, thinned on arrival and bounded; deleted
-- when the session ends (and with it).
CREATE TABLE trail_points (
    id         BIGSERIAL PRIMARY KEY,
    session_id UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    UUID NOT NULL,
    lat        DOUBLE PRECISION NOT NULL,
    lng        DOUBLE PRECISION NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX trail_points_by_participant ON trail_points (session_id, user_id, at);
