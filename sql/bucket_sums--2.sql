-- regime-pg: stored bucket sums, version 2: a row without a vector no
-- longer sends the stored path's window to a second distance scan.
--
-- Replaces regime_window_distances_counted of bucket_sums--1.sql (same
-- signature, flags, result columns and comment; CREATE OR REPLACE, so its
-- privileges stay).  Every other function stays that of its latest version.
--
-- Why: version 1 caps each distance with least(distance, 2^31 - 1), and
-- least() ignores a NULL, so a row without a vector (a NULL or unconvertible
-- regime_embedding) counted as a capped distance.  Its window's units then
-- reached (2^31 - 1) * 2^32, and regime_prototype_from_bucket_sums summed the
-- window's distances again with regime_window_distances: the right result,
-- for a second scan of every row, on any window holding such a row.
--
-- How: the units are summed over the rows with a vector only (a FILTER; the
-- row count and the Julian-day sum of the staleness check still count every
-- row).  A row without a vector has no distance, so the units are those of
-- the rows regime_window_distances sums, and the result is the same as
-- before, bit for bit, now from one scan.
--
-- Runs with search_path set by the migration; every function pins it.

-- One scan of the window, the distance to p_center computed once a row:
-- the exact sum of the distances of the rows with a vector in units of
-- 2^-32, each distance capped at 2^31 - 1 (so that the units fit a bigint),
-- with the number of rows and the sum of their Julian days for the
-- staleness check.  The units are prototypes--5.sql's, so while their sum
-- is below (2^31 - 1) * 2^32 no distance was capped and sum / 2^32, rounded
-- once to float8, is exactly what regime_window_distances returns; a larger
-- sum (a window whose distances add up to 2^31 - 1 or more) is left to the
-- caller, which asks regime_window_distances (since prototypes--8.sql that
-- scans the window once more before version 5's statement: three scans in
-- all, for distances no encoder's embeddings reach).
CREATE OR REPLACE FUNCTION regime_window_distances_counted(p_region text, p_start date,
                                                           p_end date, p_center vector)
RETURNS TABLE (units numeric, n_rows bigint, day_sum bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT coalesce(sum(round(least(r.embedding_vector <-> p_center,
                                        2147483647::double precision)
                                  * 4294967296::double precision)::bigint)
                            FILTER (WHERE r.embedding_vector IS NOT NULL), 0),
               count(*),
               coalesce(sum(r.as_of_date - date '4714-11-24 BC'), 0)::bigint
          FROM regimes AS r
         WHERE r.region = p_region
           AND r.as_of_date BETWEEN p_start AND p_end;
END
$$;
