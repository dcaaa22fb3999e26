-- When a participant left (every instance re-checks recent departures, so a removal holds
-- while the bus is down), and which of its tokens is current (a refresh makes the older
-- ones unusable for new sockets).
ALTER TABLE participants ADD COLUMN left_at TIMESTAMPTZ;
ALTER TABLE participants ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
-- When the generation last moved: the one before stays good for a grace period.
ALTER TABLE participants ADD COLUMN token_rotated_at TIMESTAMPTZ;
CREATE INDEX participants_left ON participants (left_at) WHERE left_at IS NOT NULL;
