-- The poller's last pass per connection and object type, for every process.
--
-- Freshness (seconds since the last successful poll) was known only to the
-- poller's own gauges, so the admin overview, served by the inbound service,
-- showed nothing when the poller ran in another process (the Kubernetes
-- layout). One row per (connection, kind), upserted after each pass: the last
-- attempt, the last success with its figures, and the last error (cleared by
-- the next success). Tiny and bounded: no history here, the log has it.
CREATE TABLE IF NOT EXISTS poll_runs (
    connection      text        NOT NULL,
    kind            text        NOT NULL,
    last_attempt_at timestamptz NOT NULL,
    last_success_at timestamptz,
    seen            integer     NOT NULL DEFAULT 0,   -- of the last successful pass
    changed         integer     NOT NULL DEFAULT 0,
    removed         integer     NOT NULL DEFAULT 0,
    seconds         double precision NOT NULL DEFAULT 0,
    last_error      text,                             -- of the last pass; NULL when it succeeded
    PRIMARY KEY (connection, kind)
);
