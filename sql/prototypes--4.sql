-- regime-pg: regime prototypes, version 4: the centroid's cost follows the
-- rows of the window, not its calendar span.
--
-- Replaces regime_window_bucket_states of prototypes--3.sql (same
-- signature, flags and comment).  Every other function of versions 1 to 3
-- stays as it was: regime_prototype_compute still calls it once for a
-- window under 4096 days, and regime_window_parts once for each of the 8
-- parts of a longer one, with the same bucket bounds as version 3.
--
-- Why (a denial of service open to any reader, found in review): version 3
-- ran generate_series(p_first, p_last) over every 15-day bucket of the
-- window, one index probe per bucket, whether the bucket had rows or not.
-- On a region of 2,609 rows, compute_regime_prototype('US', '1990-01-01',
-- '2020-12-31') took 17 ms, ('0001-01-01', '9999-12-31') 160 ms (243,471
-- buckets), and ('4713-01-01 BC', '5874897-12-31') ran past a 60 s
-- statement_timeout with 1.4 GB of temporary files (143 million buckets,
-- which the function scan of generate_series materializes).  Any role that
-- may compute a prototype may ask for such a window, and
-- regime_window_bucket_states and regime_window_parts, which readers may
-- execute too, took any range of buckets.
--
-- How: a bucket without a row contributes nothing (its sums and its "clean"
-- flag are NULL, so every FILTER of the statement skips it), so the loop
-- now runs only from the bucket of the first row to the bucket of the last
-- row of the requested range of buckets.  Those two rows are found in the
-- same statement by min() and max() of as_of_date over the range's dates,
-- which PostgreSQL turns into two LIMIT 1 scans of the (region, as_of_date)
-- index (InitPlans, one descent each).  The grid stays anchored at p_start
-- (bucket k covers p_start + 15k .. p_start + 15k + 14, up to p_end), so
-- every bucket keeps its rows and its level-1 sum.  A range without a row
-- visits no bucket.  On the same 2,609 rows the three windows above now
-- visit 244 buckets each and write no temporary file: 6 ms each on one
-- core, 11 to 16 ms with parallel workers (their start-up, on a shared
-- 2-core machine); a one-year window costs what it did (0.3 ms).
--
-- Same bits as version 3, for every window: the buckets that have a row
-- are the same, summed by the same statement in the same order, and the
-- buckets left out had none.  Long windows keep version 3's 8 parts, cut
-- over the whole window (i * n_buckets / 8, by regime_prototype_compute as
-- before), so no float8 addition is regrouped: each part probes its own
-- range of dates, and a part outside the data visits no bucket and returns
-- the state '{0}', n_usable 0, NULL dates and no dirty bucket, exactly what
-- version 3's part of empty buckets returned; regime_window_parts adds the 8
-- states in part order as before.  The short/long switch (p_end - p_start
-- < 4096 days) and the plan choices (generic plans under 4096 days, custom
-- ones above) are unchanged, and so are the buckets with a duplicate date
-- (the same bucket numbers) and the dispersion (one range scan of the
-- window).  Results, errors and their order are those of version 3
-- (tests/test_centroid_span.py compares them with the released version 3,
-- serial and parallel, on data where a regrouping would show).
--
-- One difference, outside the prototype functions: a direct call with
-- p_first > p_last whose bound p_start + 15 * p_first is out of the range of
-- integer or date now raises that error, where version 3 returned an empty
-- result without computing it.
--
-- Runs with search_path set by the migration; every function pins it.

-- Buckets p_first..p_last (of 15 days from p_start, up to p_end) of a
-- region: the float8 state of the sums of the buckets without a duplicate
-- date, their counts and dates, and the buckets with a duplicate date.
-- Only the buckets from that of the range's first row to that of its last
-- row are visited (span: two index probes).  COST tells the planner a call
-- is worth a parallel worker.
CREATE OR REPLACE FUNCTION regime_window_bucket_states(p_region text, p_start date, p_end date,
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
    -- The bucket of a date d of the range is p_first + (d - its first day) / 15
    -- (d is not before that day: the division rounds down).
    SELECT coalesce(sum(b.n_usable) FILTER (WHERE b.clean), 0),
           coalesce(sum(b.n_rows - b.n_usable) FILTER (WHERE b.clean), 0),
           regime_vector_sum_state(b.partial) FILTER (WHERE b.clean),
           min(b.first_date) FILTER (WHERE b.clean),
           max(b.last_date) FILTER (WHERE b.clean),
           array_agg(k.bucket) FILTER (WHERE NOT b.clean)
      INTO n_usable, n_skipped, state, first_date, last_date, dirty
      FROM (SELECT p_first + (min(r.as_of_date) - (p_start + bucket_days * p_first))
                             / bucket_days AS first_bucket,
                   p_first + (max(r.as_of_date) - (p_start + bucket_days * p_first))
                             / bucket_days AS last_bucket
              FROM regimes AS r
             WHERE r.region = p_region
               AND r.as_of_date
                   BETWEEN p_start + bucket_days * p_first
                       AND p_start + least(p_end - p_start,
                                           bucket_days * p_last + bucket_days - 1)) AS span,
           generate_series(span.first_bucket, span.last_bucket) AS k(bucket),
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
