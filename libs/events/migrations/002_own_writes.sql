-- The own-write log: the last value we wrote to each HubSpot property of each
-- record. A webhook reporting that same value is our own echo, even when its
-- changeSource/sourceId metadata is missing.
CREATE TABLE IF NOT EXISTS own_writes (
    connection  text        NOT NULL,
    object_type text        NOT NULL,   -- HubSpot object type path name: companies, projects, ...
    object_id   text        NOT NULL,   -- HubSpot record id
    property    text        NOT NULL,
    value       text        NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, object_type, object_id, property)
);
