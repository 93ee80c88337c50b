-- Inbound client creates, exactly once (services/inbound/client_creation.py).
-- unsettled_until: until when an earlier create of this company's client may
-- still land in Kleer (its answer was lost, or its sender died); NULL when no
-- create can be pending. An unfinished intent of an older version may have
-- stored a client: it is looked up by its foreign-id before creating again.
ALTER TABLE inbound_creations ADD COLUMN IF NOT EXISTS unsettled_until timestamptz;
UPDATE inbound_creations SET unsettled_until = started_at WHERE kleer_id IS NULL AND unsettled_until IS NULL;
