-- The broker epoch: bumped by the relay whenever it finds the broker lost data
-- and rewinds. Consumers watch it and re-read their partitions from the start
-- (their checkpoints skip what they handled), because a broker that came back
-- empty may never serve the offsets they were parked at.
ALTER TABLE relay_state ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
