-- A participant's latest share settings (`share_settings` on any of their sockets): kept
-- after the socket closes, and applied to what their tracker apps report.
ALTER TABLE participants ADD COLUMN share_approximate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN share_paused INTEGER NOT NULL DEFAULT 0;
