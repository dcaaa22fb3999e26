-- Which of a participant's tracker URLs is current: replacing a leaked one moves it on, and
-- the older URLs stop working at once.
ALTER TABLE participants ADD COLUMN tracker_generation BIGINT NOT NULL DEFAULT 0;
