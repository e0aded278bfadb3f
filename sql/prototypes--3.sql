-- regime-pg: regime prototypes, version 3: the same centroid with less
-- work per window, and one rounding instead of two.
--
-- Replaces regime_prototype_compute and regime_prototype_for_window of
-- prototypes--2.sql and compute_regime_prototype of prototypes--1.sql (same
-- signatures, results and errors), and regime_window_bucket_sums by
-- regime_window_bucket_states; adds regime_window_parts and
-- regime_window_distances, the statements of long windows.
-- compute_regime_prototypes and regime_prototypes_json call them unchanged.
--
-- What changed, and why (measured on a one-year window, about 0.34 ms a
-- call before):
--   * Level 2 keeps float8 sums to the end.  Version 2 averaged the bucket
--     sums with avg(vector), rounded that mean to float32, then scaled it by
--     n_sums / n_dates through 384 rows of unnest (about 12% of a call).
--     Now regime_vector_sum_state, pgvector's avg(vector) without its final
--     division, keeps {n, sum_1, ..., sum_dim} in float8; the parts' states
--     add up with regime_vector_state_sum (pgvector's combine function), and
--     vector_avg() of the state with its count replaced by the number of
--     dates gives the centre: sum / n_dates, rounded once to float32.
--   * Short windows (under 4096 days) run generic plans: version 2 re-planned
--     the bucket statement at every call (custom plans won on cost; about
--     15% of a call).  Long windows still plan for their actual bounds.
--   * The region probe runs only on the way to an error: a window with rows
--     proves its region exists.  Errors and their order are unchanged.
--   * compute_regime_prototype is PL/pgSQL, so its call is a cached simple
--     expression instead of a SQL function set up again by every statement.
--   * Long windows now really get parallel workers.  Version 2 ran the
--     8-part UNION ALL and the dispersion's scan as SELECT ... INTO, which
--     PL/pgSQL runs with a row limit, and PostgreSQL starts no parallel
--     worker for such a query (the plans showed workers only when the
--     statements were run on their own).  They are now the RETURN QUERY of
--     regime_window_parts and regime_window_distances, which run to the end.
--
-- Accuracy: a float32 sum of k <= 15 values errs by at most
-- (k - 1) * u * sum |x_ij| (u = 2^-24), the float8 additions next to
-- nothing, and the single rounding at most u * |c_j|, so for every
-- coordinate j, whatever the size of the window:
--     |c_j - mean_j| <= 15 * u * mean_i |x_ij| < 0.9e-6 * mean_i |x_ij|.
-- Centres may differ from version 2's in the last bit (one rounding less).
--
-- Same bits whatever the plan, as in version 2: rows by date within a
-- bucket, buckets in order, parts in order.  Only pgvector's SQL API is
-- used: sum(vector) and vector_accum, vector_combine, vector_avg (the
-- functions of its avg(vector)).
--
-- Runs with search_path set by the migration; every function pins it.

-- pgvector's avg(vector) without its final division: {n, sum_1, ...,
-- sum_dim} in float8.  vector_avg() of the state divides by its first
-- element and rounds to float32.
CREATE AGGREGATE regime_vector_sum_state(vector) (
    SFUNC = vector_accum,
    STYPE = double precision[],
    COMBINEFUNC = vector_combine,
    INITCOND = '{0}',
    PARALLEL = SAFE
);

COMMENT ON AGGREGATE regime_vector_sum_state(vector) IS
    'regime-pg: float8 {count, sums} of vectors (pgvector''s avg state, not divided)';

-- The sum of such states, in float8.
CREATE AGGREGATE regime_vector_state_sum(double precision[]) (
    SFUNC = vector_combine,
    STYPE = double precision[],
    COMBINEFUNC = vector_combine,
    INITCOND = '{0}',
    PARALLEL = SAFE
);

COMMENT ON AGGREGATE regime_vector_state_sum(double precision[]) IS
    'regime-pg: sum of regime_vector_sum_state states, in float8';

-- Buckets p_first..p_last (of 15 days from p_start, up to p_end) of a
-- region: the float8 state of the sums of the buckets without a duplicate
-- date, their counts and dates, and the buckets with a duplicate date.
-- COST tells the planner a call is worth a parallel worker.
CREATE FUNCTION regime_window_bucket_states(p_region text, p_start date, p_end date,
                                            p_first integer, p_last integer,
                                            OUT n_usable bigint, OUT n_skipped bigint,
                                            OUT state double precision[],
                                            OUT first_date date, OUT last_date date,
                                            OUT dirty integer[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
COST 1000000
SET search_path FROM CURRENT
AS $$
DECLARE
    bucket_days constant integer := 15;
BEGIN
    SELECT coalesce(sum(b.n_usable) FILTER (WHERE b.clean), 0),
           coalesce(sum(b.n_rows - b.n_usable) FILTER (WHERE b.clean), 0),
           regime_vector_sum_state(b.partial) FILTER (WHERE b.clean),
           min(b.first_date) FILTER (WHERE b.clean),
           max(b.last_date) FILTER (WHERE b.clean),
           array_agg(k.bucket) FILTER (WHERE NOT b.clean)
      INTO n_usable, n_skipped, state, first_date, last_date, dirty
      FROM generate_series(p_first, p_last) AS k(bucket),
           LATERAL (SELECT count(*) AS n_rows,
                           count(r.embedding_vector) AS n_usable,
                           sum(r.embedding_vector ORDER BY r.as_of_date) AS partial,
                           min(r.as_of_date) FILTER (WHERE r.embedding_vector IS NOT NULL)
                               AS first_date,
                           max(r.as_of_date) FILTER (WHERE r.embedding_vector IS NOT NULL)
                               AS last_date,
                           bit_count(bit_or(1 << ((r.as_of_date - p_start) % bucket_days))
                                     ::bit(32)) = count(*) AS clean
                      FROM regimes AS r
                     WHERE r.region = p_region
                       AND r.as_of_date
                           BETWEEN p_start + bucket_days * k.bucket
                               AND p_start + least(p_end - p_start,
                                                   bucket_days * k.bucket + bucket_days - 1))
                AS b;
END
$$;

COMMENT ON FUNCTION regime_window_bucket_states(text, date, date, integer, integer) IS
    'regime-pg: two-level sums (float8 state) over a range of 15-day buckets of a window';

-- The 8 parts of a long window's buckets (p_bounds: the 9 bucket bounds),
-- one regime_window_bucket_states call each, in one UNION ALL that parallel
-- workers share (Parallel Append), added in part order.  One row.
--
-- RETURN QUERY, because PL/pgSQL runs a SELECT ... INTO for at most one row,
-- and PostgreSQL does not start parallel workers for a query run with a row
-- limit; RETURN QUERY runs its query to the end, and may.
CREATE FUNCTION regime_window_parts(p_region text, p_start date, p_end date,
                                    p_bounds integer[])
RETURNS TABLE (n_usable bigint, n_skipped bigint, state double precision[],
               first_date date, last_date date, dirty integer[])
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT sum(s.n_usable)::bigint, sum(s.n_skipped)::bigint,
               regime_vector_state_sum(s.state ORDER BY s.part),
               min(s.first_date), max(s.last_date),
               string_to_array(string_agg(array_to_string(s.dirty, ','), ','
                                          ORDER BY s.part), ',')::integer[]
          FROM (SELECT 1 AS part, s1.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[1], p_bounds[2] - 1) AS s1
                UNION ALL
                SELECT 2, s2.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[2], p_bounds[3] - 1) AS s2
                UNION ALL
                SELECT 3, s3.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[3], p_bounds[4] - 1) AS s3
                UNION ALL
                SELECT 4, s4.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[4], p_bounds[5] - 1) AS s4
                UNION ALL
                SELECT 5, s5.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[5], p_bounds[6] - 1) AS s5
                UNION ALL
                SELECT 6, s6.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[6], p_bounds[7] - 1) AS s6
                UNION ALL
                SELECT 7, s7.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[7], p_bounds[8] - 1) AS s7
                UNION ALL
                SELECT 8, s8.* FROM regime_window_bucket_states(
                    p_region, p_start, p_end, p_bounds[8], p_bounds[9] - 1) AS s8) AS s;
END
$$;

COMMENT ON FUNCTION regime_window_parts(text, date, date, integer[]) IS
    'regime-pg: two-level sums of a long window, its 8 parts in parallel workers';

-- The sum of the L2 distances from every row of the window to p_center
-- (rows of dates with several rows included: the caller trades them).  One
-- row; RETURN QUERY for the same reason as regime_window_parts: a long
-- window's scan gets parallel workers.
CREATE FUNCTION regime_window_distances(p_region text, p_start date, p_end date,
                                        p_center vector)
RETURNS SETOF double precision
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT coalesce(sum(r.embedding_vector <-> p_center), 0)
          FROM regimes AS r
         WHERE r.region = p_region
           AND r.as_of_date BETWEEN p_start AND p_end;
END
$$;

COMMENT ON FUNCTION regime_window_distances(text, date, date, vector) IS
    'regime-pg: sum of the distances of a window''s rows to a centre';

-- The prototype of one window whose bounds are checked.
CREATE OR REPLACE FUNCTION regime_prototype_compute(p_region text, p_label text,
                                                    p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    bucket_days constant integer := 15;
    parts       constant integer := 8;
    result      regime_prototype;
    n_usable    bigint;
    n_skipped   bigint;
    state       double precision[];
    dirty       integer[];
    bounds      integer[];
    fix         record;
    distances   double precision;
BEGIN
    -- Level 1 and level 2 over the buckets without a duplicate date.
    IF p_end - p_start < 4096 THEN
        SELECT s.n_usable, s.n_skipped, s.state, s.first_date, s.last_date, s.dirty
          INTO n_usable, n_skipped, state, result.first_date, result.last_date, dirty
          FROM regime_window_bucket_states(p_region, p_start, p_end,
                                           0, (p_end - p_start) / bucket_days) AS s;
    ELSE
        bounds := ARRAY(SELECT i * ((p_end - p_start) / bucket_days + 1) / parts
                          FROM generate_series(0, parts) AS i);
        SELECT w.n_usable, w.n_skipped, w.state, w.first_date, w.last_date, w.dirty
          INTO n_usable, n_skipped, state, result.first_date, result.last_date, dirty
          FROM regime_window_parts(p_region, p_start, p_end, bounds) AS w;
    END IF;

    -- Buckets with a duplicate date: the same sums over the latest rows.
    -- OFFSET 0 keeps each bucket's bounds inside the view's DISTINCT ON, as
    -- index conditions, instead of deduplicating the whole region first.
    IF dirty IS NOT NULL THEN
        SELECT coalesce(sum(d.n_usable), 0) AS n_usable,
               coalesce(sum(d.n_dates - d.n_usable), 0) AS n_skipped,
               regime_vector_sum_state(d.partial ORDER BY d.bucket) AS state,
               min(d.first_date) AS first_date,
               max(d.last_date) AS last_date
          INTO fix
          FROM (SELECT k.bucket,
                       count(*) AS n_dates,
                       count(e.embedding_vector) AS n_usable,
                       sum(e.embedding_vector ORDER BY e.as_of_date) AS partial,
                       min(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL)
                           AS first_date,
                       max(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL)
                           AS last_date
                  FROM unnest(dirty) AS k(bucket),
                       LATERAL (SELECT l.as_of_date, l.embedding_vector
                                  FROM regime_embeddings_latest AS l
                                 WHERE l.region = p_region
                                   AND l.as_of_date
                                       BETWEEN p_start + bucket_days * k.bucket
                                           AND p_start + least(p_end - p_start,
                                                               bucket_days * k.bucket
                                                               + bucket_days - 1)
                                OFFSET 0) AS e
                 GROUP BY k.bucket) AS d;
        n_usable := n_usable + fix.n_usable;
        n_skipped := n_skipped + fix.n_skipped;
        state := vector_combine(coalesce(state, '{0}'), coalesce(fix.state, '{0}'));
        result.first_date := least(result.first_date, fix.first_date);
        result.last_date := greatest(result.last_date, fix.last_date);
    END IF;

    result.region := p_region;
    result.start_date := p_start;
    result.end_date := p_end;
    result.n_dates := n_usable;
    result.n_skipped := n_skipped;
    IF n_usable = 0 THEN
        PERFORM regime_check_region(p_region);
        RAISE EXCEPTION 'no usable embedding for % in window %..% (% dates skipped)',
                regime_window_name(p_region, p_label), p_start, p_end, n_skipped
            USING ERRCODE = 'no_data_found', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;

    -- The float8 sum over the window's dates, divided by their number and
    -- rounded once to float32.
    state[1] := n_usable;
    result.center := vector_avg(state);
    result.l2_norm := vector_norm(result.center);

    -- Dispersion: over every row of the window; the buckets with a
    -- duplicate date then trade their rows for the latest ones.
    distances := (SELECT d FROM regime_window_distances(p_region, p_start, p_end,
                                                         result.center) AS d);
    IF dirty IS NOT NULL THEN
        distances := distances
            + coalesce((SELECT sum(e.embedding_vector <-> result.center)
                          FROM unnest(dirty) AS k(bucket),
                               LATERAL (SELECT l.embedding_vector
                                          FROM regime_embeddings_latest AS l
                                         WHERE l.region = p_region
                                           AND l.as_of_date
                                               BETWEEN p_start + bucket_days * k.bucket
                                                   AND p_start + least(p_end - p_start,
                                                                       bucket_days * k.bucket
                                                                       + bucket_days - 1)
                                        OFFSET 0) AS e), 0)
            - coalesce((SELECT sum(r.embedding_vector <-> result.center)
                          FROM unnest(dirty) AS k(bucket)
                          JOIN regimes AS r
                            ON r.region = p_region
                           AND r.as_of_date
                               BETWEEN p_start + bucket_days * k.bucket
                                   AND p_start + least(p_end - p_start,
                                                       bucket_days * k.bucket
                                                       + bucket_days - 1)), 0);
    END IF;
    result.dispersion := distances / n_usable;
    RETURN result;
END
$$;

DROP FUNCTION regime_window_bucket_sums(text, date, date, integer, integer);

-- The prototype of one window.  p_label only names the window in messages.
-- Short windows run generic plans (planned once a session); long ones go
-- through regime_prototype_compute_custom_plans.
CREATE OR REPLACE FUNCTION regime_prototype_for_window(p_region text, p_label text,
                                                       p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    IF p_region IS NULL OR length(p_region) > 32
       OR p_start IS NULL OR p_end IS NULL
       OR NOT (isfinite(p_start) AND isfinite(p_end)) OR p_end < p_start THEN
        -- The errors in their order: the region's first, then the window's.
        PERFORM regime_check_region(p_region);
        PERFORM regime_check_window(p_region, p_label, p_start, p_end);
    END IF;
    IF p_end - p_start >= 4096 THEN
        RETURN regime_prototype_compute_custom_plans(p_region, p_label, p_start, p_end);
    END IF;
    RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);
END
$$;

-- The prototype of region over [start_date, end_date].
CREATE OR REPLACE FUNCTION compute_regime_prototype(region text, start_date date, end_date date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN regime_prototype_for_window(region, NULL, start_date, end_date);
END
$$;
