-- regime-pg: regime prototypes, version 5: the dispersion is summed
-- exactly, so its bits no longer depend on the plan.
--
-- Replaces regime_window_distances and regime_prototype_compute of
-- prototypes--3.sql (same signatures, flags and comments; CREATE OR REPLACE,
-- so their privileges stay).  Every other function of versions 1 to 4 stays
-- as it was.
--
-- Why (finding F19 in docs/hardening.md): version 3 summed the window's
-- distances to the centre in float8, in the order the scan returned the
-- rows, and float8 addition is not associative: an index scan, a sequential
-- scan and parallel workers (each a partial sum, combined in arrival order)
-- gave dispersions differing in their last bits, so a set saved earlier and
-- the same windows computed now could differ in the dispersion's last digits.
-- The buckets with a duplicate date added two more such sums.
--
-- How: each distance d (float8, from pgvector's float32 squared distance)
-- becomes an integer number of units of 2^-32, q = round(d * 2^32)::bigint
-- (the scaling by a power of two is exact; one unit is far below the
-- float32 precision of d), and the units are summed with sum(bigint), which
-- PostgreSQL adds exactly (in an int128 or numeric state, partial states
-- combined exactly by parallel workers): the same integer whatever the order
-- of the rows.  That sum is rounded once to float8 and divided by 2^32
-- (exact).  Distances of 2^31 or more (whose units would not fit a bigint)
-- and NaN go to a float8 sum(d) beside it, as in version 3 (NaN compares
-- greater than every number, so NOT d < 2^31 takes it; a row without a
-- vector has d NULL and falls in neither sum).  The buckets with a duplicate
-- date trade their rows for the latest ones in the same units: the latest
-- rows' units minus all their rows' units, an exact numeric, rounded once
-- and added to the window's sum.  regime_window_distances still returns one
-- double precision through RETURN QUERY, so long windows keep their
-- parallel workers (a Gather over partial aggregates).
--
-- Same centres as version 3, bit for bit: the centroid's statements and
-- their order are version 3's (and version 4's regime_window_bucket_states).
-- n_dates, n_skipped, first_date, last_date and l2_norm are unchanged too.
--
-- Accuracy: rounding to the nearest unit errs by at most 2^-33 a distance;
-- the units of the rows traded away cancel exactly, so the exact sum of the
-- deduplicated rows' units differs from the sum of their distances by at
-- most n * 2^-33 (n: the window's usable dates), and the dispersion, that
-- sum over n, by at most 2^-33 (1.2e-10) absolute, plus three float8
-- roundings (the two conversions, the division by n: a few 1e-16 relative).
-- Version 3's float8 sum of n non-negative terms errs by at most
-- (n - 1) * 2^-53 relative (1.1e-11 for n = 100,000).  So dispersions
-- differ from version 3's by at most 2^-33 + n * 2^-53 * dispersion, below
-- 1e-9 relative for a dispersion above 0.12 (a typical one, 384 dimensions
-- of unit-scale spread, is about 20 to 60: 1e-11 relative).  Windows with a
-- distance of 2^31 or more, or NaN, behave as in version 3.
--
-- Runs with search_path set by the migration; every function pins it.

-- The sum of the L2 distances from every row of the window to p_center
-- (rows of dates with several rows included: the caller trades them),
-- summed exactly in units of 2^-32 and rounded once to float8.  One row;
-- RETURN QUERY, as in version 3, so a long window's scan gets parallel
-- workers, each a partial sum of bigint units, combined exactly.  The
-- distance is written out in each aggregate and FILTER (PostgreSQL then
-- computes it up to three times a row): a subquery computing it once
-- (OFFSET 0) would keep the aggregate above the Gather, so the workers
-- would send every row's distance to the leader instead of a partial sum,
-- and a LATERAL unnest of it costs more than the repeated distances.
CREATE OR REPLACE FUNCTION regime_window_distances(p_region text, p_start date, p_end date,
                                                   p_center vector)
RETURNS SETOF double precision
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT coalesce((sum(round((r.embedding_vector <-> p_center)
                                   * 4294967296::double precision)::bigint)
                             FILTER (WHERE (r.embedding_vector <-> p_center)
                                           < 2147483648::double precision))
                        ::double precision / 4294967296::double precision, 0)
               + coalesce(sum(r.embedding_vector <-> p_center)
                              FILTER (WHERE NOT (r.embedding_vector <-> p_center)
                                                < 2147483648::double precision), 0)
          FROM regimes AS r
         WHERE r.region = p_region
           AND r.as_of_date BETWEEN p_start AND p_end;
END
$$;

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
    latest      record;
    everything  record;
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

    -- Dispersion: over every row of the window (its exact sum, rounded once
    -- by regime_window_distances); the buckets with a duplicate date then
    -- trade their rows for the latest ones, in exact units: the latest rows'
    -- units minus all their rows' units, in numeric, rounded once.  Distances
    -- of 2^31 or more and NaN keep version 3's float8 sums.
    distances := (SELECT d FROM regime_window_distances(p_region, p_start, p_end,
                                                         result.center) AS d);
    IF dirty IS NOT NULL THEN
        SELECT sum(round(e.d * 4294967296::double precision)::bigint)
                   FILTER (WHERE e.d < 2147483648::double precision) AS units,
               sum(e.d) FILTER (WHERE NOT e.d < 2147483648::double precision) AS other
          INTO latest
          FROM unnest(dirty) AS k(bucket),
               LATERAL (SELECT l.embedding_vector <-> result.center AS d
                          FROM regime_embeddings_latest AS l
                         WHERE l.region = p_region
                           AND l.as_of_date
                               BETWEEN p_start + bucket_days * k.bucket
                                   AND p_start + least(p_end - p_start,
                                                       bucket_days * k.bucket
                                                       + bucket_days - 1)
                        OFFSET 0) AS e;
        SELECT sum(round(e.d * 4294967296::double precision)::bigint)
                   FILTER (WHERE e.d < 2147483648::double precision) AS units,
               sum(e.d) FILTER (WHERE NOT e.d < 2147483648::double precision) AS other
          INTO everything
          FROM unnest(dirty) AS k(bucket),
               LATERAL (SELECT r.embedding_vector <-> result.center AS d
                          FROM regimes AS r
                         WHERE r.region = p_region
                           AND r.as_of_date
                               BETWEEN p_start + bucket_days * k.bucket
                                   AND p_start + least(p_end - p_start,
                                                       bucket_days * k.bucket
                                                       + bucket_days - 1)
                        OFFSET 0) AS e;
        distances := distances
            + (coalesce(latest.units, 0) - coalesce(everything.units, 0))::double precision
              / 4294967296::double precision
            + (coalesce(latest.other, 0) - coalesce(everything.other, 0));
    END IF;
    result.dispersion := distances / n_usable;
    RETURN result;
END
$$;
