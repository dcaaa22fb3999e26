-- A participant's latest share settings (`share_settings` on any of their sockets): kept
-- after the socket closes, and applied to what their tracker apps report.
ALTER TABLE participants ADD COLUMN share_approximate BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE participants ADD COLUMN share_paused BOOLEAN NOT NULL DEFAULT FALSE;
