-- The HubSpot rate budget shared by every process that calls one portal
-- (libs/hubspot/rate_budget.py, PostgresRateBudget).
--
-- One row per portal holds the epoch-ms grant times (database clock, so pods
-- with skewed clocks agree) still inside the sliding window, and a back-off
-- deadline set after a 429. hubspot_rate_acquire() prunes, corrects, grants
-- or says how long to wait, all under the row lock, in one round trip.
CREATE TABLE IF NOT EXISTS hubspot_rate_budget (
    portal           text        PRIMARY KEY,
    grants           bigint[]    NOT NULL DEFAULT '{}',
    blocked_until_ms bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Returns 0 when p_cost requests were granted, otherwise the milliseconds to
-- wait before asking again (nothing is granted then).
--   p_limit          requests allowed per window (HubSpot's max minus our safety margin)
--   p_window_ms      HubSpot's interval plus a little padding for request latency
--   p_observed_used  requests HubSpot says are spent in its window (max - remaining), or -1;
--                    when that exceeds our grants, someone else spends from the portal: the
--                    difference is recorded as grants spread evenly over the window
--   p_block_ms       after a 429: let nobody spend for this long
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
    v_now     bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    v_grants  bigint[];
    v_blocked bigint;
    v_count   integer;
    v_missing integer;
    v_wait    bigint;
BEGIN
    INSERT INTO hubspot_rate_budget (portal) VALUES (p_portal) ON CONFLICT (portal) DO NOTHING;
    SELECT grants, blocked_until_ms INTO v_grants, v_blocked
      FROM hubspot_rate_budget WHERE portal = p_portal FOR UPDATE;

    SELECT coalesce(array_agg(g ORDER BY g), '{}') INTO v_grants
      FROM unnest(v_grants) AS g WHERE g > v_now - p_window_ms;
    v_count := coalesce(array_length(v_grants, 1), 0);

    IF p_observed_used > v_count THEN
        v_missing := least(p_observed_used, 2 * p_limit + 10) - v_count;
        SELECT coalesce(array_agg(g ORDER BY g), '{}') INTO v_grants
          FROM (SELECT unnest(v_grants) AS g
                UNION ALL
                SELECT v_now - p_window_ms + (i * p_window_ms) / (v_missing + 1)
                  FROM generate_series(1, v_missing) AS i) AS merged;
        v_count := v_count + v_missing;
    END IF;

    IF p_block_ms > 0 THEN
        v_blocked := greatest(v_blocked, v_now + p_block_ms);
    END IF;

    IF v_blocked > v_now THEN
        v_wait := v_blocked - v_now;
    ELSIF v_count + p_cost <= p_limit THEN
        v_grants := v_grants || array_fill(v_now, ARRAY[p_cost]);
        v_wait := 0;
    ELSE
        v_wait := greatest(1, v_grants[v_count + p_cost - p_limit] + p_window_ms - v_now);
    END IF;

    UPDATE hubspot_rate_budget
       SET grants = v_grants, blocked_until_ms = v_blocked, updated_at = now()
     WHERE portal = p_portal;
    RETURN v_wait;
END;
$$;
