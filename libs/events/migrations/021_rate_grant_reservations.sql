-- A grant of the shared HubSpot rate budget may be *reserved*: when the window
-- is full and enough answered grants will have left it, a caller asking with
-- p_reserve is granted the slot at the time it frees (granted_at_ms, in the
-- future; wait_ms until then), instead of being told to wait and ask again.
--
-- Until now a waiting process slept until the slot's time (plus up to 50 ms of
-- jitter, so that pods waiting for one slot did not all ask at once), then asked
-- again: two statements per request while the window was full, and the slot
-- unused for the jitter and the second statement's round trip (43 ms at the
-- mean in a trace of bench_outbound (b), 2026-12-07, against HubSpot's 10 s
-- sped up to 1 s). A reservation counts from when it is made (its expiry is
-- negative, as a grant in flight) until its answer is reported, as any grant;
-- the process sends its request no sooner than granted_at_ms. Reservations are
-- handed out in order: the k-th slot to free goes to the k-th asker.
--
-- hubspot_rate_grant() (migration 020) stays, for processes of the version
-- before, as this function without reservations.

CREATE OR REPLACE FUNCTION hubspot_rate_reserve(
    p_portal text,
    p_cost integer,            -- requests to grant; 0 only reports answers
    p_limit integer,           -- requests counted at most at once (HubSpot's max minus a safety margin)
    p_interval_ms bigint,      -- HubSpot's interval: how long a request counts after its answer
    p_hold_ms bigint,          -- how long an unanswered grant counts at most
    p_answered_at bigint[],    -- the grant times (granted_at_ms) of requests answered since the last call ...
    p_answered_until bigint[], -- ... and until when each counts: its answer (database clock) plus the interval
    p_observed_used integer DEFAULT -1,  -- HubSpot's count of spent requests (max - remaining), or -1
    p_block_ms bigint DEFAULT 0,         -- after a 429: let nobody spend for this long
    p_reserve boolean DEFAULT false,     -- when the window is full: reserve the slot that frees first, if known
    OUT wait_ms bigint,        -- granted_at_ms set: granted, to be sent in wait_ms (0: now); unset: wait
                               -- this long before asking again (nothing granted)
    OUT granted_at_ms bigint   -- the grant's time (database clock): the key to report its answer with
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now      bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_grants   bigint[];
    v_expiries bigint[];
    v_ends     bigint[];
    v_blocked  bigint;
    v_count    integer;
    v_answered integer;
    v_missing  integer;
    v_need     integer;
BEGIN
    INSERT INTO hubspot_rate_budget (portal) VALUES (p_portal) ON CONFLICT (portal) DO NOTHING;
    SELECT grants, expiries, blocked_until_ms INTO v_grants, v_expiries, v_blocked
      FROM hubspot_rate_budget WHERE portal = p_portal FOR UPDATE;

    -- Apply the answers (the k-th answer reported for a grant time ends the k-th grant of that time still
    -- in flight: grants of one time are alike), then keep what still counts: answered grants first, by end,
    -- then those in flight. A grant stored before migration 019 has no expiry: it ends an interval after it.
    WITH held AS (
        SELECT g, coalesce(e, g + p_interval_ms) AS e,
               row_number() OVER (PARTITION BY g, coalesce(e, 0) < 0 ORDER BY e) AS k
          FROM unnest(v_grants, v_expiries) AS t(g, e)
    ), answers AS (
        SELECT g, u, row_number() OVER (PARTITION BY g ORDER BY u) AS k
          FROM unnest(p_answered_at, p_answered_until) AS t(g, u)
    ), settled AS (
        SELECT held.g, CASE WHEN held.e < 0 AND answers.u IS NOT NULL THEN answers.u ELSE held.e END AS e
          FROM held LEFT JOIN answers ON held.e < 0 AND answers.g = held.g AND answers.k = held.k
    )
    SELECT coalesce(array_agg(g ORDER BY e < 0, abs(e)), '{}'), coalesce(array_agg(e ORDER BY e < 0, abs(e)), '{}'),
           coalesce(array_agg(abs(e) ORDER BY e < 0, abs(e)), '{}'), count(*) FILTER (WHERE e > 0)
      INTO v_grants, v_expiries, v_ends, v_answered
      FROM settled
     WHERE abs(e) > v_now;
    v_count := coalesce(array_length(v_grants, 1), 0);

    IF p_observed_used > v_count THEN
        -- Someone else spends from the portal: the difference, as answered requests spread over the interval.
        v_missing := least(p_observed_used, 2 * p_limit + 10) - v_count;
        SELECT coalesce(array_agg(g ORDER BY e < 0, abs(e)), '{}'), coalesce(array_agg(e ORDER BY e < 0, abs(e)), '{}'),
               coalesce(array_agg(abs(e) ORDER BY e < 0, abs(e)), '{}')
          INTO v_grants, v_expiries, v_ends
          FROM (SELECT g, e FROM unnest(v_grants, v_expiries) AS t(g, e)
                UNION ALL
                SELECT m, m + p_interval_ms
                  FROM (SELECT v_now - p_interval_ms + (i * p_interval_ms) / (v_missing + 1) AS m
                          FROM generate_series(1, v_missing) AS i) AS spread) AS merged;
        v_count := v_count + v_missing;
        v_answered := v_answered + v_missing;
    END IF;

    IF p_block_ms > 0 THEN
        v_blocked := greatest(v_blocked, v_now + p_block_ms);
    END IF;

    v_need := v_count + p_cost - p_limit;
    IF p_cost <= 0 THEN
        wait_ms := 0;
    ELSIF v_blocked > v_now THEN
        wait_ms := v_blocked - v_now;
    ELSIF v_need <= 0 THEN
        v_grants := v_grants || array_fill(v_now, ARRAY[p_cost]);
        v_expiries := v_expiries || array_fill(-(v_now + p_hold_ms), ARRAY[p_cost]);
        wait_ms := 0;
        granted_at_ms := v_now;
    ELSIF v_need <= v_answered AND p_reserve THEN
        -- Room once that many answered requests have left HubSpot's window: the slot is this caller's then.
        granted_at_ms := v_ends[v_need];
        v_grants := v_grants || array_fill(granted_at_ms, ARRAY[p_cost]);
        v_expiries := v_expiries || array_fill(-(granted_at_ms + p_hold_ms), ARRAY[p_cost]);
        wait_ms := granted_at_ms - v_now;
    ELSIF v_need <= v_answered THEN
        -- Room once that many answered requests have left HubSpot's window.
        wait_ms := greatest(1, v_ends[v_need] - v_now);
    ELSE
        -- Requests in flight must be answered first: look again soon.
        wait_ms := greatest(1, least(p_interval_ms / 50, v_ends[v_need] - v_now));
    END IF;

    UPDATE hubspot_rate_budget
       SET grants = v_grants, expiries = v_expiries, blocked_until_ms = v_blocked, updated_at = now()
     WHERE portal = p_portal;
END;
$$;

CREATE OR REPLACE FUNCTION hubspot_rate_grant(
    p_portal text,
    p_cost integer,
    p_limit integer,
    p_interval_ms bigint,
    p_hold_ms bigint,
    p_answered_at bigint[],
    p_answered_until bigint[],
    p_observed_used integer DEFAULT -1,
    p_block_ms bigint DEFAULT 0,
    OUT wait_ms bigint,
    OUT granted_at_ms bigint
)
LANGUAGE sql AS $$
    SELECT r.wait_ms, r.granted_at_ms FROM hubspot_rate_reserve(p_portal, p_cost, p_limit, p_interval_ms, p_hold_ms,
        p_answered_at, p_answered_until, p_observed_used, p_block_ms, false) AS r;
$$;
