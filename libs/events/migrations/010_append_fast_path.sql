-- A faster append, same guarantees (see 001 for the ordering argument).
--
-- 001's kleer_sync_append ran four statements and planned each one afresh on
-- every call (force_custom_plan: a generic plan cached while the log was small
-- turned its joins into sequential scans as the log grew). This version:
--
-- * plans once per session: every look-up of the log is a correlated subquery
--   or an initplan, never a join the planner could turn into a scan of the
--   whole table, and the function runs with enable_seqscan off so even a plan
--   made on an empty log keeps to the indexes;
-- * takes one fast path when none of the batch's event ids is stored (a retry
--   after a lost answer is the only case that is not): a single INSERT ...
--   SELECT that numbers positions after the head, numbers versions after each
--   stream's head, and raises the concurrency error from inside the same
--   statement (kleer_sync_conflict) when a stream is not at its expected
--   version, so nothing of the batch is written;
-- * keeps the general path (skip stored events, number the rest) for retries.
--
-- Unchanged: one transaction-scoped advisory lock taken before the head is
-- read (positions are gap-free and in commit order), idempotency by event_id,
-- expected versions checked at the first new event of each stream, SQLSTATE
-- KS409 with the JSON detail the store turns into ConcurrencyError.

-- Raises the store's concurrency error; returns integer so it can stand in an
-- expression (it never returns).
CREATE OR REPLACE FUNCTION kleer_sync_conflict(p_stream text, p_expected integer, p_actual integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'KS409',
        MESSAGE = format('stream %s is at version %s, expected %s', p_stream, p_actual, p_expected),
        DETAIL = json_build_object('stream', p_stream, 'expected', p_expected, 'actual', p_actual)::text;
END;
$$;

CREATE OR REPLACE FUNCTION kleer_sync_append(
    p_event_ids uuid[],
    p_streams   text[],
    p_types     text[],
    p_data      jsonb[],
    p_metadata  jsonb[],
    p_expected  integer[]
) RETURNS TABLE (event_id uuid, "position" bigint, version integer, inserted boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(4242000001);

    IF NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_event_ids)) THEN
        RETURN QUERY
        INSERT INTO events (position, event_id, stream, version, type, data, metadata)
        SELECT b.head + b.ord, b.event_id, b.stream,
               CASE WHEN b.srn = 1 AND b.expected >= 0 AND b.cur <> b.expected
                    THEN kleer_sync_conflict(b.stream, b.expected, b.cur)
                    ELSE b.cur + b.srn::integer END,
               b.type, b.data, b.metadata
        FROM (
            SELECT i.*,
                   row_number() OVER (PARTITION BY i.stream ORDER BY i.ord) AS srn,
                   COALESCE((SELECT e.version FROM events e WHERE e.stream = i.stream
                             ORDER BY e.version DESC LIMIT 1), 0) AS cur,
                   COALESCE((SELECT e.position FROM events e ORDER BY e.position DESC LIMIT 1), 0) AS head
            FROM unnest(p_event_ids, p_streams, p_types, p_data, p_metadata, p_expected)
                 WITH ORDINALITY AS i(event_id, stream, type, data, metadata, expected, ord)
            OFFSET 0  -- evaluate each stream's head once per row, not once per reference
        ) b
        ORDER BY b.ord  -- recorded_at (clock_timestamp()) grows with position, as replay's search assumes
        RETURNING events.event_id, events.position, events.version, true;
        RETURN;
    END IF;

    -- Some events are stored already: skip them, number the rest.
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT i.*, (SELECT e.position FROM events e WHERE e.event_id = i.event_id) AS stored_position
        FROM unnest(p_event_ids, p_streams, p_types, p_data, p_metadata, p_expected)
             WITH ORDINALITY AS i(event_id, stream, type, data, metadata, expected, ord)
    ), fresh AS MATERIALIZED (
        SELECT i.*,
               row_number() OVER (ORDER BY i.ord) AS rn,
               row_number() OVER (PARTITION BY i.stream ORDER BY i.ord) AS srn,
               COALESCE((SELECT e.version FROM events e WHERE e.stream = i.stream
                         ORDER BY e.version DESC LIMIT 1), 0) AS cur
        FROM input i
        WHERE i.stored_position IS NULL
    ), ins AS (
        INSERT INTO events (position, event_id, stream, version, type, data, metadata)
        SELECT COALESCE((SELECT e.position FROM events e ORDER BY e.position DESC LIMIT 1), 0) + f.rn,
               f.event_id, f.stream,
               CASE WHEN f.srn = 1 AND f.expected >= 0 AND f.cur <> f.expected
                    THEN kleer_sync_conflict(f.stream, f.expected, f.cur)
                    ELSE f.cur + f.srn::integer END,
               f.type, f.data, f.metadata
        FROM fresh f
        ORDER BY f.ord
        RETURNING events.event_id, events.position, events.version
    )
    SELECT ins.event_id, ins.position, ins.version, true FROM ins
    UNION ALL
    SELECT i.event_id, i.stored_position, (SELECT e.version FROM events e WHERE e.event_id = i.event_id), false
    FROM input i
    WHERE i.stored_position IS NOT NULL;
END;
$$;

-- recorded_at is read with a position range (replay narrows a time window by
-- binary search over positions), never by itself: its BRIN index only cost
-- every append an index insert.
DROP INDEX IF EXISTS events_recorded_at_idx;
