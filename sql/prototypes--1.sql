-- regime-pg: regime prototypes, the mean embedding of a labelled date
-- window, computed where the embeddings are.
--
--   SELECT * FROM compute_regime_prototype('US', '2018-01-01', '2018-12-31');
--   SELECT * FROM compute_regime_prototypes('US',
--       '{"NEUTRAL": {"start_date": "2018-01-01", "end_date": "2018-12-31"}}');
--   SELECT regime_prototypes_json('US', '{"NEUTRAL": {...}, "CRISIS": {...}}');
--
-- Rules shared by every function here:
--   * Each (region, as_of_date) counts once: of several rows the one with the
--     latest created_at wins (ties: the greatest regime_record_id).
--   * A date whose winning row has no usable embedding (NULL BYTEA, or bytes
--     the trigger could not convert) is skipped and counted in n_skipped.
--   * Errors carry a SQLSTATE, and for window and region errors the column
--     they concern (regimes.as_of_date, regimes.region) in their diagnostics.
--
-- Runs with search_path set by the migration; every function pins it.

-- One computed prototype: what compute_regime_prototype returns.
CREATE TYPE regime_prototype AS (
    region      text,
    start_date  date,
    end_date    date,
    n_dates     integer,
    n_skipped   integer,
    center      vector(384),
    l2_norm     double precision,
    dispersion  double precision,
    first_date  date,
    last_date   date
);

COMMENT ON TYPE regime_prototype IS
    'regime-pg: a windowed centroid of regime embeddings and its statistics';

-- The engine's rows, one per (region, as_of_date): the latest created_at
-- wins.  Filters on region and as_of_date are pushed below the DISTINCT ON.
CREATE VIEW regime_embeddings_latest WITH (security_invoker = true) AS
    SELECT DISTINCT ON (r.region, r.as_of_date)
           r.region, r.as_of_date, r.regime_record_id, r.created_at, r.embedding_vector
      FROM regimes AS r
     ORDER BY r.region, r.as_of_date, r.created_at DESC, r.regime_record_id DESC;

COMMENT ON VIEW regime_embeddings_latest IS
    'regime-pg: one row per (region, as_of_date), the latest created_at winning';

-- The label rule: upper case letters, digits and underscores, starting
-- with a letter, at most 32 characters (the width of regimes.regime_label).
CREATE FUNCTION regime_label_is_valid(label text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN label ~ '^[A-Z][A-Z0-9_]{0,31}$';

COMMENT ON FUNCTION regime_label_is_valid(text) IS
    'regime-pg: the label rule, ^[A-Z][A-Z0-9_]{0,31}$';

-- Raise unless region names rows of regimes.
CREATE FUNCTION regime_check_region(p_region text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_region IS NULL THEN
        RAISE EXCEPTION 'region must not be NULL'
            USING ERRCODE = 'null_value_not_allowed', TABLE = 'regimes', COLUMN = 'region';
    END IF;
    IF length(p_region) > 32 THEN
        RAISE EXCEPTION 'region is % characters long; regions have at most 32', length(p_region)
            USING ERRCODE = 'string_data_right_truncation', TABLE = 'regimes', COLUMN = 'region';
    END IF;
    IF NOT EXISTS (SELECT FROM regimes AS r WHERE r.region = p_region) THEN
        RAISE EXCEPTION 'unknown region %: no rows in regimes', quote_literal(p_region)
            USING ERRCODE = 'undefined_object', TABLE = 'regimes', COLUMN = 'region',
                  HINT = 'Regions are case-sensitive, as the Regime Engine writes them.';
    END IF;
END
$$;

-- How messages name a window's owner: region 'US', label CRISIS.
CREATE FUNCTION regime_window_name(p_region text, p_label text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN 'region ' || quote_literal(p_region)
       || CASE WHEN p_label IS NULL THEN '' ELSE ', label ' || p_label END;

-- Raise unless [p_start, p_end] is a finite, ordered window.
CREATE FUNCTION regime_check_window(p_region text, p_label text, p_start date, p_end date)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    what text := regime_window_name(p_region, p_label);
BEGIN
    IF p_start IS NULL OR p_end IS NULL THEN
        RAISE EXCEPTION 'window of % needs both start_date and end_date', what
            USING ERRCODE = 'null_value_not_allowed', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
    IF NOT (isfinite(p_start) AND isfinite(p_end)) THEN
        RAISE EXCEPTION 'window of % must have finite dates, got %..%', what, p_start, p_end
            USING ERRCODE = 'datetime_field_overflow', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
    IF p_end < p_start THEN
        RAISE EXCEPTION 'window of % is reversed: end_date % is before start_date %',
                what, p_end, p_start
            USING ERRCODE = 'invalid_parameter_value', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
END
$$;

-- The prototype of one window.  p_label only names the window in messages.
CREATE FUNCTION regime_prototype_for_window(p_region text, p_label text,
                                            p_start date, p_end date)
RETURNS regime_prototype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    result regime_prototype;
BEGIN
    PERFORM regime_check_region(p_region);
    PERFORM regime_check_window(p_region, p_label, p_start, p_end);

    SELECT p_region, p_start, p_end,
           count(e.embedding_vector),
           count(*) - count(e.embedding_vector),
           avg(e.embedding_vector),
           NULL, NULL,
           min(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL),
           max(e.as_of_date) FILTER (WHERE e.embedding_vector IS NOT NULL)
      INTO result
      FROM regime_embeddings_latest AS e
     WHERE e.region = p_region
       AND e.as_of_date BETWEEN p_start AND p_end;

    IF result.n_dates = 0 THEN
        RAISE EXCEPTION 'no usable embedding for % in window %..% (% dates skipped)',
                regime_window_name(p_region, p_label), p_start, p_end, result.n_skipped
            USING ERRCODE = 'no_data_found', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;

    result.l2_norm := vector_norm(result.center);
    SELECT avg(e.embedding_vector <-> result.center)
      INTO result.dispersion
      FROM regime_embeddings_latest AS e
     WHERE e.region = p_region
       AND e.as_of_date BETWEEN p_start AND p_end
       AND e.embedding_vector IS NOT NULL;
    RETURN result;
END
$$;

-- The prototype of region over [start_date, end_date].
CREATE FUNCTION compute_regime_prototype(region text, start_date date, end_date date)
RETURNS regime_prototype
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN regime_prototype_for_window(region, NULL, start_date, end_date);

COMMENT ON FUNCTION compute_regime_prototype(text, date, date) IS
    'regime-pg: mean regime embedding of a region over a date window, with statistics';

-- Parse and check {"LABEL": {"start_date": "YYYY-MM-DD", "end_date": ...}}.
-- Every window is checked before any row is returned.
CREATE FUNCTION regime_windows_from_json(windows jsonb)
RETURNS TABLE (label text, start_date date, end_date date)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    expected constant text :=
        '{"LABEL": {"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}, ...}';
    item record;
    bound text;
    ymd integer[];
    parsed date[];
BEGIN
    IF windows IS NULL OR jsonb_typeof(windows) <> 'object' OR windows = '{}'::jsonb THEN
        RAISE EXCEPTION 'windows must be a non-empty JSON object %', expected
            USING ERRCODE = 'invalid_json_text';
    END IF;
    FOR item IN SELECT w.key, w.value FROM jsonb_each(windows) AS w ORDER BY w.key LOOP
        IF NOT regime_label_is_valid(item.key) THEN
            RAISE EXCEPTION 'label % does not follow the label rule', left(quote_literal(item.key), 80)
                USING ERRCODE = 'invalid_text_representation',
                      HINT = 'Labels are 1 to 32 upper-case letters, digits or underscores, '
                             'starting with a letter, for example NEUTRAL or RISK_OFF.';
        END IF;
        IF jsonb_typeof(item.value) <> 'object'
           OR (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(item.value) AS k)
              IS DISTINCT FROM ARRAY['end_date', 'start_date'] THEN
            RAISE EXCEPTION 'window of label % must be {"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}, got %',
                    item.key, left(item.value::text, 80)
                USING ERRCODE = 'invalid_json_text';
        END IF;
        parsed := '{}';
        FOREACH bound IN ARRAY ARRAY['start_date', 'end_date'] LOOP
            IF jsonb_typeof(item.value -> bound) <> 'string'
               OR NOT (item.value ->> bound) ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
                RAISE EXCEPTION '% of label % must be a date as "YYYY-MM-DD", got %',
                        bound, item.key, left((item.value -> bound)::text, 80)
                    USING ERRCODE = 'invalid_datetime_format', TABLE = 'regimes', COLUMN = 'as_of_date';
            END IF;
            -- Checked by hand, not by a cast in an exception block: a parallel
            -- worker cannot start the subtransaction such a block needs.
            ymd := string_to_array(item.value ->> bound, '-')::integer[];
            IF (CASE WHEN ymd[1] < 1 OR ymd[2] NOT BETWEEN 1 AND 12 OR ymd[3] < 1 THEN true
                     ELSE ymd[3] > extract(day FROM make_date(ymd[1], ymd[2], 1)
                                                    + interval '1 month - 1 day')
                END) THEN
                RAISE EXCEPTION '% of label % is not a calendar date: %',
                        bound, item.key, item.value ->> bound
                    USING ERRCODE = 'invalid_datetime_format', TABLE = 'regimes', COLUMN = 'as_of_date';
            END IF;
            parsed := parsed || make_date(ymd[1], ymd[2], ymd[3]);
        END LOOP;
        label := item.key;
        start_date := parsed[1];
        end_date := parsed[2];
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION regime_windows_from_json(jsonb) IS
    'regime-pg: checked (label, start_date, end_date) rows of a windows document';

-- One prototype per labelled window, from one statement.
CREATE FUNCTION compute_regime_prototypes(region text, windows jsonb)
RETURNS TABLE (
    label       text,
    region      text,
    start_date  date,
    end_date    date,
    n_dates     integer,
    n_skipped   integer,
    center      vector(384),
    l2_norm     double precision,
    dispersion  double precision,
    first_date  date,
    last_date   date
)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT w.label, p.*
      FROM regime_windows_from_json($2) AS w,
           LATERAL regime_prototype_for_window($1, w.label, w.start_date, w.end_date) AS p
     ORDER BY w.label
$$;

COMMENT ON FUNCTION compute_regime_prototypes(text, jsonb) IS
    'regime-pg: one prototype per labelled window of a region';

-- The prototype document, as the calibration script wrote it:
-- {"embedding_dim": 384, "prototypes": {"LABEL": {"center": [...],
--  "l2_norm": ..., "window": {"end_date": ..., "start_date": ...}, ...}},
--  "region": ...}
CREATE FUNCTION regime_prototypes_json(region text, windows jsonb)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
-- float4 to JSON goes through text: 1 gives the shortest exact digits,
-- whatever the session set (0 would round centres to 6 digits).
SET extra_float_digits = 1
AS $$
    SELECT jsonb_build_object(
               'embedding_dim', regime_embedding_dim(),
               'prototypes', jsonb_object_agg(p.label, jsonb_build_object(
                   'center', to_jsonb(p.center::real[]),
                   'l2_norm', p.l2_norm,
                   'window', jsonb_build_object('start_date', p.start_date,
                                                'end_date', p.end_date),
                   'n_dates', p.n_dates,
                   'n_skipped', p.n_skipped,
                   'dispersion', p.dispersion,
                   'first_date', p.first_date,
                   'last_date', p.last_date)),
               'region', $1)
      FROM compute_regime_prototypes($1, $2) AS p
$$;

COMMENT ON FUNCTION regime_prototypes_json(text, jsonb) IS
    'regime-pg: the prototype document (JSON) of a region''s labelled windows';
