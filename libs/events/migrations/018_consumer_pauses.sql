-- Paused consumer groups (libs/events/pauses.py; `kleer-sync outbound pause`).
--
-- While a group has a row here, its consumers take nothing from Kafka: the
-- batch in flight finishes and commits, then they wait, still members of the
-- group (no rebalance), until the row is gone. Changes queue meanwhile in the
-- log and in Kafka; nothing is lost or skipped. An operator pauses the pushers
-- during a HubSpot incident, or to review a first import before it is written.
CREATE TABLE IF NOT EXISTS consumer_pauses (
    consumer  text        PRIMARY KEY,
    reason    text        NOT NULL DEFAULT '',
    paused_by text        NOT NULL DEFAULT '',
    paused_at timestamptz NOT NULL DEFAULT now()
);
