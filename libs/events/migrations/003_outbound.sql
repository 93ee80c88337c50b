-- Outbound (Kleer -> HubSpot) bookkeeping; owned by services/outbound.

-- What the poller last saw of each Kleer record: the fingerprint of its mapped
-- HubSpot properties (libs.mapping.convert.fingerprint). Written in the same
-- transaction as the Kleer...Changed / Kleer...Removed event it caused.
CREATE TABLE IF NOT EXISTS outbound_fingerprints (
    connection  text        NOT NULL,
    kind        text        NOT NULL,   -- client, product, invoice, agreement, project, line_item
    kleer_id    text        NOT NULL,
    fingerprint text        NOT NULL,   -- '' = the record could not be mapped (it is in the DLQ)
    -- Hash of the raw Kleer input and the mapping version: an unchanged input is
    -- not mapped again (mapping is the costly part of a no-change poll).
    source_hash text        NOT NULL DEFAULT '',
    record_date date,                   -- invoices and their rows: invoice-date (history window)
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, kind, kleer_id)
);

-- What the pusher wrote: Kleer record -> HubSpot record, the fingerprint of the
-- snapshot last written (a replay or duplicate of it writes nothing) and the
-- parents it is already associated with.
CREATE TABLE IF NOT EXISTS hubspot_ids (
    connection         text        NOT NULL,
    kind               text        NOT NULL,
    kleer_id           text        NOT NULL,
    hubspot_object     text        NOT NULL,   -- companies, products, invoices, subscriptions, projects, line_items
    hubspot_id         text        NOT NULL,
    pushed_fingerprint text,                   -- NULL after a removal
    associated         text[]      NOT NULL DEFAULT '{}',  -- parents already associated: 'client:77', 'deal#123'
    removed            boolean     NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, kind, kleer_id)
);
CREATE INDEX IF NOT EXISTS hubspot_ids_by_hubspot_id ON hubspot_ids (connection, hubspot_object, hubspot_id);

-- Associations waiting for their parent to reach HubSpot (a child pushed before
-- its parent). Resolved by the pusher as soon as the parent has a HubSpot id.
CREATE TABLE IF NOT EXISTS pending_associations (
    connection    text        NOT NULL,
    from_kind     text        NOT NULL,
    from_kleer_id text        NOT NULL,
    to_kind       text        NOT NULL,
    to_kleer_id   text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, from_kind, from_kleer_id, to_kind, to_kleer_id)
);
CREATE INDEX IF NOT EXISTS pending_associations_by_parent
    ON pending_associations (connection, to_kind, to_kleer_id);
