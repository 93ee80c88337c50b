-- The broker epoch: bumped by the relay whenever it finds the broker lost data
-- and rewinds. Consumers watch it and re-read their partitions from the start
-- (their checkpoints skip what they handled), because a broker that came back
-- empty may never serve the offsets they were parked at.
ALTER TABLE relay_state ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;

-- Where each consumer is in Kafka, kept with its checkpoint: the offset of the
-- last message it handled and the broker epoch that offset belongs to. On
-- assignment a consumer resumes there if the epoch is current, else from the
-- start of the partition. Kafka's own committed offsets are never trusted: a
-- broker that lost its data can hold offsets committed before it noticed.
ALTER TABLE consumer_checkpoints ADD COLUMN IF NOT EXISTS kafka_offset bigint;
ALTER TABLE consumer_checkpoints ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
