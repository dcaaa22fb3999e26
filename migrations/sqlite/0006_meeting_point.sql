-- Meeting up: who may set the session's meeting point, and the point itself (JSON:
-- lat, lng, name, radius_m, set_by, set_at), stored and deleted with the session.
ALTER TABLE sessions ADD COLUMN meeting_point_by TEXT NOT NULL DEFAULT 'creator';
ALTER TABLE sessions ADD COLUMN meeting_point TEXT;
