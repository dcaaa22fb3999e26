-- Trails: each participant's path in the session, thinned on arrival and bounded; deleted
-- when the session ends (and with it).
CREATE TABLE trail_points (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    lat        REAL NOT NULL,
    lng        REAL NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX trail_points_by_participant ON trail_points (session_id, user_id, at);
