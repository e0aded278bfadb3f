-- regime-pg: classification, version 2: classify_regimes set-based.
--
-- Replaces classify_regimes of classify--1.sql (same signature, result
-- columns, values, order and errors) and adds classify_regime_labels (the
-- same rows without the distances, for many dates), regime_classify_prepare
-- (the checks and what the statement binds) and regime_classify_query (the
-- text of the one statement both run).  classify_regime,
-- regime_classification and regime_centroid_series stay those of
-- classify--1.sql.
--
-- Why: version 1 calls the SQL function regime_classification for every
-- date (array_agg and unnest of the set's members per row) and finds runs
-- with windows partitioned by label, which sort every row twice: about
-- 18 us a row.  pgvector computes the four distances of a row in under 1 us.
--
-- How: the set's labels, centres (in the order of version 1: by label) and
-- temperature are read once and bound as parameters of one statement
-- (EXECUTE ... USING) that regime_classify_query writes for that number of
-- prototypes: one column per prototype, embedding_vector <-> $5[i] (the
-- centres are constants of the plan), the nearest with CASE over least(),
-- the confidence in one expression, the distances with jsonb_build_object.
-- Only integers (column indexes, the number of prototypes) are formatted
-- into its text; labels, centres, region, dates, temperature and
-- min_duration are always parameters.
--
-- What stays identical, bit for bit:
--   * distances: the same <-> of the same vectors;
--   * nearest: least() of the distances, then the first prototype in byte
--     order (COLLATE "C") at that distance, as version 1's ORDER BY
--     distance, label COLLATE "C";
--   * confidence: 1 / (t_1 + ... + t_k), added left to right in the order
--     of version 1's sum() (labels by the database's collation), with
--     t_i = exp(greatest(-z_i, -700)), z_i = (d_i - d_min) / temperature.
--     Version 1 takes t_i = 0 where z_i > 700; e^-700 (about 1e-304) there
--     gives the same sum, bit for bit: the nearest prototype's term is
--     exp(0) = 1, so the sum is at least 1, and such terms, together far
--     below half a unit in the last place of 1, vanish in it.  (The bound
--     keeps exp() from underflowing, which PostgreSQL reports as an error.)
--   * distances jsonb: the same float8 to jsonb conversion, with
--     extra_float_digits pinned to 1;
--   * the dedup rule: the latest created_at wins (ties: the greatest
--     regime_record_id); a date whose latest row has no usable embedding
--     has no row.  When no date of the window has two rows in regimes
--     (one index-only pass: count(*) against count(DISTINCT as_of_date)),
--     every row is its date's latest and regimes is read directly;
--     otherwise through regime_embeddings_latest, as version 1.
--   * min_duration: the rule of version 1 (see classify--1.sql), computed
--     in date order without sorting by label: a run starts where the
--     nearest label changes (lag), a row's position in its run is its row
--     number minus that of the run's first row (a running max), and its run
--     has at least min_duration rows when the row min_duration - position
--     rows ahead (lead) is in the same run.  A short row takes the label of
--     the last row of a long run before it (a running max of row number and
--     label index), and rows before the first long run that of the first
--     long row (a min over all rows).
--
-- Plans: one statement; rows are read in date order (index range scan), so
-- no step sorts them; parallel workers can compute distances where the
-- planner finds it worth it (RETURN QUERY supports parallel plans).
--
-- Runs with search_path set by the migration; every function pins it.

-- The statement classify_regimes and classify_regime_labels run for a set
-- of n_prototypes prototypes.  byte_order lists the positions
-- (1..n_prototypes) of the labels in byte order; deduplicate reads
-- regime_embeddings_latest instead of regimes; absorb adds the min_duration
-- rule; with_distances adds the distances column (classify_regimes) or
-- leaves it out (classify_regime_labels).  Parameters of the statement: $1
-- region, $2 start date, $3 end date, $4 labels (text[]), $5 centres
-- (vector[], same order), $6 temperature, $7 min_duration.
CREATE FUNCTION regime_classify_query(n_prototypes integer, byte_order integer[],
                                      deduplicate boolean, absorb boolean,
                                      with_distances boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    distances text;  -- r.embedding_vector <-> $5[1] AS d1, ...
    nearest   text;  -- least(d.d1, ...)
    pick      text;  -- WHEN d.d2 THEN 2 ... (byte order)
    terms     text;  -- the confidence's terms, t_1 + ... + t_k
    pairs     text;  -- $4[1], c.d1, ...
    source    text;
    result    text;
    label     text;
BEGIN
    IF n_prototypes IS NULL OR n_prototypes < 1
       OR byte_order IS NULL OR cardinality(byte_order) <> n_prototypes
       OR with_distances IS NULL THEN
        RAISE EXCEPTION 'regime_classify_query needs n_prototypes >= 1, their byte order '
                        'and with_distances'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT string_agg(format('r.embedding_vector <-> $5[%s] AS d%s', i, i), ', ' ORDER BY i),
           'least(' || string_agg(format('d.d%s', i), ', ' ORDER BY i) || ')',
           string_agg(format('exp(greatest((c.m - c.d%s) / $6, -700))', i), ' + ' ORDER BY i),
           string_agg(format('$4[%s], c.d%s', i, i), ', ' ORDER BY i)
      INTO distances, nearest, terms, pairs
      FROM generate_series(1, n_prototypes) AS i;
    SELECT string_agg(format('WHEN d.d%s THEN %s', b.i, b.i), ' ' ORDER BY b.n)
      INTO pick
      FROM unnest(byte_order) WITH ORDINALITY AS b(i, n);

    source := CASE WHEN deduplicate THEN 'regime_embeddings_latest' ELSE 'regimes' END;
    -- c: one row per usable date: its distances d1..dk, the smallest m and
    -- the position of the nearest label.
    result := 'SELECT d.*, ' || nearest || ' AS m, CASE ' || nearest || ' ' || pick || ' END AS nearest'
           || '  FROM (SELECT r.as_of_date, ' || distances
           || '          FROM ' || source || ' AS r'
           || '         WHERE r.region = $1'
           || '           AND r.as_of_date BETWEEN $2 AND $3'
           || '           AND r.embedding_vector IS NOT NULL'
           || '         ORDER BY r.as_of_date'
           || '        OFFSET 0) AS d'
           || ' ORDER BY d.as_of_date'
           || ' OFFSET 0';
    IF absorb THEN
        -- pos: the row's position in its run (1, 2, ...); the run has at
        -- least $7 rows when this row is at position $7 or later, or when a
        -- row of the next $7 - 1 is at position $7 (a later run cannot reach
        -- position $7 that soon).  k: rn * (n + 1) + nearest on the rows of
        -- long runs; held: k of the last long row so far, else of the first.
        result := 'SELECT l.*,'
               || '       coalesce(max(l.k) OVER (ORDER BY l.as_of_date ROWS UNBOUNDED PRECEDING),'
               || '                min(l.k) OVER ()) AS held'
               || '  FROM (SELECT p.*,'
               || '               CASE WHEN p.pos >= $7'
               || '                      OR count(*) FILTER (WHERE p.pos = $7)'
               || '                             OVER (ORDER BY p.as_of_date'
               || '                                   ROWS BETWEEN CURRENT ROW AND $7 - 1 FOLLOWING) > 0'
               || '                    THEN p.rn * ' || (n_prototypes + 1) || ' + p.nearest END AS k'
               || '          FROM (SELECT q.*,'
               || '                       q.rn + 1 - max(CASE WHEN q.starts THEN q.rn END)'
               || '                           OVER (ORDER BY q.as_of_date ROWS UNBOUNDED PRECEDING)'
               || '                           AS pos'
               || '                  FROM (SELECT c.*,'
               || '                               row_number() OVER w AS rn,'
               || '                               c.nearest IS DISTINCT FROM lag(c.nearest) OVER w'
               || '                                   AS starts'
               || '                          FROM (' || result || ') AS c'
               || '                        WINDOW w AS (ORDER BY c.as_of_date)) AS q) AS p) AS l';
        label := format('$4[coalesce((c.held %% %s)::integer, c.nearest)]', n_prototypes + 1);
    ELSE
        label := '$4[c.nearest]';
    END IF;
    RETURN 'SELECT c.as_of_date, ' || label || ', 1 / (' || terms || '),'
        || CASE WHEN with_distances THEN ' jsonb_build_object(' || pairs || '),' ELSE '' END
        || '       $4[c.nearest]'
        || '  FROM (' || result || ') AS c'
        || ' ORDER BY c.as_of_date';
END
$$;

COMMENT ON FUNCTION regime_classify_query(integer, integer[], boolean, boolean, boolean) IS
    'regime-pg: the statement classify_regimes(_labels) run for a set of that many prototypes';

-- What classify_regimes and classify_regime_labels run, once the checks of
-- version 1 have passed in their order: the statement for the set (written
-- by regime_classify_query) and the values it binds, $4 labels, $5 centres
-- and $6 temperature (in version 1's order: by label).
CREATE FUNCTION regime_classify_prepare(p_region text, p_start date, p_end date,
                                        p_set_name text, p_min_duration integer,
                                        p_with_distances boolean,
                                        OUT statement text, OUT labels text[],
                                        OUT centers vector[],
                                        OUT temperature double precision)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    chosen     regime_prototype_sets;
    byte_order integer[];
    duplicated boolean;
BEGIN
    chosen := regime_prototype_set(p_set_name);
    PERFORM regime_check_region(p_region);
    PERFORM regime_check_window(p_region, NULL, p_start, p_end);
    PERFORM regime_check_prototype_set_region(chosen, p_region);
    PERFORM regime_check_date_count(p_min_duration, 'min_duration');
    temperature := chosen.temperature;

    SELECT array_agg(m.label ORDER BY m.label), array_agg(m.center ORDER BY m.label)
      INTO labels, centers
      FROM regime_prototype_set_members AS m
     WHERE m.set_name = chosen.name;
    IF labels IS NULL THEN
        -- A set without members (only inside the transaction saving it):
        -- no label, as version 1.
        statement := 'SELECT e.as_of_date, NULL::text, NULL::double precision,'
                  || CASE WHEN p_with_distances THEN ' NULL::jsonb,' ELSE '' END
                  || '       NULL::text'
                  || '  FROM regime_embeddings_latest AS e'
                  || ' WHERE e.region = $1'
                  || '   AND e.as_of_date BETWEEN $2 AND $3'
                  || '   AND e.embedding_vector IS NOT NULL'
                  || ' ORDER BY e.as_of_date';
        RETURN;
    END IF;
    byte_order := ARRAY(SELECT u.i
                          FROM unnest(labels) WITH ORDINALITY AS u(label, i)
                         ORDER BY u.label COLLATE "C");

    -- Does a date of the window have two rows?  One pass over the index,
    -- whose dates come sorted: count(DISTINCT) needs no sort (PostgreSQL 16
    -- and later), at half the cost of grouping by date.
    duplicated := (SELECT count(*) <> count(DISTINCT r.as_of_date)
                     FROM regimes AS r
                    WHERE r.region = p_region
                      AND r.as_of_date BETWEEN p_start AND p_end);
    statement := regime_classify_query(cardinality(labels), byte_order, duplicated,
                                       p_min_duration > 1, p_with_distances);
END
$$;

COMMENT ON FUNCTION regime_classify_prepare(text, date, date, text, integer, boolean) IS
    'regime-pg: checks, then the statement and values classify_regimes(_labels) run';

-- Classify every date of region in [start_date, end_date] that has a
-- usable embedding (the dedup rule of compute_regime_prototype), in one
-- statement, ordered by date.
--
-- min_duration: a run (maximal sequence of consecutive rows, i.e. dates with
-- usable embeddings, of one nearest label) shorter than min_duration rows is
-- absorbed: its rows take the label of the last row before them that belongs
-- to a run of at least min_duration rows, and rows before the first such
-- run take that run's label.  The rule looks back only, as live use would
-- (apart from the rows before the first long run); without any long run
-- every label stays as it is.  raw_label is the nearest prototype before
-- absorption; confidence and distances are always those of raw_label.
CREATE OR REPLACE FUNCTION classify_regimes(region text, start_date date, end_date date,
                                            set_name text, min_duration integer DEFAULT 1)
RETURNS TABLE (
    as_of_date date,
    label      text,
    confidence double precision,
    distances  jsonb,
    raw_label  text
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET extra_float_digits = 1
AS $$
DECLARE
    prepared record;
BEGIN
    prepared := regime_classify_prepare($1, $2, $3, $4, $5, true);
    RETURN QUERY EXECUTE prepared.statement
        USING $1, $2, $3, prepared.labels, prepared.centers, prepared.temperature, $5;
END
$$;

-- The same rows without the distances: for classifying many dates, where
-- building a jsonb of distances for every row costs as much as the rest.
CREATE FUNCTION classify_regime_labels(region text, start_date date, end_date date,
                                       set_name text, min_duration integer DEFAULT 1)
RETURNS TABLE (
    as_of_date date,
    label      text,
    confidence double precision,
    raw_label  text
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    prepared record;
BEGIN
    prepared := regime_classify_prepare($1, $2, $3, $4, $5, false);
    RETURN QUERY EXECUTE prepared.statement
        USING $1, $2, $3, prepared.labels, prepared.centers, prepared.temperature, $5;
END
$$;

COMMENT ON FUNCTION classify_regime_labels(text, date, date, text, integer) IS
    'regime-pg: classify_regimes without the distances, for many dates';
