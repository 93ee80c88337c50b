-- Operations (services/operations): audit look-ups and replay runs.

-- The audit follows cause and effect across streams: an event's effects are
-- the events whose metadata names it as their causation_id. The correlation
-- index serves "every event of one chain" (admin record page, replay resume).
-- Partial: events without the key (a poll's first facts) cost no index entry.
CREATE INDEX IF NOT EXISTS events_causation_idx
    ON events ((metadata->>'causation_id')) WHERE metadata ? 'causation_id';
CREATE INDEX IF NOT EXISTS events_correlation_idx
    ON events ((metadata->>'correlation_id')) WHERE metadata ? 'correlation_id';

-- One row per replay run (`kleer-sync replay`, admin replay page). The
-- selection is frozen at the log head when the run started (up_to_position);
-- records are pushed in the order of their selected event's position, and
-- cursor_position says how far that got, so a killed run resumes where it
-- stopped (a rerun of the same selection finds the running row by
-- selector_key). Every event the run causes carries correlation_id.
CREATE TABLE IF NOT EXISTS replay_runs (
    id              text        PRIMARY KEY,
    connection      text        NOT NULL,
    selector        jsonb       NOT NULL,
    selector_key    text        NOT NULL,
    up_to_position  bigint      NOT NULL,
    correlation_id  text        NOT NULL,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'completed', 'failed')),
    total           integer     NOT NULL DEFAULT 0,   -- records selected
    pushed          integer     NOT NULL DEFAULT 0,   -- records written to HubSpot
    unchanged       integer     NOT NULL DEFAULT 0,   -- records that needed no write (removed before they landed)
    failed          integer     NOT NULL DEFAULT 0,   -- records parked in the dead-letter queue
    events_scanned  bigint      NOT NULL DEFAULT 0,
    cursor_position bigint      NOT NULL DEFAULT 0,   -- records whose selected event is <= this are done
    actor           text        NOT NULL,
    last_error      text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS replay_runs_running_idx ON replay_runs (selector_key) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS replay_runs_started_idx ON replay_runs (started_at DESC);
