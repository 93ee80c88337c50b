-- Each grant of the shared HubSpot rate budget counts for the window its own
-- process asked for (libs/hubspot/rate_budget.py, PostgresRateBudget).
--
-- A process pads HubSpot's interval with the delay it sees from a grant to its
-- request's arrival (its own requests' going out and answers). Until now every
-- call pruned the portal's grants with the caller's window alone: a pod whose
-- requests answered fast dropped the grants of a pod whose requests were slow,
-- while HubSpot still counted them, and the portal went over its limit (two
-- 429s in the first window of a two-pusher benchmark, 2026-12-07). Now each
-- grant keeps the end of its granter's window beside it (``expiries``, same
-- order as ``grants``), and counts while either window holds it: the
-- caller's, from the grant's time, or the granter's.
ALTER TABLE hubspot_rate_budget ADD COLUMN IF NOT EXISTS expiries bigint[] NOT NULL DEFAULT '{}';

CREATE OR REPLACE FUNCTION hubspot_rate_acquire(
    p_portal text,
    p_cost integer,
    p_limit integer,
    p_window_ms bigint,
    p_observed_used integer DEFAULT -1,
    p_block_ms bigint DEFAULT 0
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_now      bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_grants   bigint[];
    v_expiries bigint[];
    v_ends     bigint[];
    v_blocked  bigint;
    v_count    integer;
    v_missing  integer;
    v_wait     bigint;
BEGIN
    INSERT INTO hubspot_rate_budget (portal) VALUES (p_portal) ON CONFLICT (portal) DO NOTHING;
    SELECT grants, expiries, blocked_until_ms INTO v_grants, v_expiries, v_blocked
      FROM hubspot_rate_budget WHERE portal = p_portal FOR UPDATE;

    -- A grant counts until the later of its two window ends (a grant stored before this migration has no
    -- expiry: greatest() skips the NULL that unnest pads with). Ordered by when each stops counting; each
    -- keeps its granter's window end, not the caller's.
    SELECT coalesce(array_agg(g ORDER BY x), '{}'), coalesce(array_agg(coalesce(e, x) ORDER BY x), '{}'),
           coalesce(array_agg(x ORDER BY x), '{}')
      INTO v_grants, v_expiries, v_ends
      FROM (SELECT g, e, greatest(g + p_window_ms, e) AS x FROM unnest(v_grants, v_expiries) AS t(g, e)) AS c
     WHERE x > v_now;
    v_count := coalesce(array_length(v_grants, 1), 0);

    IF p_observed_used > v_count THEN
        -- Someone else spends from the portal: the difference, as grants spread over the caller's window.
        v_missing := least(p_observed_used, 2 * p_limit + 10) - v_count;
        SELECT coalesce(array_agg(g ORDER BY x), '{}'), coalesce(array_agg(e ORDER BY x), '{}'),
               coalesce(array_agg(x ORDER BY x), '{}')
          INTO v_grants, v_expiries, v_ends
          FROM (SELECT g, e, x FROM unnest(v_grants, v_expiries, v_ends) AS t(g, e, x)
                UNION ALL
                SELECT m, m + p_window_ms, m + p_window_ms
                  FROM (SELECT v_now - p_window_ms + (i * p_window_ms) / (v_missing + 1) AS m
                          FROM generate_series(1, v_missing) AS i) AS spread) AS merged;
        v_count := v_count + v_missing;
    END IF;

    IF p_block_ms > 0 THEN
        v_blocked := greatest(v_blocked, v_now + p_block_ms);
    END IF;

    IF v_blocked > v_now THEN
        v_wait := v_blocked - v_now;
    ELSIF v_count + p_cost <= p_limit THEN
        v_grants := v_grants || array_fill(v_now, ARRAY[p_cost]);
        v_expiries := v_expiries || array_fill(v_now + p_window_ms, ARRAY[p_cost]);
        v_wait := 0;
    ELSE
        -- Room for p_cost once that many have stopped counting.
        v_wait := greatest(1, v_ends[v_count + p_cost - p_limit] - v_now);
    END IF;

    UPDATE hubspot_rate_budget
       SET grants = v_grants, expiries = v_expiries, blocked_until_ms = v_blocked, updated_at = now()
     WHERE portal = p_portal;
    RETURN v_wait;
END;
$$;
