-- The event log: one append-only table, commit-ordered global positions.
CREATE TABLE IF NOT EXISTS events (
    position    bigint      PRIMARY KEY,
    event_id    uuid        NOT NULL,
    stream      text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
CREATE INDEX IF NOT EXISTS events_type_position_idx ON events (type, position);
CREATE INDEX IF NOT EXISTS events_recorded_at_idx ON events USING brin (recorded_at);

-- Append a batch atomically.
--
-- Ordering: every append takes one transaction-scoped advisory lock before it
-- reads the head, so positions are handed out in commit order (the lock is
-- released only after the commit is visible). A follower reading by position
-- therefore never misses a lower position that commits later. Positions are
-- head + 1, head + 2, ... so they are gap-free in practice; followers must still
-- tolerate holes.
--
-- Idempotency: events whose event_id is already stored are skipped (their
-- stored position is returned with inserted = false).
--
-- Concurrency: p_expected[i] >= 0 is the version the stream must be at before
-- the first new event of that stream in this batch (0 = must not exist);
-- -1 means any version. A mismatch raises SQLSTATE 'KS409'.
CREATE OR REPLACE FUNCTION kleer_sync_append(
    p_event_ids uuid[],
    p_streams   text[],
    p_types     text[],
    p_data      jsonb[],
    p_metadata  jsonb[],
    p_expected  integer[]
) RETURNS TABLE (event_id uuid, "position" bigint, version integer, inserted boolean)
LANGUAGE plpgsql
-- A generic plan cached while the table was small would scan it whole later.
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_head bigint;
    v_existing uuid[];
    v_conflict record;
BEGIN
    PERFORM pg_advisory_xact_lock(4242000001);

    SELECT array_agg(e.event_id) INTO v_existing FROM events e WHERE e.event_id = ANY (p_event_ids);
    v_existing := COALESCE(v_existing, '{}');

    IF 0 <= ANY (p_expected) THEN
        SELECT f.stream, f.expected, COALESCE(c.v, 0) AS actual INTO v_conflict
        FROM (
            SELECT DISTINCT ON (i.stream) i.stream, i.expected
            FROM unnest(p_event_ids, p_streams, p_expected) WITH ORDINALITY AS i(event_id, stream, expected, ord)
            WHERE NOT (i.event_id = ANY (v_existing))
            ORDER BY i.stream, i.ord
        ) f
        LEFT JOIN LATERAL (
            SELECT e.version AS v FROM events e WHERE e.stream = f.stream ORDER BY e.version DESC LIMIT 1
        ) c ON true
        WHERE f.expected >= 0 AND f.expected <> COALESCE(c.v, 0)
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'KS409',
                MESSAGE = format('stream %s is at version %s, expected %s',
                                 v_conflict.stream, v_conflict.actual, v_conflict.expected),
                DETAIL = json_build_object('stream', v_conflict.stream, 'expected', v_conflict.expected,
                                           'actual', v_conflict.actual)::text;
        END IF;
    END IF;

    SELECT e.position INTO v_head FROM events e ORDER BY e.position DESC LIMIT 1;
    v_head := COALESCE(v_head, 0);

    RETURN QUERY
    WITH fresh AS (
        SELECT i.*, row_number() OVER (ORDER BY i.ord) AS rn,
               row_number() OVER (PARTITION BY i.stream ORDER BY i.ord) AS srn
        FROM unnest(p_event_ids, p_streams, p_types, p_data, p_metadata)
             WITH ORDINALITY AS i(event_id, stream, type, data, metadata, ord)
        WHERE NOT (i.event_id = ANY (v_existing))
    ), heads AS (
        SELECT s.stream, COALESCE(
            (SELECT e.version FROM events e WHERE e.stream = s.stream ORDER BY e.version DESC LIMIT 1), 0) AS v
        FROM (SELECT DISTINCT f.stream FROM fresh f) s
    ), ins AS (
        INSERT INTO events (position, event_id, stream, version, type, data, metadata)
        SELECT v_head + f.rn, f.event_id, f.stream, (h.v + f.srn)::integer, f.type, f.data, f.metadata
        FROM fresh f JOIN heads h USING (stream)
        RETURNING events.event_id, events.position, events.version
    )
    SELECT ins.event_id, ins.position, ins.version, true FROM ins
    UNION ALL
    SELECT e.event_id, e.position, e.version, false
    FROM events e WHERE e.event_id = ANY (v_existing);
END;
$$;

-- Consumers' checkpoints: the last handled position per Kafka partition,
-- written in the same transaction as the consumer's own effects.
CREATE TABLE IF NOT EXISTS consumer_checkpoints (
    consumer    text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    position    bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- The relay's progress: how far the log has been published, and per partition
-- the last Kafka offset and log position published (to detect a broker that
-- lost its data).
CREATE TABLE IF NOT EXISTS relay_state (
    relay      text   PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS relay_partitions (
    relay      text    NOT NULL,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    last_offset   bigint NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (relay, topic, partition)
);

-- The dead-letter queue: what could not be applied, with its reason, until
-- it is redriven or discarded. The events themselves stay in the log.
CREATE TABLE IF NOT EXISTS dead_letters (
    id            bigserial PRIMARY KEY,
    source        text        NOT NULL,              -- which consumer/handler parked it
    connection    text        NOT NULL,
    record        text        NOT NULL,              -- system:kind:id
    event_position bigint,
    event_id      uuid,
    reason        text        NOT NULL,
    detail        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    attempts      integer     NOT NULL DEFAULT 1,
    status        text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'redriven', 'discarded')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at   timestamptz
);
CREATE INDEX IF NOT EXISTS dead_letters_open_idx ON dead_letters (status, source, created_at);
CREATE INDEX IF NOT EXISTS dead_letters_record_idx ON dead_letters (record);
