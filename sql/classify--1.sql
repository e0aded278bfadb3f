-- regime-pg: classification with a saved prototype set, the engine's way.
--
--   SELECT * FROM classify_regime(<embedding>, 'us-2018-v1');
--   SELECT * FROM classify_regimes('US', '2000-01-01', '2018-12-31', 'us-2018-v1');
--   SELECT * FROM classify_regimes('US', '2000-01-01', '2018-12-31', 'us-2018-v1', min_duration => 5);
--   SELECT * FROM regime_centroid_series('US', '2018-01-01', '2018-12-31', 20, 'us-2018-v1');
--
-- The semantics of the Regime Engine's NumericRegimeModel:
--   * distance: Euclidean (L2) from the embedding to each prototype centre,
--     pgvector's <->, which sums the squared differences in float32 and
--     returns the square root as double precision (about 1e-7 relative to
--     a float64 computation of the same float32 values);
--   * label: the nearest prototype; of prototypes at the same distance, the
--     first label in byte order (COLLATE "C", as Python's sorted());
--   * confidence: the softmax of -distance / temperature over the set's
--     prototypes, shifted by the smallest distance for stability, taken at
--     the winning prototype: 1 / sum_k exp(-(d_k - d_min) / temperature).
--   * distances: jsonb, label -> distance, each the shortest decimal that
--     reads back to the same double (extra_float_digits is pinned to 1).
--
-- Errors: an unknown set raises undefined_object (42704) with TABLE
-- regime_prototype_sets; a set saved for another region than the one asked
-- raises invalid_parameter_value (22023) with TABLE regime_prototype_sets,
-- COLUMN region; an embedding of another dimension than the set's raises
-- data_exception (22000); region and window errors are those of
-- compute_regime_prototype (TABLE regimes).  A NULL embedding is no error
-- and no label: classify_regime returns one row of NULLs, and
-- classify_regimes has no row for a date without a usable embedding.
--
-- Runs with search_path set by the migration; every function pins it.

-- Raise unless saved set p_set is of region p_region.
CREATE FUNCTION regime_check_prototype_set_region(p_set regime_prototype_sets, p_region text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_set.region IS DISTINCT FROM p_region THEN
        RAISE EXCEPTION 'prototype set % was saved for region %, not for region %',
                quote_literal(p_set.name), quote_literal(p_set.region), quote_literal(p_region)
            USING ERRCODE = 'invalid_parameter_value',
                  TABLE = 'regime_prototype_sets', COLUMN = 'region',
                  HINT = 'Classify a region with a set saved for that region.';
    END IF;
END
$$;

-- Raise unless a positive count of dates (p_what names the argument).
CREATE FUNCTION regime_check_date_count(p_value integer, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_value < 1 THEN
        RAISE EXCEPTION '% must be at least 1 (a number of dates), got %', p_what, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The classification from one embedding's distances to the prototypes
-- (labels and distances in the same order) at temperature.
CREATE FUNCTION regime_classification(prototype_labels text[],
                                      prototype_distances double precision[],
                                      softmax_temperature double precision,
                                      OUT label text,
                                      OUT confidence double precision,
                                      OUT distances jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET extra_float_digits = 1
AS $$
    SELECT (SELECT x.label
              FROM unnest($1, $2) AS x(label, distance)
             ORDER BY x.distance, x.label COLLATE "C"
             LIMIT 1),
           (SELECT 1 / sum(CASE WHEN y.z > 700 THEN 0 ELSE exp(-y.z) END)
              FROM (SELECT (x.distance - min(x.distance) OVER ()) / $3 AS z
                      FROM unnest($2) AS x(distance)) AS y),
           (SELECT jsonb_object_agg(x.label, x.distance)
              FROM unnest($1, $2) AS x(label, distance))
$$;

-- Classify one embedding with saved set set_name.
CREATE FUNCTION classify_regime(embedding vector, set_name text)
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
    RETURN QUERY
        SELECT c.label, c.confidence, c.distances
          FROM (SELECT array_agg(m.label ORDER BY m.label) AS labels,
                       array_agg(p_embedding <-> m.center ORDER BY m.label) AS distances
                  FROM regime_prototype_set_members AS m
                 WHERE m.set_name = chosen.name) AS a
         CROSS JOIN LATERAL regime_classification(a.labels, a.distances, chosen.temperature) AS c;
END
$$;

COMMENT ON FUNCTION classify_regime(vector, text) IS
    'regime-pg: nearest prototype of a saved set, softmax confidence and distances for one embedding';

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
CREATE FUNCTION classify_regimes(region text, start_date date, end_date date, set_name text,
                                 min_duration integer DEFAULT 1)
RETURNS TABLE (
    as_of_date date,
    label      text,
    confidence double precision,
    distances  jsonb,
    raw_label  text
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    p_region       ALIAS FOR $1;
    p_start        ALIAS FOR $2;
    p_end          ALIAS FOR $3;
    p_min_duration ALIAS FOR $5;
    chosen         regime_prototype_sets;
BEGIN
    chosen := regime_prototype_set($4);
    PERFORM regime_check_region(p_region);
    PERFORM regime_check_window(p_region, NULL, p_start, p_end);
    PERFORM regime_check_prototype_set_region(chosen, p_region);
    PERFORM regime_check_date_count(p_min_duration, 'min_duration');

    RETURN QUERY
        WITH usable AS (
            SELECT e.as_of_date, e.embedding_vector
              FROM regime_embeddings_latest AS e
             WHERE e.region = p_region
               AND e.as_of_date BETWEEN p_start AND p_end
               AND e.embedding_vector IS NOT NULL
        ), classified AS (
            SELECT u.as_of_date, c.label AS raw_label, c.confidence, c.distances
              FROM usable AS u
             CROSS JOIN LATERAL (
                       SELECT array_agg(m.label ORDER BY m.label) AS labels,
                              array_agg(u.embedding_vector <-> m.center ORDER BY m.label) AS distances
                         FROM regime_prototype_set_members AS m
                        WHERE m.set_name = chosen.name) AS a
             CROSS JOIN LATERAL regime_classification(a.labels, a.distances, chosen.temperature) AS c
        ), runs AS (
            SELECT k.*,
                   count(*) OVER (PARTITION BY k.raw_label, k.run_key) AS run_length
              FROM (SELECT c.*,
                           row_number() OVER (ORDER BY c.as_of_date)
                           - row_number() OVER (PARTITION BY c.raw_label ORDER BY c.as_of_date)
                               AS run_key
                      FROM classified AS c) AS k
        ), held AS (
            SELECT r.*,
                   count(*) FILTER (WHERE r.run_length >= p_min_duration)
                       OVER (ORDER BY r.as_of_date) AS long_rows_so_far
              FROM runs AS r
        )
        SELECT h.as_of_date,
               CASE WHEN h.run_length >= p_min_duration THEN h.raw_label
                    WHEN h.long_rows_so_far > 0
                        THEN first_value(h.raw_label) OVER (PARTITION BY h.long_rows_so_far
                                                            ORDER BY h.as_of_date)
                    ELSE coalesce((SELECT r.raw_label
                                     FROM runs AS r
                                    WHERE r.run_length >= p_min_duration
                                    ORDER BY r.as_of_date
                                    LIMIT 1),
                                  h.raw_label)
               END,
               h.confidence, h.distances, h.raw_label
          FROM held AS h
         ORDER BY h.as_of_date;
END
$$;

COMMENT ON FUNCTION classify_regimes(text, date, date, text, integer) IS
    'regime-pg: classification of every date of a region''s window with a saved set';

-- For each date of region in [start_date, end_date] with a usable
-- embedding: the centroid of the trailing window_days dates with usable
-- embeddings (the date itself included; the window may reach before
-- start_date, and n_dates < window_days only where the region's history is
-- shorter), and its distance to each prototype of set_name.
CREATE FUNCTION regime_centroid_series(region text, start_date date, end_date date,
                                       window_days integer, set_name text)
RETURNS TABLE (
    as_of_date date,
    n_dates    integer,
    center     vector(384),
    distances  jsonb
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET extra_float_digits = 1
AS $$
#variable_conflict use_column
DECLARE
    p_region      ALIAS FOR $1;
    p_start       ALIAS FOR $2;
    p_end         ALIAS FOR $3;
    p_window_days ALIAS FOR $4;
    chosen        regime_prototype_sets;
    first_needed  date;
BEGIN
    chosen := regime_prototype_set($5);
    PERFORM regime_check_region(p_region);
    PERFORM regime_check_window(p_region, NULL, p_start, p_end);
    PERFORM regime_check_prototype_set_region(chosen, p_region);
    PERFORM regime_check_date_count(p_window_days, 'window_days');

    -- The earliest date the first window needs.
    SELECT min(b.as_of_date) INTO first_needed
      FROM (SELECT e.as_of_date
              FROM regime_embeddings_latest AS e
             WHERE e.region = p_region
               AND e.as_of_date < p_start
               AND e.embedding_vector IS NOT NULL
             ORDER BY e.as_of_date DESC
             LIMIT p_window_days - 1) AS b;

    RETURN QUERY
        WITH usable AS (
            SELECT e.as_of_date, e.embedding_vector
              FROM regime_embeddings_latest AS e
             WHERE e.region = p_region
               AND e.as_of_date BETWEEN coalesce(first_needed, p_start) AND p_end
               AND e.embedding_vector IS NOT NULL
        ), rolling AS (
            SELECT u.as_of_date,
                   count(*) OVER w AS n_dates,
                   avg(u.embedding_vector) OVER w AS center
              FROM usable AS u
            WINDOW w AS (ORDER BY u.as_of_date ROWS BETWEEN p_window_days - 1 PRECEDING AND CURRENT ROW)
        )
        SELECT t.as_of_date, t.n_dates::integer, t.center::vector(384),
               (SELECT jsonb_object_agg(m.label, t.center <-> m.center)
                  FROM regime_prototype_set_members AS m
                 WHERE m.set_name = chosen.name)
          FROM rolling AS t
         WHERE t.as_of_date >= p_start
         ORDER BY t.as_of_date;
END
$$;

COMMENT ON FUNCTION regime_centroid_series(text, date, date, integer, text) IS
    'regime-pg: trailing-window centroid of a region''s embeddings and its distance to each prototype of a set';
