-- Large batches are written with COPY: this function opens such an append.
--
-- kleer_sync_append(jsonb, boolean) builds its rows from one JSON document with
-- jsonb functions and window functions. For the large batches of a full sync
-- (the poller's pages, the pusher's consumer batches, thousands of events) that
-- cost the server about 24 us per event, against 13-14 us when the same rows
-- arrive by COPY (measured on one server, 5,000-event batches of the outbound
-- sync's events, backend CPU time): the parsing, the per-row look-ups and a
-- sort that spilled to disk past work_mem were most of its work.
--
-- So for a large batch appended in a caller's transaction (the poller's and the
-- consumers' commits) the store (libs/events/store.py, _copy_append) calls this
-- function, numbers the events itself, and COPYs them in, in that transaction.
-- The guarantees stay those of 001, 010 and 011:
-- - the append lock is taken here, before the heads are read, and held until
--   the transaction ends, so positions are handed out in commit order and are
--   gap-free;
-- - the answer holds the stored events among p_event_ids (skipped, returned
--   with inserted = false), the version of every stream of p_streams that
--   exists, and the head position;
-- - the store checks expected versions against those versions (KS409's rule:
--   the first new event of a stream carries the expectation) before it writes.
--
-- Rows: (event_id, stream, position, version) of a stored event;
-- (NULL, stream, NULL, version) of an existing stream; (NULL, NULL, head, NULL).
CREATE OR REPLACE FUNCTION kleer_sync_append_begin(p_event_ids uuid[], p_streams text[])
RETURNS TABLE (event_id uuid, stream text, "position" bigint, version integer)
LANGUAGE plpgsql
-- Index look-ups at any table size, whatever plan was cached while it was small.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(4242000001);

    RETURN QUERY SELECT e.event_id, e.stream, e.position, e.version FROM events e
                 WHERE e.event_id = ANY (p_event_ids);

    RETURN QUERY
    SELECT NULL::uuid, s.stream, NULL::bigint, c.version
    FROM unnest(p_streams) AS s(stream)
    JOIN LATERAL (
        SELECT e.version FROM events e WHERE e.stream = s.stream ORDER BY e.version DESC LIMIT 1
    ) c ON true;

    RETURN QUERY
    SELECT NULL::uuid, NULL::text, COALESCE(max(e.position), 0), NULL::integer FROM events e;
END;
$$;
