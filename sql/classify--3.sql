-- regime-pg: classification, version 3: classify_regimes for sets of more
-- than 50 prototypes.
--
-- Replaces regime_classify_query of classify--2.sql: same signature and
-- flags, and the same statement but for the distances column of a set of
-- more than 50 prototypes.  Its comment and every other function stay
-- those of classify--2.sql and classify--1.sql.
--
-- Why: version 2's statement built the distances column with one
-- jsonb_build_object($4[1], c.d1, ..., $4[k], c.dk), two arguments per
-- prototype, and PostgreSQL passes at most 100 arguments to a function:
-- classify_regimes (and regime-pg timeline --set) failed with SQLSTATE
-- 54023 for a set of 51 or more prototypes, where version 1 works.
-- classify_regime_labels, without that column, was not affected.
--
-- How: the pairs go to jsonb_build_object 50 at a time, and || (jsonb
-- object concatenation) joins the objects: the string_agg that lists the
-- pairs puts ") || jsonb_build_object(" instead of ", " before pair 51,
-- 101, ... (nothing else in the function changes).  The labels of a set are
-- distinct and jsonb keeps its keys sorted, so the value is the jsonb one
-- call builds, with the same float8 to jsonb conversion of each distance
-- (extra_float_digits pinned to 1 by classify_regimes), and so the same
-- jsonb and text as version 1.  For up to 50 prototypes there is one call
-- and the statement is version 2's, character for character: same plans,
-- same cost.  The statement of classify_regime_labels is version 2's for
-- any number of prototypes.
--
-- Runs with search_path set by the migration; every function pins it.

-- The statement classify_regimes and classify_regime_labels run for a set
-- of n_prototypes prototypes.  byte_order lists the positions
-- (1..n_prototypes) of the labels in byte order; deduplicate reads
-- regime_embeddings_latest instead of regimes; absorb adds the min_duration
-- rule; with_distances adds the distances column (classify_regimes) or
-- leaves it out (classify_regime_labels).  Parameters of the statement: $1
-- region, $2 start date, $3 end date, $4 labels (text[]), $5 centres
-- (vector[], same order), $6 temperature, $7 min_duration.  The distances
-- column is one jsonb_build_object of up to 50 pairs, or several joined
-- with || for more prototypes.
CREATE OR REPLACE FUNCTION regime_classify_query(n_prototypes integer, byte_order integer[],
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
    pairs     text;  -- $4[1], c.d1, ..., $4[50], c.d50) || jsonb_build_object($4[51], ...
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
    -- A function takes at most 100 arguments: pair 51, 101, ... starts a new
    -- jsonb_build_object, joined to the previous one by || (the delimiter
    -- string_agg puts before each value but the first).  The labels are
    -- distinct and jsonb sorts its keys, so the result is the jsonb one call
    -- would build; up to 50 prototypes the text is one call, as before.
    SELECT string_agg(format('r.embedding_vector <-> $5[%s] AS d%s', i, i), ', ' ORDER BY i),
           'least(' || string_agg(format('d.d%s', i), ', ' ORDER BY i) || ')',
           string_agg(format('exp(greatest((c.m - c.d%s) / $6, -700))', i), ' + ' ORDER BY i),
           string_agg(format('$4[%s], c.d%s', i, i),
                      CASE WHEN i % 50 = 1 THEN ') || jsonb_build_object(' ELSE ', ' END
                      ORDER BY i)
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
