-- regime-pg: stored bucket sums, an opt-in accelerator of the centroid.
--
--   SELECT regime_bucket_sums_enable();     -- triggers on regimes, sums filled
--   SELECT regime_bucket_sums_enabled();    -- true
--   SELECT regime_bucket_sums_disable();    -- triggers dropped, sums emptied
--
-- Why: the centroid of a window reads every row of it, twice (the centre,
-- then the distances to it).  With the sums of each 15-day bucket and of
-- each 240-day group of buckets kept up to date by statement triggers, the
-- centre of a long window reads one stored row per 240 days and the rows of
-- its partial buckets only; the distances still read every row.  On a
-- 1,000,000-row window the centre drops from about 0.6 s to 0.02 s.
--
-- Nothing changes until regime_bucket_sums_enable() is called: it creates
-- four statement triggers on regimes, so every INSERT, UPDATE, DELETE and
-- TRUNCATE of regimes then also writes regime_bucket_sums and
-- regime_bucket_group_sums in the same transaction.  The two trigger
-- functions are SECURITY DEFINER, the only ones in regime-pg (see
-- regime_bucket_sums_changed): the writers of regimes need no privilege on
-- the sums, and cannot write them.  Readers need SELECT on both tables for
-- the fast path (regime-pg roles grant-reader gives it).
--
-- The calendar grid.  Enabled, every centroid is computed on a grid fixed
-- to the calendar, whether its sums come from storage or from the rows:
-- bucket b covers the 15 days from Julian day 15b (2000-01-01 is Julian day
-- 2,451,545), group g the 16 buckets 16g .. 16g + 15.  Level 1 is the
-- float32 sum(vector), in date order, over the dates of a bucket whose
-- winning row (the latest, by the rule of regime_embeddings_latest) has a
-- vector; level 2 is the float8 state (regime_vector_sum_state) of a group's
-- level-1 sums in bucket order; the centre is the float8 sum of the groups'
-- states in group order, divided by the number of usable dates and rounded
-- once to float32.  A bucket or a group cut by the window's bounds is summed
-- over the window's part of it.  Same accuracy bound as the window grid
-- (prototypes--3.sql): a float32 sum of at most 15 values, then float8, so
--     |c_j - mean_j| <= 15 * 2^-24 * mean_i |x_ij|.
-- Disabled (the default), centroids use the window grid of prototypes--5.sql
-- (buckets anchored at the window's start), exactly as before.  The two
-- grids group the same rows differently, so a centre may differ between
-- them in its last float32 bit; each is the same, bit for bit, under every
-- plan, and the calendar grid's centre is the same whether the sums come
-- from storage or from the rows (regime_calendar_grid_state with p_stored
-- false recomputes them; the tests compare the two and replay both in
-- numpy).
--
-- Staleness.  A stored sum is only as good as the triggers that kept it.
-- Statement triggers fire for the table a statement names: rows written
-- into a partition directly, a partition's own TRUNCATE, DETACH or ATTACH
-- with rows, and anything written with session_replication_role = replica
-- (what a logical-replication subscriber's apply worker runs with) bypass
-- them.  Each bucket and group therefore stores its number of rows and the
-- sum of their Julian days; the distance scan, which reads every row of the
-- window anyway, counts the same two figures, and when they disagree the
-- centre is computed again from the rows (same bits as fresh sums), with a
-- WARNING naming regime_bucket_sums_enable(), which rebuilds them.  What
-- keeps both figures goes unnoticed: an UPDATE of an embedding or of
-- created_at alone, a date deleted and written again (an engine re-run),
-- two rows swapping dates, when the triggers were bypassed.  On a
-- subscriber, either ALTER TABLE regimes ENABLE ALWAYS TRIGGER on the four
-- triggers (and do not replicate the sums tables), or leave the sums
-- disabled there.
--
-- Row-level security.  The sums aggregate every row, so they do not mix
-- with policies on regimes: enable() refuses while regimes has row-level
-- security enabled, and while it is enabled no reader uses the stored sums
-- (the same grid is computed from the rows the reader may see).  A role
-- that cannot SELECT both tables computes from the rows too: slower, same
-- bits.
--
-- Concurrency.  A statement's trigger locks the rows of the buckets, then
-- of the groups, it changes, in key order, and recomputes them from the
-- table in a later statement (a new snapshot in READ COMMITTED).  Two
-- writers of one 240-day group of a region (even of different buckets of
-- it) queue on the group's row until the first commits, and the second then
-- sees both writes; under REPEATABLE READ or SERIALIZABLE the second gets a
-- serialization failure (40001) instead, to retry.  Two transactions that
-- write the same groups in different statements in opposite orders can
-- deadlock; PostgreSQL detects it and cancels one.  The engine writes one
-- date per region at a time, so its writers seldom meet.

-- Runs with search_path set by the migration; every function pins it.

-- Level 1: one row per (region, 15-day bucket) with a row in regimes.
CREATE TABLE regime_bucket_sums (
    region      text NOT NULL,
    bucket      integer NOT NULL,
    n_rows      bigint NOT NULL,
    day_sum     bigint NOT NULL,
    n_dates     bigint NOT NULL,
    n_usable    bigint NOT NULL,
    first_date  date,
    last_date   date,
    partial     vector(384),
    PRIMARY KEY (region, bucket)
);

ALTER TABLE regime_bucket_sums ALTER COLUMN partial SET STORAGE PLAIN;

COMMENT ON TABLE regime_bucket_sums IS
    'regime-pg: float32 sums of 15-day buckets of regimes (regime_bucket_sums_enable)';

-- Level 2: one row per (region, group of 16 buckets) with a row in regimes.
CREATE TABLE regime_bucket_group_sums (
    region        text NOT NULL,
    bucket_group  integer NOT NULL,
    n_rows        bigint NOT NULL,
    day_sum       bigint NOT NULL,
    n_dates       bigint NOT NULL,
    n_usable      bigint NOT NULL,
    first_date    date,
    last_date     date,
    dirty         boolean NOT NULL,
    state         double precision[] NOT NULL,
    PRIMARY KEY (region, bucket_group)
);

COMMENT ON TABLE regime_bucket_group_sums IS
    'regime-pg: float8 sums of 240-day groups of regime_bucket_sums (regime_bucket_sums_enable)';

-- The first day of calendar bucket p_bucket.
CREATE FUNCTION regime_bucket_first_day(p_bucket integer)
RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
RETURN date '4714-11-24 BC' + 15 * p_bucket;

COMMENT ON FUNCTION regime_bucket_first_day(integer) IS
    'regime-pg: first day of a 15-day calendar bucket (bucket b starts on Julian day 15b)';

-- Level-1 sums of the buckets of [p_from, p_to] computed from the rows, one
-- row per bucket with a row: all its rows' count and Julian-day sum (the
-- staleness check), and over the latest row of each date the number of
-- dates, of usable ones, their first and last date and the float32 sum of
-- their vectors in date order.  A bucket cut by p_from or p_to is summed
-- over its part in the range.  Only the buckets with a row are visited: a
-- recursive skip scan finds each from the previous one (one index probe for
-- the first date at or after the next bucket's first day), so a region with
-- rows 10,000 years apart costs what its rows cost, not 240,000 empty
-- buckets (prototypes--4.sql's walk over every bucket between the first and
-- the last row would, and regime_bucket_sums_enable() reads every region
-- whole).  Each bucket is then one index range; a bucket whose dates are
-- all distinct (one bit per day of its 15)
-- sums its rows as they are, and only a bucket with a duplicate date reads
-- the latest rows through regime_embeddings_latest.  Both give the same sum
-- for a clean bucket: the same rows, in the same order.
CREATE FUNCTION regime_bucket_sums_of_rows(p_region text, p_from date, p_to date)
RETURNS TABLE (bucket integer, n_rows bigint, day_sum bigint, n_dates bigint,
               n_usable bigint, first_date date, last_date date, partial vector(384))
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    WITH RECURSIVE k(bucket) AS (
        SELECT (min(r.as_of_date) - date '4714-11-24 BC') / 15
          FROM regimes AS r
         WHERE r.region = p_region
           AND r.as_of_date BETWEEN p_from AND p_to
        UNION ALL
        SELECT (SELECT (min(r.as_of_date) - date '4714-11-24 BC') / 15
                  FROM regimes AS r
                 WHERE r.region = p_region
                   AND r.as_of_date BETWEEN date '4714-11-24 BC' + 15 * (k.bucket + 1)
                                        AND p_to)
          FROM k
         WHERE k.bucket < (p_to - date '4714-11-24 BC') / 15
    )
    SELECT k.bucket, b.n_rows, b.day_sum,
           CASE WHEN b.clean THEN b.n_rows ELSE l.n_dates END,
           CASE WHEN b.clean THEN b.n_usable ELSE l.n_usable END,
           CASE WHEN b.clean THEN b.first_date ELSE l.first_date END,
           CASE WHEN b.clean THEN b.last_date ELSE l.last_date END,
           CASE WHEN b.clean THEN b.partial ELSE l.partial END
      FROM k,
           LATERAL (SELECT count(*) AS n_rows,
                           sum(r.as_of_date - date '4714-11-24 BC') AS day_sum,
                           bit_count(bit_or(1 << ((r.as_of_date - date '4714-11-24 BC') % 15))
                                     ::bit(32)) = count(*) AS clean,
                           count(r.embedding_vector) AS n_usable,
                           min(r.as_of_date) FILTER (WHERE r.embedding_vector IS NOT NULL)
                               AS first_date,
                           max(r.as_of_date) FILTER (WHERE r.embedding_vector IS NOT NULL)
                               AS last_date,
                           sum(r.embedding_vector ORDER BY r.as_of_date) AS partial
                      FROM regimes AS r
                     WHERE r.region = p_region
                       AND r.as_of_date
                           BETWEEN greatest(p_from, date '4714-11-24 BC' + 15 * k.bucket)
                               AND date '4714-11-24 BC'
                                   + least(15 * k.bucket + 14, p_to - date '4714-11-24 BC')) AS b,
           LATERAL (SELECT count(*) AS n_dates,
                           count(e.embedding_vector) AS n_usable,
                           min(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL)
                               AS first_date,
                           max(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL)
                               AS last_date,
                           sum(e.embedding_vector ORDER BY e.as_of_date) AS partial
                      FROM (SELECT x.as_of_date, x.embedding_vector
                              FROM regime_embeddings_latest AS x
                             WHERE x.region = p_region
                               AND x.as_of_date
                                   BETWEEN greatest(p_from, date '4714-11-24 BC' + 15 * k.bucket)
                                       AND date '4714-11-24 BC'
                                           + least(15 * k.bucket + 14,
                                                   p_to - date '4714-11-24 BC')
                               AND NOT b.clean
                            OFFSET 0) AS e) AS l
     WHERE k.bucket IS NOT NULL
     ORDER BY k.bucket;
END;

COMMENT ON FUNCTION regime_bucket_sums_of_rows(text, date, date) IS
    'regime-pg: level-1 calendar bucket sums of a date range, from the rows';

-- The stored level-1 sums of buckets p_first..p_last outside groups
-- p_group_first..p_group_last.  A function of its own, so that a statement
-- naming it reads regime_bucket_sums (and needs SELECT on it) only when it
-- runs: PostgreSQL checks the privileges on every table a statement names.
CREATE FUNCTION regime_stored_bucket_sums(p_region text, p_first integer, p_last integer,
                                          p_group_first integer, p_group_last integer)
RETURNS TABLE (bucket integer, n_rows bigint, day_sum bigint, n_dates bigint,
               n_usable bigint, first_date date, last_date date, partial vector(384))
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT s.bucket, s.n_rows, s.day_sum, s.n_dates, s.n_usable,
           s.first_date, s.last_date, s.partial
      FROM regime_bucket_sums AS s
     WHERE s.region = p_region
       AND s.bucket BETWEEN p_first AND p_last
       AND s.bucket / 16 NOT BETWEEN p_group_first AND p_group_last;
END;

COMMENT ON FUNCTION regime_stored_bucket_sums(text, integer, integer, integer, integer) IS
    'regime-pg: stored level-1 calendar bucket sums of a range, outside some groups';

-- The stored level-2 sums of groups p_first..p_last (see above).
CREATE FUNCTION regime_stored_group_sums(p_region text, p_first integer, p_last integer)
RETURNS TABLE (bucket_group integer, n_rows bigint, day_sum bigint, n_dates bigint,
               n_usable bigint, first_date date, last_date date, dirty boolean,
               state double precision[])
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT s.bucket_group, s.n_rows, s.day_sum, s.n_dates, s.n_usable,
           s.first_date, s.last_date, s.dirty, s.state
      FROM regime_bucket_group_sums AS s
     WHERE s.region = p_region
       AND s.bucket_group BETWEEN p_first AND p_last;
END;

COMMENT ON FUNCTION regime_stored_group_sums(text, integer, integer) IS
    'regime-pg: stored level-2 calendar group sums of a range';

-- The calendar grid's float8 state of a window and its counts: groups wholly
-- inside the window from regime_bucket_group_sums, the other buckets wholly
-- inside from regime_bucket_sums, the cut buckets from the rows; with
-- p_stored false, everything from the rows (and neither table is read).
-- dirty: the groups with a duplicate date.  n_rows and day_sum cover every
-- row of the window.  Bounds past the calendar's last day are never formed.
CREATE FUNCTION regime_calendar_grid_state(p_region text, p_start date, p_end date,
                                           p_stored boolean,
                                           OUT state double precision[],
                                           OUT n_rows bigint, OUT day_sum bigint,
                                           OUT n_dates bigint, OUT n_usable bigint,
                                           OUT first_date date, OUT last_date date,
                                           OUT dirty integer[])
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    -- Buckets wholly inside the window: b_first .. b_last; groups: g_first .. g_last.
    b_first constant integer := (p_start - date '4714-11-24 BC' + 14) / 15;
    b_last  constant integer := (p_end - date '4714-11-24 BC' + 1) / 15 - 1;
    g_first constant integer := (b_first + 15) / 16;
    g_last  constant integer := (b_last + 1) / 16 - 1;
    stored  constant boolean := p_stored AND b_first <= b_last;
BEGIN
    SELECT regime_vector_state_sum(g.state ORDER BY g.bucket_group),
           coalesce(sum(g.n_rows), 0), coalesce(sum(g.day_sum), 0),
           coalesce(sum(g.n_dates), 0), coalesce(sum(g.n_usable), 0),
           min(g.first_date), max(g.last_date),
           array_agg(g.bucket_group ORDER BY g.bucket_group) FILTER (WHERE g.dirty)
      INTO state, n_rows, day_sum, n_dates, n_usable, first_date, last_date, dirty
      FROM (SELECT b.bucket / 16 AS bucket_group,
                   sum(b.n_rows) AS n_rows, sum(b.day_sum) AS day_sum,
                   sum(b.n_dates) AS n_dates, sum(b.n_usable) AS n_usable,
                   min(b.first_date) AS first_date, max(b.last_date) AS last_date,
                   bool_or(b.n_rows > b.n_dates) AS dirty,
                   regime_vector_sum_state(b.partial ORDER BY b.bucket) AS state
              FROM (SELECT s.*
                      FROM regime_stored_bucket_sums(p_region, b_first, b_last,
                                                     g_first, g_last) AS s
                     WHERE stored
                    UNION ALL
                    SELECT f.*
                      FROM regime_bucket_sums_of_rows(
                               p_region, p_start,
                               CASE WHEN NOT stored THEN p_end
                                    WHEN b_first > 0 THEN regime_bucket_first_day(b_first) - 1
                               END) AS f
                    UNION ALL
                    SELECT f.*
                      FROM regime_bucket_sums_of_rows(
                               p_region,
                               CASE WHEN b_last < (date '5874897-12-31' - date '4714-11-24 BC') / 15
                                    THEN regime_bucket_first_day(b_last + 1)
                               END,
                               p_end) AS f
                     WHERE stored) AS b
             GROUP BY 1
            UNION ALL
            SELECT s.*
              FROM regime_stored_group_sums(p_region, g_first, g_last) AS s
             WHERE stored) AS g;
END
$$;

COMMENT ON FUNCTION regime_calendar_grid_state(text, date, date, boolean) IS
    'regime-pg: calendar-grid float8 state of a window, from stored sums or from the rows';

-- One scan of the window, the distance to p_center computed once a row:
-- the exact sum of every row's distance in units of 2^-32, each distance
-- capped at 2^31 - 1 (so that the units fit a bigint), with the number of
-- rows and the sum of their Julian days for the staleness check.  The units
-- are prototypes--5.sql's, so while their sum is below (2^31 - 1) * 2^32 no
-- distance was capped and sum / 2^32, rounded once to float8, is exactly what
-- regime_window_distances returns; a larger sum (a window whose distances add
-- up to 2^31 or more) is left to the caller, which asks
-- regime_window_distances.  Version 5 writes the distance out three times a
-- row, to keep its rare distances of 2^31 or more apart: about 12% of this
-- scan on a 1M-row window.
CREATE FUNCTION regime_window_distances_counted(p_region text, p_start date, p_end date,
                                                p_center vector)
RETURNS TABLE (units numeric, n_rows bigint, day_sum bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN QUERY
        SELECT coalesce(sum(round(least(r.embedding_vector <-> p_center,
                                        2147483647::double precision)
                                  * 4294967296::double precision)::bigint), 0),
               count(*),
               coalesce(sum(r.as_of_date - date '4714-11-24 BC'), 0)::bigint
          FROM regimes AS r
         WHERE r.region = p_region
           AND r.as_of_date BETWEEN p_start AND p_end;
END
$$;

COMMENT ON FUNCTION regime_window_distances_counted(text, date, date, vector) IS
    'regime-pg: exact units of the distances of a window''s rows to a centre, with their count';

-- True when the four triggers of regime_bucket_sums_enable() are on regimes
-- and fire in ordinary sessions (enabled, or enabled ALWAYS).
CREATE FUNCTION regime_bucket_sums_enabled()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
BEGIN ATOMIC
    SELECT count(*) = 4 AND bool_and(t.tgenabled IN ('O', 'A'))
      FROM pg_catalog.pg_trigger AS t
     WHERE t.tgrelid = 'regimes'::regclass
       AND t.tgname IN ('regime_pg_bucket_sums_insert', 'regime_pg_bucket_sums_update',
                        'regime_pg_bucket_sums_delete', 'regime_pg_bucket_sums_truncate');
END;

COMMENT ON FUNCTION regime_bucket_sums_enabled() IS
    'regime-pg: whether stored bucket sums are kept and used (regime_bucket_sums_enable)';

-- The prototype of one window whose bounds are checked, on the calendar
-- grid: the centre from the stored sums when this role may use them, the
-- distances and the staleness check from one scan of the window; stale sums
-- are replaced by the rows' (a WARNING).  Same results and errors as
-- regime_prototype_compute otherwise.
CREATE FUNCTION regime_prototype_from_bucket_sums(p_region text, p_label text,
                                                  p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    result     regime_prototype;
    stored     boolean;
    grid       record;
    scan       record;
    distances  double precision;
    trade      record;
BEGIN
    stored := has_table_privilege('regime_bucket_sums', 'SELECT')
              AND has_table_privilege('regime_bucket_group_sums', 'SELECT')
              AND NOT (SELECT c.relrowsecurity FROM pg_catalog.pg_class AS c
                        WHERE c.oid = 'regimes'::regclass);
    LOOP
        SELECT * INTO grid FROM regime_calendar_grid_state(p_region, p_start, p_end, stored);
        result.region := p_region;
        result.start_date := p_start;
        result.end_date := p_end;
        result.n_dates := grid.n_usable;
        result.n_skipped := grid.n_dates - grid.n_usable;
        result.first_date := grid.first_date;
        result.last_date := grid.last_date;
        IF grid.n_usable = 0 THEN
            -- Nothing stored can be trusted to say "no data": check the rows.
            IF stored THEN
                stored := false;
                CONTINUE;
            END IF;
            PERFORM regime_check_region(p_region);
            RAISE EXCEPTION 'no usable embedding for % in window %..% (% dates skipped)',
                    regime_window_name(p_region, p_label), p_start, p_end, result.n_skipped
                USING ERRCODE = 'no_data_found', TABLE = 'regimes', COLUMN = 'as_of_date';
        END IF;
        grid.state[1] := grid.n_usable;
        result.center := vector_avg(grid.state);
        result.l2_norm := vector_norm(result.center);
        SELECT * INTO scan FROM regime_window_distances_counted(p_region, p_start, p_end,
                                                                  result.center);
        EXIT WHEN NOT stored
                  OR (scan.n_rows = grid.n_rows AND scan.day_sum = grid.day_sum);
        RAISE WARNING 'regime-pg: the stored bucket sums of region % disagree with regimes in %..% (% rows by the sums, % in the table); computed from the rows',
                p_region, p_start, p_end, grid.n_rows, scan.n_rows
            USING HINT = 'SELECT regime_bucket_sums_enable() rebuilds them.';
        stored := false;
    END LOOP;
    -- No distance was capped, or the window's distances add up to 2^31 or more
    -- and version 5's scan, which keeps those apart, sums them.
    IF scan.units < 9223372032559808512 THEN
        distances := scan.units::double precision / 4294967296::double precision;
    ELSE
        distances := (SELECT d FROM regime_window_distances(p_region, p_start, p_end,
                                                             result.center) AS d);
    END IF;

    -- Groups with a duplicate date trade their rows' distances for the
    -- latest rows', in exact units, as prototypes--5.sql does for buckets:
    -- the latest rows' units minus all their rows' units, over each group's
    -- part of the window, both read by one statement.
    IF grid.dirty IS NOT NULL THEN
        SELECT coalesce(sum(round(e.d * 4294967296::double precision)::bigint)
                            FILTER (WHERE e.latest AND e.d < 2147483648::double precision), 0)
               - coalesce(sum(round(e.d * 4294967296::double precision)::bigint)
                              FILTER (WHERE NOT e.latest
                                        AND e.d < 2147483648::double precision), 0)
                   AS units,
               coalesce(sum(e.d) FILTER (WHERE e.latest
                                           AND NOT e.d < 2147483648::double precision), 0)
               - coalesce(sum(e.d) FILTER (WHERE NOT e.latest
                                             AND NOT e.d < 2147483648::double precision), 0)
                   AS other
          INTO trade
          FROM unnest(grid.dirty) AS k(bucket_group),
               LATERAL (SELECT greatest(p_start, regime_bucket_first_day(16 * k.bucket_group))
                                   AS first_day,
                               regime_bucket_first_day(16 * k.bucket_group)
                               + least(239, p_end
                                            - regime_bucket_first_day(16 * k.bucket_group))
                                   AS last_day) AS g,
               LATERAL (SELECT true AS latest, x.d
                          FROM (SELECT l.embedding_vector <-> result.center AS d
                                  FROM regime_embeddings_latest AS l
                                 WHERE l.region = p_region
                                   AND l.as_of_date BETWEEN g.first_day AND g.last_day
                                OFFSET 0) AS x
                        UNION ALL
                        SELECT false, r.embedding_vector <-> result.center
                          FROM regimes AS r
                         WHERE r.region = p_region
                           AND r.as_of_date BETWEEN g.first_day AND g.last_day) AS e;
        distances := distances
            + trade.units::double precision / 4294967296::double precision
            + trade.other;
    END IF;
    result.dispersion := distances / grid.n_usable;
    RETURN result;
END
$$;

COMMENT ON FUNCTION regime_prototype_from_bucket_sums(text, text, date, date) IS
    'regime-pg: a window''s prototype on the calendar grid, its centre from stored sums';

-- The same, for windows of 4096 days or more: planned for the actual bounds,
-- so that the distance scan of a long window gets parallel workers.
CREATE FUNCTION regime_prototype_from_bucket_sums_custom_plans(p_region text, p_label text,
                                                               p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan
RETURN regime_prototype_from_bucket_sums(p_region, p_label, p_start, p_end);

COMMENT ON FUNCTION regime_prototype_from_bucket_sums_custom_plans(text, text, date, date) IS
    'regime-pg: regime_prototype_from_bucket_sums planned for the actual window (long windows)';

-- Recompute the stored sums of the given (region, bucket) pairs from the
-- rows, then of their groups.  Their rows are locked first, in key order, by
-- an upsert (created when missing; an existing row is updated in place, so
-- a writer that finds it waits for the one holding it), and recomputed by a
-- later statement, which in READ COMMITTED sees every write committed while
-- this one waited; under REPEATABLE READ or SERIALIZABLE the upsert of a row
-- another transaction changed since the snapshot fails with 40001.  Rows
-- are never deleted: a bucket whose rows are all deleted keeps a row of
-- zeros, so a concurrent writer never loses the row it waits for.
CREATE FUNCTION regime_bucket_sums_refresh(p_regions text[], p_buckets integer[])
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO regime_bucket_sums AS s (region, bucket, n_rows, day_sum, n_dates, n_usable)
    SELECT DISTINCT k.region, k.bucket, 0, 0, 0, 0
      FROM unnest(p_regions, p_buckets) AS k(region, bucket)
     ORDER BY 1, 2
        ON CONFLICT (region, bucket) DO UPDATE SET n_rows = s.n_rows;
    UPDATE regime_bucket_sums AS s
       SET n_rows = coalesce(f.n_rows, 0), day_sum = coalesce(f.day_sum, 0),
           n_dates = coalesce(f.n_dates, 0), n_usable = coalesce(f.n_usable, 0),
           first_date = f.first_date, last_date = f.last_date, partial = f.partial
      FROM (SELECT DISTINCT * FROM unnest(p_regions, p_buckets)) AS k(region, bucket)
           LEFT JOIN LATERAL regime_bucket_sums_of_rows(
               k.region, regime_bucket_first_day(k.bucket),
               regime_bucket_first_day(k.bucket)
               + least(14, date '5874897-12-31' - regime_bucket_first_day(k.bucket))) AS f ON true
     WHERE s.region = k.region
       AND s.bucket = k.bucket;

    INSERT INTO regime_bucket_group_sums AS g
           (region, bucket_group, n_rows, day_sum, n_dates, n_usable, dirty, state)
    SELECT DISTINCT k.region, k.bucket / 16, 0, 0, 0, 0, false, '{0}'::double precision[]
      FROM unnest(p_regions, p_buckets) AS k(region, bucket)
     ORDER BY 1, 2
        ON CONFLICT (region, bucket_group) DO UPDATE SET n_rows = g.n_rows;
    UPDATE regime_bucket_group_sums AS g
       SET n_rows = coalesce(b.n_rows, 0), day_sum = coalesce(b.day_sum, 0),
           n_dates = coalesce(b.n_dates, 0), n_usable = coalesce(b.n_usable, 0),
           first_date = b.first_date, last_date = b.last_date,
           dirty = coalesce(b.dirty, false), state = coalesce(b.state, '{0}')
      FROM (SELECT DISTINCT k.region, k.bucket / 16
              FROM unnest(p_regions, p_buckets) AS k(region, bucket)) AS k(region, bucket_group)
           LEFT JOIN LATERAL (
               SELECT sum(s.n_rows) AS n_rows, sum(s.day_sum) AS day_sum,
                      sum(s.n_dates) AS n_dates, sum(s.n_usable) AS n_usable,
                      min(s.first_date) AS first_date, max(s.last_date) AS last_date,
                      bool_or(s.n_rows > s.n_dates) AS dirty,
                      regime_vector_sum_state(s.partial ORDER BY s.bucket) AS state
                 FROM regime_bucket_sums AS s
                WHERE s.region = k.region
                  AND s.bucket BETWEEN 16 * k.bucket_group AND 16 * k.bucket_group + 15
               HAVING count(*) > 0) AS b ON true
     WHERE g.region = k.region
       AND g.bucket_group = k.bucket_group;
END
$$;

COMMENT ON FUNCTION regime_bucket_sums_refresh(text[], integer[]) IS
    'regime-pg: recompute the stored sums of some (region, bucket) pairs from the rows';

-- The statement trigger of INSERT, UPDATE and DELETE on regimes: refresh
-- the buckets of the rows before and after the statement (transition tables
-- old_rows and new_rows).  Dates outside the calendar grid (infinite) are in
-- no window, hence in no bucket.
--
-- SECURITY DEFINER, the one exception to regime-pg's invoker rights (with
-- regime_bucket_sums_truncated): the sums are derived data that every
-- writer of regimes must keep, whatever its own privileges, and that no
-- writer may set to anything else.  Run as the owner of regime-pg's
-- objects, the trigger reads every row of the buckets it recomputes (row
-- security or column grants of the writer do not change the sums), and the
-- writers of regimes need no privilege on the sums tables: nobody but the
-- owner writes them.  It runs nothing a writer chooses: the writer's rows
-- reach it as values (their regions and dates), bound into fixed
-- statements, and its search_path is pinned like every function's
-- (pg_temp last).  A trigger function cannot be called directly.
CREATE FUNCTION regime_bucket_sums_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    regions text[];
    buckets integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(k.region), array_agg(k.bucket) INTO regions, buckets
          FROM (SELECT DISTINCT n.region, (n.as_of_date - date '4714-11-24 BC') / 15
                  FROM new_rows AS n
                 WHERE isfinite(n.as_of_date)) AS k(region, bucket);
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(k.region), array_agg(k.bucket) INTO regions, buckets
          FROM (SELECT o.region, (o.as_of_date - date '4714-11-24 BC') / 15
                  FROM old_rows AS o
                 WHERE isfinite(o.as_of_date)
                UNION
                SELECT n.region, (n.as_of_date - date '4714-11-24 BC') / 15
                  FROM new_rows AS n
                 WHERE isfinite(n.as_of_date)) AS k(region, bucket);
    ELSE
        SELECT array_agg(k.region), array_agg(k.bucket) INTO regions, buckets
          FROM (SELECT DISTINCT o.region, (o.as_of_date - date '4714-11-24 BC') / 15
                  FROM old_rows AS o
                 WHERE isfinite(o.as_of_date)) AS k(region, bucket);
    END IF;
    IF regions IS NOT NULL THEN
        PERFORM regime_bucket_sums_refresh(regions, buckets);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION regime_bucket_sums_changed() IS
    'regime-pg: statement trigger keeping the stored bucket sums of changed rows';

-- The statement trigger of TRUNCATE on regimes: no row, no sum.  DELETE,
-- not TRUNCATE, so that readers of the sums are not locked out meanwhile.
CREATE FUNCTION regime_bucket_sums_truncated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM regime_bucket_sums;
    DELETE FROM regime_bucket_group_sums;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION regime_bucket_sums_truncated() IS
    'regime-pg: statement trigger emptying the stored bucket sums when regimes is truncated';

-- Create the triggers (when missing) and fill the sums from every row of
-- regimes; writers wait meanwhile.  Also the repair of stale sums.  Returns
-- the number of buckets stored.
CREATE FUNCTION regime_bucket_sums_enable()
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET client_min_messages = warning
AS $$
DECLARE
    stored bigint;
BEGIN
    LOCK TABLE regimes IN SHARE ROW EXCLUSIVE MODE;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'regime_bucket_sums_enable() must run in a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'Its snapshot would miss rows committed while it waited for its lock.';
    END IF;
    IF (SELECT c.relrowsecurity FROM pg_catalog.pg_class AS c
         WHERE c.oid = 'regimes'::regclass) THEN
        RAISE EXCEPTION 'regimes has row-level security enabled: stored bucket sums would show every reader of them aggregates of rows the policies hide'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF NOT regime_bucket_sums_enabled() THEN
        DROP TRIGGER IF EXISTS regime_pg_bucket_sums_insert ON regimes;
        DROP TRIGGER IF EXISTS regime_pg_bucket_sums_update ON regimes;
        DROP TRIGGER IF EXISTS regime_pg_bucket_sums_delete ON regimes;
        DROP TRIGGER IF EXISTS regime_pg_bucket_sums_truncate ON regimes;
        CREATE TRIGGER regime_pg_bucket_sums_insert
            AFTER INSERT ON regimes REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION regime_bucket_sums_changed();
        CREATE TRIGGER regime_pg_bucket_sums_update
            AFTER UPDATE ON regimes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION regime_bucket_sums_changed();
        CREATE TRIGGER regime_pg_bucket_sums_delete
            AFTER DELETE ON regimes REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION regime_bucket_sums_changed();
        CREATE TRIGGER regime_pg_bucket_sums_truncate
            AFTER TRUNCATE ON regimes
            FOR EACH STATEMENT EXECUTE FUNCTION regime_bucket_sums_truncated();
    END IF;
    TRUNCATE regime_bucket_sums, regime_bucket_group_sums;
    INSERT INTO regime_bucket_sums
    SELECT g.region, f.*
      FROM (SELECT DISTINCT r.region FROM regimes AS r) AS g,
           LATERAL regime_bucket_sums_of_rows(g.region, date '4714-11-24 BC',
                                              date '5874897-12-31') AS f;
    GET DIAGNOSTICS stored = ROW_COUNT;
    INSERT INTO regime_bucket_group_sums
    SELECT s.region, s.bucket / 16,
           sum(s.n_rows), sum(s.day_sum), sum(s.n_dates), sum(s.n_usable),
           min(s.first_date), max(s.last_date), bool_or(s.n_rows > s.n_dates),
           regime_vector_sum_state(s.partial ORDER BY s.bucket)
      FROM regime_bucket_sums AS s
     GROUP BY 1, 2;
    RETURN stored;
END
$$;

COMMENT ON FUNCTION regime_bucket_sums_enable() IS
    'regime-pg: keep stored bucket sums (triggers on regimes) and fill or rebuild them';

-- Drop the triggers and empty the sums: centroids go back to the window grid.
CREATE FUNCTION regime_bucket_sums_disable()
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET client_min_messages = warning
AS $$
BEGIN
    DROP TRIGGER IF EXISTS regime_pg_bucket_sums_insert ON regimes;
    DROP TRIGGER IF EXISTS regime_pg_bucket_sums_update ON regimes;
    DROP TRIGGER IF EXISTS regime_pg_bucket_sums_delete ON regimes;
    DROP TRIGGER IF EXISTS regime_pg_bucket_sums_truncate ON regimes;
    TRUNCATE regime_bucket_sums, regime_bucket_group_sums;
END
$$;

COMMENT ON FUNCTION regime_bucket_sums_disable() IS
    'regime-pg: stop keeping stored bucket sums; centroids use the window grid again';

-- The prototype of one window: on the calendar grid while stored bucket
-- sums are enabled, else as prototypes--3.sql defined it.
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
    IF regime_bucket_sums_enabled() THEN
        IF p_end - p_start >= 4096 THEN
            RETURN regime_prototype_from_bucket_sums_custom_plans(p_region, p_label,
                                                                  p_start, p_end);
        END IF;
        RETURN regime_prototype_from_bucket_sums(p_region, p_label, p_start, p_end);
    END IF;
    IF p_end - p_start >= 4096 THEN
        RETURN regime_prototype_compute_custom_plans(p_region, p_label, p_start, p_end);
    END IF;
    RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);
END
$$;
