-- The append takes its batch as one JSON document, and can leave the look-up
-- of stored event ids to the unique index.
--
-- p_batch: [[event_id, stream, type, data, metadata, expected], ...] in batch
-- order (expected: the version the stream must be at before the first new
-- event of that stream, 0 = must not exist, -1 = any). One document costs the
-- client one orjson call instead of six arrays encoded element by element.
--
-- p_skip_stored = true: exactly 010's kleer_sync_append (events whose id is
-- stored are skipped and returned with inserted = false).
-- p_skip_stored = false: the caller owns the transaction and has no reason to
-- expect stored ids (a first attempt). The batch is inserted without looking
-- them up; a stored id fails the insert on events_event_id_key, and an expected
-- version can fail with KS409 where the event was stored already: either way
-- nothing is written and the caller asks again with p_skip_stored = true,
-- whose answer stands.
--
-- Same lock, positions, versions, checks and error as 010 (see 001 and 010).
CREATE OR REPLACE FUNCTION kleer_sync_append(p_batch jsonb, p_skip_stored boolean)
RETURNS TABLE (event_id uuid, "position" bigint, version integer, inserted boolean)
LANGUAGE plpgsql
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(4242000001);

    IF p_skip_stored AND EXISTS (
        SELECT 1 FROM events e
        WHERE e.event_id = ANY (ARRAY(SELECT (r->>0)::uuid FROM jsonb_array_elements(p_batch) AS x(r)))
    ) THEN
        -- Some events are stored already: skip them, number the rest.
        RETURN QUERY
        WITH input AS MATERIALIZED (
            SELECT i.*, (SELECT e.position FROM events e WHERE e.event_id = i.event_id) AS stored_position
            FROM (
                SELECT (x.r->>0)::uuid AS event_id, x.r->>1 AS stream, x.r->>2 AS type, x.r->3 AS data,
                       x.r->4 AS metadata, (x.r->>5)::integer AS expected, x.ord
                FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x(r, ord)
            ) i
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
        RETURN;
    END IF;

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
        FROM (
            SELECT (x.r->>0)::uuid AS event_id, x.r->>1 AS stream, x.r->>2 AS type, x.r->3 AS data,
                   x.r->4 AS metadata, (x.r->>5)::integer AS expected, x.ord
            FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x(r, ord)
        ) i
        OFFSET 0  -- evaluate each stream's head once per row, not once per reference
    ) b
    ORDER BY b.ord  -- recorded_at (clock_timestamp()) grows with position, as replay's search assumes
    RETURNING events.event_id, events.position, events.version, true;
END;
$$;
