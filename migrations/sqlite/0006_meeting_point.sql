-- Meeting up: who may set the session's meeting point, and the point itself (JSON:
-- lat, lng, name, radius_m, set_by, set_at), stored and deleted with the session.
ALTER TABLE sessions ADD COLUMN meeting_point_by TEXT NOT NULL DEFAULT 'creator';
ALTER TABLE sessions ADD COLUMN meeting_point TEXT;
-- Which point it is (its set_at): an arrival is stored only against the point it was
-- decided for.
ALTER TABLE sessions ADD COLUMN meeting_point_set_at INTEGER;
-- Whether a participant has arrived at it (the instance that got the fix that changed it
-- sets it with a compare-and-set, so each change is announced once).
ALTER TABLE participants ADD COLUMN arrived INTEGER NOT NULL DEFAULT 0;
