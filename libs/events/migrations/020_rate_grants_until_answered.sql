-- A grant of the shared HubSpot rate budget counts until its request's answer
-- plus HubSpot's interval (libs/hubspot/rate_budget.py, PostgresRateBudget),
-- as the in-process budget counts.
--
-- Until now a grant counted for a window fixed when it was granted: the
-- interval plus a padding guessed from the granter's recent requests (their
-- median answer, their slowest to go out). HubSpot counts a request when it
-- arrives, and a request slower than the guess (a burst on new connections,
-- a pod whose event loop is busy) arrived after its window had been given to
-- another pod: two 429s in a CI run with two pods, 2026-12-07. Now a grant
-- counts while its request is unanswered (for at most p_hold_ms, in case its
-- process died), and from its answer for the interval. Processes report their
-- answers with their next call (p_answered_at, p_answered_until).
--
-- Storage: ``expiries`` beside ``grants`` (migration 019), one per grant. A
-- positive expiry is when an answered grant stops counting; a negative one
-- marks a grant still in flight, counting until at most its absolute value.
-- hubspot_rate_acquire() (migrations 006, 019) stays for processes of the
-- version before; it reads an in-flight grant as ending at its own window.
CREATE OR REPLACE FUNCTION hubspot_rate_grant(
    p_portal text,
    p_cost integer,            -- requests to grant; 0 only reports answers
    p_limit integer,           -- requests counted at most at once (HubSpot's max minus a safety margin)
    p_interval_ms bigint,      -- HubSpot's interval: how long a request counts after its answer
    p_hold_ms bigint,          -- how long an unanswered grant counts at most
    p_answered_at bigint[],    -- the grant times (granted_at_ms) of requests answered since the last call ...
    p_answered_until bigint[], -- ... and until when each counts: its answer (database clock) plus the interval
    p_observed_used integer DEFAULT -1,  -- HubSpot's count of spent requests (max - remaining), or -1
    p_block_ms bigint DEFAULT 0,         -- after a 429: let nobody spend for this long
    OUT wait_ms bigint,        -- 0: granted; otherwise how long to wait before asking again (nothing granted)
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
