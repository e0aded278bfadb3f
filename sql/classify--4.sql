-- regime-pg: classification, version 4: distances that overflow float32 are
-- an error in classify_regime, classify_regimes and classify_regime_labels
-- alike (finding F18 in docs/hardening.md).
--
-- Replaces classify_regime of classify--1.sql and regime_classify_query of
-- classify--3.sql (same signatures, flags, settings; their comments stay),
-- and adds regime_distance_overflow, the error both raise.  Every other
-- function stays that of its latest version.
--
-- Why: pgvector's <-> sums the squared differences in float32, so an
-- embedding with values of about 1e18 or more (far outside any encoder's
-- range, but a valid vector) is at distance Infinity from the prototypes.
-- When the nearest distance d_min is infinite, the confidence is undefined
-- (every (d_k - d_min) is Infinity - Infinity, NaN): classify_regime
-- (regime_classification) raised "division by zero" (22012), and the
-- statement of classify_regimes and classify_regime_labels (classify--2.sql)
-- returned a confidence of NaN, with a label.
--
-- Now both raise numeric_value_out_of_range (22003), from one function,
-- regime_distance_overflow, whose message names the overflow and the
-- embedding: its region and date in classify_regimes(_labels), the set in
-- classify_regime.  A distance is a float32 sum's square root, never NaN,
-- so "d_min < Infinity" is false exactly then.  Where only some distances
-- are infinite the nearest is finite and the result is as before: those
-- prototypes count as infinitely far (a softmax term of 0, or e^-700 in
-- version 2's sum: the same confidence, bit for bit).
--
-- Cost: classify_regimes(_labels) compare one column per row (c.m, the
-- nearest distance the statement already has) with Infinity; the error
-- function is called only for a row that overflows.  classify_regime checks
-- the smallest distance of its one embedding in PL/pgSQL, then calls
-- regime_classification as version 1 did, with the same arrays: the same
-- results, bit for bit.
--
-- Runs with search_path set by the migration; every function pins it.

-- Raise the error of an embedding whose nearest prototype is at an infinite
-- distance: region and date name it in classify_regimes (the statement
-- passes its row's date, so the call is never folded into a constant), the
-- set in classify_regime; NULL leaves a part out.  Declared to return
-- double precision, to stand for a confidence in a CASE; it never returns.
-- STABLE, not IMMUTABLE: the planner pre-evaluates an immutable function
-- whose arguments are all constants, which would raise where the CASE
-- never reaches the call.
CREATE FUNCTION regime_distance_overflow(p_region text, p_as_of_date date, p_set_name text)
RETURNS double precision
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'distance overflows float32: % is at an infinite distance from every prototype%',
            CASE WHEN p_as_of_date IS NULL THEN 'the embedding'
                 ELSE 'the embedding of region ' || quote_literal(p_region) || ' on ' || p_as_of_date
            END,
            CASE WHEN p_set_name IS NULL THEN ''
                 ELSE ' of set ' || left(quote_literal(p_set_name), 80)
            END
        USING ERRCODE = 'numeric_value_out_of_range',
              DETAIL = 'pgvector sums the squared differences in float32, which overflows above '
                       'about 3.4e38 (values some 1e18 apart); the confidence is then undefined.',
              HINT = 'Such values are far outside what an encoder writes: check that embedding.';
END
$$;

COMMENT ON FUNCTION regime_distance_overflow(text, date, text) IS
    'regime-pg: the error of an embedding at an infinite (float32 overflow) distance from every prototype';

-- Classify one embedding with saved set set_name.
CREATE OR REPLACE FUNCTION classify_regime(embedding vector, set_name text)
RETURNS TABLE (
    label      text,
    confidence double precision,
    distances  jsonb
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    p_embedding ALIAS FOR $1;
    chosen      regime_prototype_sets := regime_prototype_set($2);
    by_label    text[];              -- the labels, in version 1's order
    to_each     double precision[];  -- the distance to each, same order
BEGIN
    IF p_embedding IS NULL THEN
        -- No embedding, no label: one row of NULLs.
        RETURN NEXT;
        RETURN;
    END IF;
    IF vector_dims(p_embedding) <> chosen.embedding_dim THEN
        RAISE EXCEPTION 'embedding has % dimensions; prototype set % has %',
                vector_dims(p_embedding), quote_literal(chosen.name), chosen.embedding_dim
            USING ERRCODE = 'data_exception';
    END IF;
    SELECT array_agg(m.label ORDER BY m.label), array_agg(p_embedding <-> m.center ORDER BY m.label)
      INTO by_label, to_each
      FROM regime_prototype_set_members AS m
     WHERE m.set_name = chosen.name;
    -- NULL (a set without members, only inside the transaction saving it) is no overflow.
    IF (SELECT min(d) FROM unnest(to_each) AS d) = 'Infinity' THEN
        PERFORM regime_distance_overflow(NULL, NULL, chosen.name);
    END IF;
    RETURN QUERY
        SELECT c.label, c.confidence, c.distances
          FROM regime_classification(by_label, to_each, chosen.temperature) AS c;
END
$$;

-- The statement classify_regimes and classify_regime_labels run for a set
-- of n_prototypes prototypes.  byte_order lists the positions
-- (1..n_prototypes) of the labels in byte order; deduplicate reads
-- regime_embeddings_latest instead of regimes; absorb adds the min_duration
-- rule; with_distances adds the distances column (classify_regimes) or
-- leaves it out (classify_regime_labels).  Parameters of the statement: $1
-- region, $2 start date, $3 end date, $4 labels (text[]), $5 centres
-- (vector[], same order), $6 temperature, $7 min_duration.  The distances
-- column is one jsonb_build_object of up to 50 pairs, or several joined
-- with || for more prototypes.  A row whose nearest distance is infinite
-- (float32 overflow) raises regime_distance_overflow's error.
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
    -- The confidence, unless the nearest distance is infinite (see regime_distance_overflow).
    RETURN 'SELECT c.as_of_date, ' || label || ','
        || ' CASE WHEN c.m < ''Infinity'' THEN 1 / (' || terms || ')'
        || ' ELSE regime_distance_overflow($1, c.as_of_date, NULL) END,'
        || CASE WHEN with_distances THEN ' jsonb_build_object(' || pairs || '),' ELSE '' END
        || '       $4[c.nearest]'
        || '  FROM (' || result || ') AS c'
        || ' ORDER BY c.as_of_date';
END
$$;
