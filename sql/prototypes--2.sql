-- regime-pg: regime prototypes, version 2: a faster centroid, as accurate.
--
-- Replaces regime_prototype_for_window of prototypes--1.sql and adds the
-- three functions it now calls.  compute_regime_prototype,
-- compute_regime_prototypes and regime_prototypes_json call it: their
-- signatures, result columns, rules (latest created_at wins, unusable dates
-- skipped and counted) and errors stay those of prototypes--1.sql.
--
-- Why: pgvector's avg(vector) accumulates in float8, accurately, but costs
-- about 2 us per row (it builds a new float8 array for every row);
-- sum(vector) costs a quarter of that but accumulates in float32, whose
-- error grows with the number of rows.
--
-- How: two-level summation.
--   * Level 1: sum(vector), in float32, over each bucket of 15 consecutive
--     days of the window (at most 15 rows once dates are distinct), in date
--     order.
--   * Level 2: avg(vector), in float8, over the bucket sums, rounded once to
--     float32; then, in float8, times the number of bucket sums and divided
--     by the number of dates, rounded once more to float32.
--   A float32 sum of k <= 15 values errs by at most (k - 1) * u * sum |x_ij|
--   (u = 2^-24, any order of addition); rounding the mean of bucket sums
--   adds at most u * mean_i |x_ij|, the last rounding u * |c_j|, and the
--   float8 additions next to nothing, so for every coordinate j, whatever
--   the size of the window:
--       |c_j - mean_j| <= 16 * u * mean_i |x_ij| < 0.954e-6 * mean_i |x_ij|.
--   Only pgvector's public API is used: sum and avg of vector, the casts.
--
-- Same bits whatever the plan: every sum runs in a fixed order (rows by
-- date within a bucket, buckets in order, parts in order), so a sequential
-- scan, an index scan or parallel workers give the same centre, bit for bit.
--
-- Duplicates: a bucket in which no date has two rows needs no
-- deduplication.  Each bucket counts its rows and its distinct dates (a bit
-- mask of the days seen); a bucket where they differ is summed again from
-- regime_embeddings_latest, so the latest created_at still wins.
--
-- Plans: each bucket is one index range scan, so memory stays constant
-- whatever the window.  A window of 4096 days or more is cut into 8 parts
-- of consecutive buckets, one function call each, in one UNION ALL: parallel
-- workers take parts (Parallel Append), the leader adds the 8 results.  Such
-- windows are planned for their actual bounds at every call
-- (regime_prototype_compute_custom_plans), so the dispersion's scan, too,
-- gets parallel workers when the window is large.
--
-- Runs with search_path set by the migration; every function pins it.

-- Buckets p_first..p_last (of 15 days from p_start, up to p_end) of a
-- region: the level-2 mean of the sums of the buckets without a duplicate
-- date (n_sums of them), their counts and dates, and the buckets with a
-- duplicate date.  COST tells the planner a call is worth a parallel worker.
CREATE FUNCTION regime_window_bucket_sums(p_region text, p_start date, p_end date,
                                          p_first integer, p_last integer,
                                          OUT n_usable bigint, OUT n_skipped bigint,
                                          OUT mean vector, OUT n_sums bigint,
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
           avg(b.partial) FILTER (WHERE b.clean),
           count(b.partial) FILTER (WHERE b.clean),
           min(b.first_date) FILTER (WHERE b.clean),
           max(b.last_date) FILTER (WHERE b.clean),
           array_agg(k.bucket) FILTER (WHERE NOT b.clean)
      INTO n_usable, n_skipped, mean, n_sums, first_date, last_date, dirty
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

COMMENT ON FUNCTION regime_window_bucket_sums(text, date, date, integer, integer) IS
    'regime-pg: two-level sums over a range of 15-day buckets of a window';

-- The prototype of one window whose region and bounds are checked.
CREATE FUNCTION regime_prototype_compute(p_region text, p_label text,
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
    means       vector[];
    counts      bigint[];
    dirty       integer[];
    bounds      integer[];
    fix         record;
    distances   double precision;
BEGIN
    -- Level 1 and level 2 over the buckets without a duplicate date.
    IF p_end - p_start < 4096 THEN
        SELECT s.n_usable, s.n_skipped, ARRAY[s.mean], ARRAY[s.n_sums],
               s.first_date, s.last_date, s.dirty
          INTO n_usable, n_skipped, means, counts, result.first_date, result.last_date, dirty
          FROM regime_window_bucket_sums(p_region, p_start, p_end,
                                         0, (p_end - p_start) / bucket_days) AS s;
    ELSE
        bounds := ARRAY(SELECT i * ((p_end - p_start) / bucket_days + 1) / parts
                          FROM generate_series(0, parts) AS i);
        SELECT sum(s.n_usable), sum(s.n_skipped),
               array_agg(s.mean ORDER BY s.part), array_agg(s.n_sums ORDER BY s.part),
               min(s.first_date), max(s.last_date),
               string_to_array(string_agg(array_to_string(s.dirty, ','), ','
                                          ORDER BY s.part), ',')::integer[]
          INTO n_usable, n_skipped, means, counts, result.first_date, result.last_date, dirty
          FROM (SELECT 1 AS part, s1.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[1], bounds[2] - 1) AS s1
                UNION ALL
                SELECT 2, s2.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[2], bounds[3] - 1) AS s2
                UNION ALL
                SELECT 3, s3.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[3], bounds[4] - 1) AS s3
                UNION ALL
                SELECT 4, s4.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[4], bounds[5] - 1) AS s4
                UNION ALL
                SELECT 5, s5.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[5], bounds[6] - 1) AS s5
                UNION ALL
                SELECT 6, s6.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[6], bounds[7] - 1) AS s6
                UNION ALL
                SELECT 7, s7.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[7], bounds[8] - 1) AS s7
                UNION ALL
                SELECT 8, s8.* FROM regime_window_bucket_sums(
                    p_region, p_start, p_end, bounds[8], bounds[9] - 1) AS s8) AS s;
    END IF;

    -- Buckets with a duplicate date: the same sums over the latest rows.
    -- OFFSET 0 keeps each bucket's bounds inside the view's DISTINCT ON, as
    -- index conditions, instead of deduplicating the whole region first.
    IF dirty IS NOT NULL THEN
        SELECT coalesce(sum(d.n_usable), 0) AS n_usable,
               coalesce(sum(d.n_dates - d.n_usable), 0) AS n_skipped,
               avg(d.partial ORDER BY d.bucket) AS mean,
               count(d.partial) AS n_sums,
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
        means := means || fix.mean;
        counts := counts || fix.n_sums;
        result.first_date := least(result.first_date, fix.first_date);
        result.last_date := greatest(result.last_date, fix.last_date);
    END IF;

    result.region := p_region;
    result.start_date := p_start;
    result.end_date := p_end;
    result.n_dates := n_usable;
    result.n_skipped := n_skipped;
    IF n_usable = 0 THEN
        RAISE EXCEPTION 'no usable embedding for % in window %..% (% dates skipped)',
                regime_window_name(p_region, p_label), p_start, p_end, n_skipped
            USING ERRCODE = 'no_data_found', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;

    -- Each part's mean of bucket sums times its number of sums is the sum
    -- over its dates (exact in float8): add the parts in order, divide by the
    -- number of dates, round once.
    IF array_length(means, 1) <= 2 THEN
        result.center := ARRAY(
            SELECT (coalesce(u.a::double precision * counts[1], 0)
                    + coalesce(u.b::double precision * counts[2], 0)) / n_usable
              FROM unnest(means[1]::real[], means[2]::real[]) WITH ORDINALITY AS u(a, b, j)
             ORDER BY u.j)::vector;
    ELSE
        result.center := ARRAY(
            SELECT sum(e.v::double precision * w.n ORDER BY w.part) / n_usable
              FROM unnest(means, counts) WITH ORDINALITY AS w(mean, n, part),
                   unnest(w.mean::real[]) WITH ORDINALITY AS e(v, j)
             GROUP BY e.j
             ORDER BY e.j)::vector;
    END IF;
    result.l2_norm := vector_norm(result.center);

    -- Dispersion: over every row of the window; the buckets with a
    -- duplicate date then trade their rows for the latest ones.
    SELECT coalesce(sum(r.embedding_vector <-> result.center), 0)
      INTO distances
      FROM regimes AS r
     WHERE r.region = p_region
       AND r.as_of_date BETWEEN p_start AND p_end;
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

COMMENT ON FUNCTION regime_prototype_compute(text, text, date, date) IS
    'regime-pg: prototype of a checked window: two-level centroid, then dispersion';

-- The same, for windows of 4096 days or more: planned for the actual bounds
-- at every call, so that a plan cached for a short window never runs a long
-- one without parallel workers.
CREATE FUNCTION regime_prototype_compute_custom_plans(p_region text, p_label text,
                                                      p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan
RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);

COMMENT ON FUNCTION regime_prototype_compute_custom_plans(text, text, date, date) IS
    'regime-pg: regime_prototype_compute planned for the actual window (long windows)';

-- The prototype of one window.  p_label only names the window in messages.
CREATE OR REPLACE FUNCTION regime_prototype_for_window(p_region text, p_label text,
                                                       p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM regime_check_region(p_region);
    PERFORM regime_check_window(p_region, p_label, p_start, p_end);
    IF p_end - p_start >= 4096 THEN
        RETURN regime_prototype_compute_custom_plans(p_region, p_label, p_start, p_end);
    END IF;
    RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);
END
$$;
