-- The own-write log, one row per HubSpot record instead of one per property.
--
-- The pusher logs every property inbound sync reads of every record it writes
-- (a dozen per company), in the transaction that records the push. As one row
-- per property that was the second costliest statement of a full sync: measured with
-- pg_stat_statements over bench_outbound --scale 0.5, 4.8 s of the server's
-- 18 s, for 600,000 rows, 8 us each. One row per record carries the same facts
-- in a twelfth of the rows and index entries.
--
-- properties: {"<property>": ["<value we wrote>", <unix seconds of that write>]}.
-- A later write of a property replaces its entry (jsonb ||); the others keep
-- theirs, so each property keeps its own echo window (services/own_writes.py).
CREATE TABLE IF NOT EXISTS own_write_records (
    connection  text  NOT NULL,
    object_type text  NOT NULL,   -- HubSpot object type path name: companies, projects, ...
    object_id   text  NOT NULL,   -- HubSpot record id
    properties  jsonb NOT NULL,
    PRIMARY KEY (connection, object_type, object_id)
);

-- What the per-property table holds moves over. The old table stays until a
-- later migration drops it: a process of the previous release still running
-- during a rolling update keeps writing there instead of failing its pushes
-- (the webhooks echoing those few writes still carry changeSource/sourceId,
-- the first test for an echo).
INSERT INTO own_write_records (connection, object_type, object_id, properties)
SELECT connection, object_type, object_id,
       jsonb_object_agg(property, jsonb_build_array(value, floor(extract(epoch FROM written_at))::bigint))
FROM own_writes
GROUP BY connection, object_type, object_id
ON CONFLICT DO NOTHING;
