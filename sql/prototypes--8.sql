-- regime-pg: regime prototypes, version 8: the dispersion's scan computes
-- each row's distance once.
--
-- Replaces regime_window_distances of prototypes--5.sql (same signature,
-- flags and comment; CREATE OR REPLACE, so its privileges stay).  Every
-- other function stays that of its latest version.
--
-- Why: version 5 writes the distance out three times a row, in each
-- aggregate and FILTER that keeps distances of 2^31 or more apart from the
-- exact sum of units, and PostgreSQL computes it each time.  Such distances
-- need embeddings of magnitude about 1e8 (no encoder writes them), yet every
-- window paid for them: about 10% of the dispersion's scan on a 1,000,000-row
-- window, and 0.01 ms (3%) of a one-year window's call (measured on the
-- benchmark's tables, PostgreSQL 18 on a shared 2-core machine).
--
-- How: the scan of version 8 computes the distance once a row, caps it at
-- 2^31 - 1 (so that its units fit a bigint) and sums the units of 2^-32
-- exactly, as the stored bucket sums' scan already does
-- (regime_window_distances_counted of bucket_sums--1.sql).  It reads only
-- the rows with a vector: least() ignores a NULL, so a row without one would
-- count as a capped distance (as it did in that scan until bucket_sums--2.sql,
-- which then had the window summed again).  While that sum
-- is below (2^31 - 1) * 2^32 no distance was capped, every distance is below
-- 2^31, and the sum is exactly version 5's sum of units (same rounding of
-- each distance, an exact sum), so the result, that sum rounded once to
-- float8 and divided by 2^32, has version 5's bits.  A window whose
-- distances add up to 2^31 - 1 or more (about 2.1e9: a distance near 2^31,
-- or some 36 million rows at the typical distance of 60) is summed again by
-- version 5's statement, a scalar subquery PostgreSQL runs only when the
-- CASE reaches it: the same result as version 5, for one more scan.  (Under
-- debug_parallel_query, a developer setting that puts a Gather on top of
-- the whole statement, the subquery runs before the worker starts, on every
-- window: the same result, one more scan.)
-- Still one statement through RETURN QUERY, so a long window's scan keeps
-- its parallel workers (a Gather over partial sums of units, combined
-- exactly).
--
-- Runs with search_path set by the migration; every function pins it.

-- The sum of the L2 distances from every row of the window to p_center
-- (rows of dates with several rows included: the caller trades them),
-- summed exactly in units of 2^-32 and rounded once to float8.  One row.
CREATE OR REPLACE FUNCTION regime_window_distances(p_region text, p_start date, p_end date,
                                                   p_center vector)
RETURNS SETOF double precision
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT CASE
                   WHEN s.units < 9223372032559808512 THEN
                       s.units::double precision / 4294967296::double precision
                   ELSE
                       -- Version 5's statement: distances of 2^31 or more apart.
                       (SELECT coalesce((sum(round((r.embedding_vector <-> p_center)
                                                   * 4294967296::double precision)::bigint)
                                             FILTER (WHERE (r.embedding_vector <-> p_center)
                                                           < 2147483648::double precision))
                                        ::double precision / 4294967296::double precision, 0)
                               + coalesce(sum(r.embedding_vector <-> p_center)
                                              FILTER (WHERE NOT (r.embedding_vector <-> p_center)
                                                                < 2147483648::double precision), 0)
                          FROM regimes AS r
                         WHERE r.region = p_region
                           AND r.as_of_date BETWEEN p_start AND p_end)
               END
          FROM (SELECT coalesce(sum(round(least(r.embedding_vector <-> p_center,
                                                2147483647::double precision)
                                          * 4294967296::double precision)::bigint), 0) AS units
                  FROM regimes AS r
                 WHERE r.region = p_region
                   AND r.as_of_date BETWEEN p_start AND p_end
                   AND r.embedding_vector IS NOT NULL) AS s;
END
$$;
