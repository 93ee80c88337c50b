-- Workflow actions (HubSpot custom workflow actions, automation v4); owned by services/inbound/actions.
--
-- One row per callbackId. HubSpot retries an action call for days and may send
-- the same callbackId several times at once: the first request claims the row
-- (INSERT ... ON CONFLICT DO NOTHING), later ones read the answer it stored (or
-- wait for it), so a Kleer record is created at most once per callbackId.
CREATE TABLE IF NOT EXISTS workflow_actions (
    connection          text        NOT NULL,
    callback_id         text        NOT NULL,
    action              text        NOT NULL,   -- create-client, create-invoice, ...
    object_type         text        NOT NULL,   -- DEAL, COMPANY (as HubSpot names it)
    object_id           text        NOT NULL,
    request             jsonb       NOT NULL,   -- the call as received (inputs, properties, origin)
    correlation_id      uuid        NOT NULL,   -- of every event this call causes
    -- running: being worked on by `owner` until `lease_until` (then another worker takes it over);
    -- blocked: we answered BLOCK, the work goes on and ends with a callback completion;
    -- done: `answer` is final.
    state               text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'blocked', 'done')),
    owner               uuid        NOT NULL,
    lease_until         timestamptz NOT NULL,
    deliveries          integer     NOT NULL DEFAULT 1,  -- how often HubSpot sent this callbackId
    -- The Kleer record this call created or changed. `kleer_pending` is set (committed) before a Kleer
    -- create is sent and cleared with `kleer_id` after it: a takeover that finds it set without an id
    -- cannot know whether Kleer stored the record, and never sends the create again.
    kleer_type          text,
    kleer_id            text,
    kleer_pending       boolean     NOT NULL DEFAULT false,
    answer              jsonb,                  -- outputFields of the final answer
    attempts            integer     NOT NULL DEFAULT 0,  -- work attempts (transient failures are retried)
    next_attempt_at     timestamptz,
    last_error          text,
    expires_at          timestamptz NOT NULL,   -- HubSpot gives up on a blocked call then (hs_expiration_duration)
    -- A blocked call's answer goes to POST /automation/v4/actions/callbacks/{callbackId}/complete.
    completion_due      boolean     NOT NULL DEFAULT false,
    completed_at        timestamptz,
    completion_attempts integer     NOT NULL DEFAULT 0,
    received_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, callback_id)
);

-- The sweeper's work: calls whose worker died (lease over) and completions still to send.
CREATE INDEX IF NOT EXISTS workflow_actions_unfinished
    ON workflow_actions (lease_until) WHERE state <> 'done';
CREATE INDEX IF NOT EXISTS workflow_actions_completion_due
    ON workflow_actions (next_attempt_at) WHERE state = 'done' AND completion_due AND completed_at IS NULL;
CREATE INDEX IF NOT EXISTS workflow_actions_by_object
    ON workflow_actions (connection, object_type, object_id);
-- At most one Kleer create of a kind in flight per HubSpot object: two workflows enrolled at once
-- cannot both create an invoice (agreement, project) for the same deal.
CREATE UNIQUE INDEX IF NOT EXISTS workflow_actions_one_create_in_flight
    ON workflow_actions (connection, object_type, object_id, kleer_type) WHERE kleer_pending;
