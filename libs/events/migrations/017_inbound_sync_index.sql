-- The inbound syncs of a record, found without reading its other events.
--
-- Before each push of a company or project the pusher asks, per record, for the
-- latest inbound sync of it (services/outbound/idmap.py, INBOUND_SYNC_TYPES and
-- INBOUND_SYNC_EVENT): HubSpot's values as the inbound handlers brought them to
-- Kleer. Most records have none. Through events_stream_version_key that answer
-- read every event of the stream (about 25 us per record on the first push of
-- 50,000 companies, 1.3 s of the server's 10 s for the push); this index holds the
-- inbound syncs alone, so a record without one costs one look-up in a small index.
--
-- Building it reads the whole log once, and appends wait meanwhile (the migration
-- runs in a transaction, so not CONCURRENTLY, as 007's indexes): on a large log,
-- migrate when a pause of the writers is acceptable.
--
-- The pusher's queries spell the same predicate out literally (the planner uses
-- a partial index only for a query whose conditions imply its predicate); a test
-- (tests/integration/outbound/test_inbound_sync_index.py) checks that they do.
CREATE INDEX IF NOT EXISTS events_inbound_sync_idx ON events (stream, version)
    WHERE type IN ('KleerClientUpdated', 'KleerProjectUpdated', 'KleerClientCreated', 'InboundSyncSkipped')
      AND data ? 'hubspot_properties';
