-- regime-pg: regime prototypes, version 7: a long window starts parallel
-- workers only when it has enough rows to repay them.
--
-- Replaces regime_prototype_for_window of bucket_sums--1.sql (same
-- signature, flags, settings and comment; CREATE OR REPLACE, so its
-- privileges stay), and adds regime_window_repays_workers and
-- regime_prototype_compute_serial.  Every other function stays that of its
-- latest version.
--
-- Why (measured on the benchmark's B1 table, 20 regions x 30 years of
-- business days, PostgreSQL 18 on a shared 2-core machine): a window of 4096
-- days or more takes the 8-part path, whose parts are function scans costed
-- as worth a parallel worker each (COST 1000000), so every long window
-- started parallel workers, whatever its number of rows.  A worker is a new
-- backend that loads its catalog caches, compiles the PL/pgSQL functions and
-- plans their statements before it reads a row: about 5 ms here.  Daily data
-- gives long windows of a few thousand rows (12 years: about 3,100), and
-- there the start-up was most of the call: 12-year windows took 10.4 ms with
-- workers and 4.7 ms in the calling backend alone, 20 years 12.9 and 8.0 ms,
-- 29 years 15.6 and 11.2 ms, while an 11-year window (the short path) took
-- 4.2 ms.  On the benchmark's big table (one row a calendar day) workers
-- broke even between 20,000 and 50,000 rows: in two runs a call took 0.62
-- and 0.66 times as long without them at 5,000 rows, 0.74 and 0.79 at
-- 10,000, 0.98 at 20,000, 1.00 at 25,000, 0.97 at 40,000, 1.13 at 50,000,
-- 1.21 and 1.28 at 100,000, 1.40 at 200,000, and 1.6 on B2's 1,000,000
-- rows.  The default, 50,000, is past the break-even of both runs.
--
-- How: before a long window's default path, regime_window_repays_workers
-- asks the (region, as_of_date) index whether the window has at least
-- regime_pg.parallel_min_rows rows (a setting, default 50000; the probe
-- reads at most that many index entries, without workers of its own: about
-- 0.5 to 3 ms for 50,000, 1 to 4% of such a window's call, and in
-- proportion for fewer).  With fewer rows, or when
-- max_parallel_workers_per_gather is 0 (then nothing is probed and the
-- setting is not read), the window goes through
-- regime_prototype_compute_serial: the same function with
-- max_parallel_workers_per_gather = 0.  Its 8 parts, their order and every
-- addition are those of the parallel path, so the results are the same, bit
-- for bit, as they already were serially and in parallel.  Short windows
-- (one statement, generic plans, no worker) and the stored bucket sums are
-- unchanged: the stored path's scans are ordinary statements, planned for
-- the window's estimated rows, and PostgreSQL keeps workers off its small
-- windows by itself (measured: the same times with and without workers from
-- 11 to 29 years).
--
-- Runs with search_path set by the migration; every function pins it.

-- Whether a window has at least regime_pg.parallel_min_rows rows (a
-- setting; unset or empty: 50000; 0: any window), the fewest for which a
-- window of 4096 days or more is computed with parallel workers (when
-- PostgreSQL's own settings allow them).  An index scan that stops at that
-- row, itself without workers, whatever the caller's settings.
CREATE FUNCTION regime_window_repays_workers(p_region text, p_start date, p_end date)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET max_parallel_workers_per_gather = 0
AS $$
DECLARE
    setting  constant text := current_setting('regime_pg.parallel_min_rows', true);
    min_rows integer := 50000;
BEGIN
    IF setting <> '' THEN
        IF setting !~ '^[0-9]{1,9}$' THEN
            RAISE EXCEPTION 'regime_pg.parallel_min_rows must be a whole number of rows from 0 to 999999999, got %',
                    quote_literal(setting)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'RESET regime_pg.parallel_min_rows gives the default, 50000.';
        END IF;
        min_rows := setting::integer;
    END IF;
    RETURN min_rows = 0
           OR EXISTS (SELECT FROM regimes AS r
                       WHERE r.region = p_region
                         AND r.as_of_date BETWEEN p_start AND p_end
                      OFFSET min_rows - 1);
END
$$;

COMMENT ON FUNCTION regime_window_repays_workers(text, date, date) IS
    'regime-pg: whether a window has regime_pg.parallel_min_rows rows, enough for parallel workers';

-- regime_prototype_compute for a window of 4096 days or more with too few
-- rows to repay parallel workers: planned for its actual bounds, as
-- regime_prototype_compute_custom_plans is, without workers.
CREATE FUNCTION regime_prototype_compute_serial(p_region text, p_label text,
                                                p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan
SET max_parallel_workers_per_gather = 0
RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);

COMMENT ON FUNCTION regime_prototype_compute_serial(text, text, date, date) IS
    'regime-pg: regime_prototype_compute planned for the actual window, without parallel workers';

-- The prototype of one window: on the calendar grid while stored bucket
-- sums are enabled; else short windows in one statement, long ones in 8
-- parts, with parallel workers when they have regime_parallel_min_rows()
-- rows or more.
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
    IF p_end - p_start < 4096 THEN
        RETURN regime_prototype_compute(p_region, p_label, p_start, p_end);
    END IF;
    -- Workers where they may start, for a window with the rows to repay them.
    IF current_setting('max_parallel_workers_per_gather')::integer > 0 THEN
        IF regime_window_repays_workers(p_region, p_start, p_end) THEN
            RETURN regime_prototype_compute_custom_plans(p_region, p_label, p_start, p_end);
        END IF;
    END IF;
    RETURN regime_prototype_compute_serial(p_region, p_label, p_start, p_end);
END
$$;
