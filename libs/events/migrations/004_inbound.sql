-- Inbound sync (HubSpot -> Kleer): links, create intents, conflicts.
--
-- Webhook dedupe needs no table of its own: every accepted HubSpot event is
-- appended as WebhookReceived with an event_id derived from (portal, eventId),
-- so the event log's unique event_id makes a redelivery a no-op.

-- Which Kleer record a HubSpot record is linked to, as last seen by the inbound
-- handlers (the kleer_id property on the HubSpot record is the source of truth;
-- this table remembers links across merges and deletions).
CREATE TABLE IF NOT EXISTS inbound_links (
    connection     text        NOT NULL,
    hubspot_object text        NOT NULL,   -- companies, projects
    hubspot_id     text        NOT NULL,
    kleer_type     text        NOT NULL,   -- client, project
    kleer_id       text        NOT NULL,
    status         text        NOT NULL DEFAULT 'linked'
                   CHECK (status IN ('linked', 'deleted_in_hubspot', 'merged_away')),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, hubspot_object, hubspot_id)
);
CREATE INDEX IF NOT EXISTS inbound_links_kleer_idx ON inbound_links (connection, kleer_type, kleer_id);

-- Kleer creates (PUT) are not idempotent. Before creating a client for a
-- HubSpot company we commit an intent; a retry that finds an unfinished intent
-- looks the client up by its foreign-id instead of creating a second one.
CREATE TABLE IF NOT EXISTS inbound_creations (
    connection     text        NOT NULL,
    hubspot_object text        NOT NULL,
    hubspot_id     text        NOT NULL,
    foreign_id     text        NOT NULL,
    kleer_id       text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    PRIMARY KEY (connection, hubspot_object, hubspot_id)
);

-- Both sides changed since the last sync: what each side held and who won.
-- The SyncConflict event in the Kleer record's stream carries the same facts.
CREATE TABLE IF NOT EXISTS sync_conflicts (
    id               bigserial   PRIMARY KEY,
    connection       text        NOT NULL,
    kleer_type       text        NOT NULL,
    kleer_id         text        NOT NULL,
    hubspot_object   text        NOT NULL,
    hubspot_id       text        NOT NULL,
    policy           text        NOT NULL,
    winner           text        NOT NULL CHECK (winner IN ('hubspot', 'kleer')),
    hubspot_values   jsonb       NOT NULL,
    kleer_values     jsonb       NOT NULL,
    event_id         uuid,
    detected_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sync_conflicts_record_idx ON sync_conflicts (connection, kleer_type, kleer_id);
