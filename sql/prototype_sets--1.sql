-- regime-pg: stored prototype sets, the models table.
--
--   SELECT * FROM save_regime_prototype_set('us-2018-v1', 'US',
--       '{"NEUTRAL": {"start_date": "2017-01-01", "end_date": "2017-12-31"},
--         "CRISIS": {"start_date": "2008-09-15", "end_date": "2009-03-09"}}');
--   SELECT * FROM save_regime_prototype_set('us-2018-v2', 'US', <windows>, temperature => NULL);
--   SELECT * FROM save_regime_prototype_set_from_document('us-file-v1', <document jsonb>, 2.5);
--   SELECT regime_prototype_set_json('us-2018-v1');
--   SELECT * FROM fit_regime_temperature('US', <windows>);
--   SELECT delete_regime_prototype_set('us-2018-v1');
--
-- Rules shared by everything here:
--   * A saved set never changes.  Its row and its members are written by
--     one transaction, the saving one; afterwards triggers reject every
--     UPDATE, every new member and every deletion of a single member
--     (SQLSTATE 55000).  A set goes whole: delete_regime_prototype_set, or
--     a DELETE of its row, removes its members with it.  A new version of a
--     set is a new name.
--   * Saving a name that exists raises unique_violation (23505) naming the
--     set; of concurrent saves of one name exactly one wins, the others
--     wait for it and then get 23505.
--   * An unknown set raises undefined_object (42704) with TABLE
--     regime_prototype_sets, COLUMN name in its diagnostics (an unknown
--     region has TABLE regimes).
--   * Set names: 1 to 64 letters, digits, '.', '_' or '-', starting with a
--     letter or digit (regime_prototype_set_name_is_valid).
--   * Functions that write floats into jsonb pin extra_float_digits = 1, so
--     each value is its shortest exact decimal whatever the session says.
--
-- The temperature.  Confidence is the softmax of -distance / temperature
-- over a set's prototypes.  fit_regime_temperature picks the temperature
-- that maximises the likelihood of each calibration window's own label for
-- the embeddings of that window (see the comment above
-- regime_temperature_fit for the bounds and the separable case);
-- save_regime_prototype_set(..., temperature => NULL) fits it and stores the
-- fit next to the set, all in the saving transaction.
--
-- Runs with search_path set by the migration; every function pins it.

-- The set name rule.
CREATE FUNCTION regime_prototype_set_name_is_valid(name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

COMMENT ON FUNCTION regime_prototype_set_name_is_valid(text) IS
    'regime-pg: the prototype set name rule, ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';

-- One row per saved set.
CREATE TABLE regime_prototype_sets (
    name              text PRIMARY KEY
                      CONSTRAINT regime_prototype_sets_name_rule
                      CHECK (regime_prototype_set_name_is_valid(name)),
    region            text NOT NULL
                      CONSTRAINT regime_prototype_sets_region_length
                      CHECK (length(region) BETWEEN 1 AND 32),
    encoder_model_id  text NOT NULL DEFAULT 'num-regime-core-v1',
    embedding_dim     integer NOT NULL
                      CONSTRAINT regime_prototype_sets_embedding_dim
                      CHECK (embedding_dim = 384),
    temperature       double precision NOT NULL
                      CONSTRAINT regime_prototype_sets_temperature
                      CHECK (temperature > 0 AND temperature < 'Infinity'),
    windows           jsonb NOT NULL,
    source            text NOT NULL
                      CONSTRAINT regime_prototype_sets_source
                      CHECK (source IN ('computed', 'document')),
    fit_log_loss      double precision,
    fit_log_loss_at_1 double precision,
    fit_n             integer,
    fit_separable     boolean,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text NOT NULL DEFAULT current_user,
    saving_xact       xid8 NOT NULL,
    CONSTRAINT regime_prototype_sets_fit
        CHECK (num_nulls(fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable) IN (0, 4))
);

COMMENT ON TABLE regime_prototype_sets IS
    'regime-pg: saved prototype sets (one row per set; never updated)';
COMMENT ON COLUMN regime_prototype_sets.windows IS
    'regime-pg: the windows asked for, {"LABEL": {"start_date", "end_date"}}; for a set imported from a document, the windows it carried';
COMMENT ON COLUMN regime_prototype_sets.source IS
    'regime-pg: computed (save_regime_prototype_set) or document (save_regime_prototype_set_from_document)';
COMMENT ON COLUMN regime_prototype_sets.fit_log_loss IS
    'regime-pg: when the temperature was fitted: mean negative log-likelihood of the calibration labels at it; NULL otherwise';
COMMENT ON COLUMN regime_prototype_sets.fit_log_loss_at_1 IS
    'regime-pg: when the temperature was fitted: the same log-loss at temperature 1';
COMMENT ON COLUMN regime_prototype_sets.fit_n IS
    'regime-pg: when the temperature was fitted: number of calibration embeddings';
COMMENT ON COLUMN regime_prototype_sets.fit_separable IS
    'regime-pg: when the temperature was fitted: every calibration embedding was nearest its own prototype (the temperature is then a bound, not a maximum)';
COMMENT ON COLUMN regime_prototype_sets.saving_xact IS
    'regime-pg: the transaction that saved the set (set by trigger); only it may add members';

-- One row per prototype of a set.
CREATE TABLE regime_prototype_set_members (
    set_name    text NOT NULL
                CONSTRAINT regime_prototype_set_members_set_name_fkey
                REFERENCES regime_prototype_sets (name) ON DELETE CASCADE,
    label       text NOT NULL
                CONSTRAINT regime_prototype_set_members_label_rule
                CHECK (regime_label_is_valid(label)),
    center      vector(384) NOT NULL,
    l2_norm     double precision CHECK (l2_norm >= 0),
    n_dates     integer CHECK (n_dates >= 0),
    n_skipped   integer CHECK (n_skipped >= 0),
    dispersion  double precision CHECK (dispersion >= 0),
    start_date  date,
    end_date    date,
    first_date  date,
    last_date   date,
    PRIMARY KEY (set_name, label),
    CONSTRAINT regime_prototype_set_members_window
        CHECK ((start_date IS NULL) = (end_date IS NULL) AND start_date <= end_date),
    CONSTRAINT regime_prototype_set_members_seen
        CHECK (first_date <= last_date)
);

-- PLAIN storage: the 1.5 kB centre stays inline in the heap tuple.
ALTER TABLE regime_prototype_set_members
    ALTER COLUMN center SET STORAGE PLAIN;

COMMENT ON TABLE regime_prototype_set_members IS
    'regime-pg: the prototypes of each saved set (written with the set, never changed)';
COMMENT ON COLUMN regime_prototype_set_members.center IS
    'regime-pg: the prototype centre; NULL-free, 384 float32 values';

-- Trigger function: a new set row records the transaction saving it.
CREATE FUNCTION regime_prototype_set_saving()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    NEW.saving_xact := pg_current_xact_id();
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION regime_prototype_set_saving() IS
    'regime-pg: trigger recording the transaction that saves a prototype set';

-- Trigger function: a saved set never changes.
CREATE FUNCTION regime_prototype_set_frozen()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    set_name text;
BEGIN
    IF TG_TABLE_NAME = 'regime_prototype_sets' THEN
        set_name := OLD.name;
    ELSE
        set_name := OLD.set_name;
    END IF;
    RAISE EXCEPTION 'prototype set % is saved and never changes: % of % rejected',
            quote_literal(set_name), TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'object_not_in_prerequisite_state', TABLE = TG_TABLE_NAME,
              HINT = 'Save the new version under a new name, or remove the whole set with '
                     'delete_regime_prototype_set(' || quote_literal(set_name) || ').';
END
$$;

COMMENT ON FUNCTION regime_prototype_set_frozen() IS
    'regime-pg: trigger rejecting any UPDATE of a saved prototype set';

-- Trigger function: members are added only by the transaction saving their set.
CREATE FUNCTION regime_prototype_set_member_added()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    saved_by xid8;
BEGIN
    SELECT s.saving_xact INTO saved_by
      FROM regime_prototype_sets AS s
     WHERE s.name = NEW.set_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no prototype set % to add prototype % to', quote_literal(NEW.set_name), NEW.label
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = 'set_name',
                  CONSTRAINT = 'regime_prototype_set_members_set_name_fkey',
                  HINT = 'Prototypes are saved with their set: save_regime_prototype_set '
                         'or save_regime_prototype_set_from_document.';
    END IF;
    IF saved_by <> pg_current_xact_id() THEN
        RAISE EXCEPTION 'prototype set % is saved and never changes: prototype % cannot be added',
                quote_literal(NEW.set_name), NEW.label
            USING ERRCODE = 'object_not_in_prerequisite_state', TABLE = TG_TABLE_NAME,
                  HINT = 'Save the new version under a new name.';
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION regime_prototype_set_member_added() IS
    'regime-pg: trigger letting only the saving transaction add prototypes to a set';

-- Trigger function: a member goes only with its set (the cascade of the set's deletion).
CREATE FUNCTION regime_prototype_set_member_removed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT FROM regime_prototype_sets AS s WHERE s.name = OLD.set_name) THEN
        RAISE EXCEPTION 'prototype set % is saved and never changes: prototype % cannot be deleted alone',
                quote_literal(OLD.set_name), OLD.label
            USING ERRCODE = 'object_not_in_prerequisite_state', TABLE = TG_TABLE_NAME,
                  HINT = 'Remove the whole set with delete_regime_prototype_set('
                         || quote_literal(OLD.set_name) || ').';
    END IF;
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION regime_prototype_set_member_removed() IS
    'regime-pg: trigger letting prototypes go only with their whole set';

-- Trigger function: no TRUNCATE of the members while sets exist.
CREATE FUNCTION regime_prototype_set_members_truncated()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT FROM regime_prototype_sets) THEN
        RAISE EXCEPTION 'saved prototype sets never change: TRUNCATE of % rejected', TG_TABLE_NAME
            USING ERRCODE = 'object_not_in_prerequisite_state', TABLE = TG_TABLE_NAME,
                  HINT = 'Remove whole sets with delete_regime_prototype_set(name) '
                         'or DELETE FROM regime_prototype_sets.';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION regime_prototype_set_members_truncated() IS
    'regime-pg: trigger rejecting TRUNCATE of prototypes while sets exist';

-- Constraint trigger function, at commit: a saved set has prototypes.
CREATE FUNCTION regime_prototype_set_complete()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF EXISTS (SELECT FROM regime_prototype_sets AS s WHERE s.name = NEW.name)
       AND NOT EXISTS (SELECT FROM regime_prototype_set_members AS m WHERE m.set_name = NEW.name) THEN
        RAISE EXCEPTION 'prototype set % has no prototypes', quote_literal(NEW.name)
            USING ERRCODE = 'check_violation', TABLE = TG_TABLE_NAME,
                  CONSTRAINT = 'regime_pg_prototype_set_complete',
                  HINT = 'Save sets with save_regime_prototype_set or save_regime_prototype_set_from_document.';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION regime_prototype_set_complete() IS
    'regime-pg: constraint trigger checking at commit that a saved set has prototypes';

CREATE TRIGGER regime_pg_prototype_set_saving
    BEFORE INSERT ON regime_prototype_sets
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_saving();

CREATE TRIGGER regime_pg_prototype_set_frozen
    BEFORE UPDATE ON regime_prototype_sets
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_frozen();

CREATE CONSTRAINT TRIGGER regime_pg_prototype_set_complete
    AFTER INSERT ON regime_prototype_sets
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_complete();

CREATE TRIGGER regime_pg_prototype_set_member_added
    BEFORE INSERT ON regime_prototype_set_members
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_member_added();

CREATE TRIGGER regime_pg_prototype_set_member_frozen
    BEFORE UPDATE ON regime_prototype_set_members
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_frozen();

CREATE TRIGGER regime_pg_prototype_set_member_removed
    BEFORE DELETE ON regime_prototype_set_members
    FOR EACH ROW EXECUTE FUNCTION regime_prototype_set_member_removed();

CREATE TRIGGER regime_pg_prototype_set_members_truncated
    BEFORE TRUNCATE ON regime_prototype_set_members
    FOR EACH STATEMENT EXECUTE FUNCTION regime_prototype_set_members_truncated();

-- Raise unless p_name is a valid set name.
CREATE FUNCTION regime_check_prototype_set_name(p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_name IS NULL THEN
        RAISE EXCEPTION 'prototype set name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name';
    END IF;
    IF NOT regime_prototype_set_name_is_valid(p_name) THEN
        RAISE EXCEPTION 'prototype set name % does not follow the set name rule',
                left(quote_literal(p_name), 80)
            USING ERRCODE = 'invalid_text_representation',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name',
                  HINT = 'Set names are 1 to 64 letters, digits, dots, underscores or hyphens, '
                         'starting with a letter or digit, for example us-2018-v1.';
    END IF;
END
$$;

-- Raise unless p_temperature is a positive finite number.
CREATE FUNCTION regime_check_temperature(p_temperature double precision)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_temperature IS NULL THEN
        RAISE EXCEPTION 'temperature must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  TABLE = 'regime_prototype_sets', COLUMN = 'temperature';
    END IF;
    -- NaN sorts above Infinity in PostgreSQL, so this rejects it too.
    IF NOT (p_temperature > 0 AND p_temperature < 'Infinity') THEN
        RAISE EXCEPTION 'temperature must be a positive finite number, got %', p_temperature
            USING ERRCODE = 'invalid_parameter_value',
                  TABLE = 'regime_prototype_sets', COLUMN = 'temperature';
    END IF;
END
$$;

-- The error for a name that is taken.
CREATE FUNCTION regime_prototype_set_exists_error(p_name text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'prototype set % already exists', quote_literal(p_name)
        USING ERRCODE = 'unique_violation',
              TABLE = 'regime_prototype_sets', COLUMN = 'name',
              CONSTRAINT = 'regime_prototype_sets_pkey',
              HINT = 'A saved set never changes: save the new version under a new name, '
                     'or delete_regime_prototype_set(' || quote_literal(p_name) || ') first.';
END
$$;

-- The saved set called name; raises undefined_object when there is none.
CREATE FUNCTION regime_prototype_set(name text)
RETURNS regime_prototype_sets
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    result regime_prototype_sets;
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'prototype set name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name';
    END IF;
    SELECT s.* INTO result
      FROM regime_prototype_sets AS s
     WHERE s.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown prototype set %', left(quote_literal($1), 80)
            USING ERRCODE = 'undefined_object',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name',
                  HINT = 'Saved sets are the rows of regime_prototype_sets; names are case-sensitive.';
    END IF;
    RETURN result;
END
$$;

COMMENT ON FUNCTION regime_prototype_set(text) IS
    'regime-pg: the saved prototype set of that name (42704 when there is none)';

-- The negative log-likelihood f of the calibration labels at beta = 1 /
-- temperature, with its first and second derivatives in beta.  Embedding i
-- comes as own[i] = d(i, own prototype) - d(i, nearest prototype) and, per
-- prototype k, excess = d(i, k) - d(i, nearest), sample = i.  Shifting by the
-- nearest distance keeps every exponential in [0, 1]:
--   f   = sum_i beta * own_i + ln z0_i,    z0_i = sum_k exp(-beta * excess_ik)
--   f'  = sum_i own_i - m1_i              (own distance minus its expectation)
--   f'' = sum_i m2_i - m1_i^2             (variance of the distance, >= 0)
-- with m1, m2 the first two moments of excess under the softmax.
CREATE FUNCTION regime_softmax_nll(beta double precision, own double precision[],
                                   sample bigint[], excess double precision[],
                                   OUT nll double precision,
                                   OUT slope double precision,
                                   OUT curvature double precision)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT sum($1 * o.own + ln(z.z0)),
           sum(o.own - z.m1),
           -- Squares of means below 1e-150 would underflow, which float8 arithmetic raises.
           sum(greatest(z.m2 - CASE WHEN z.m1 < 1e-150 THEN 0 ELSE z.m1 * z.m1 END, 0))
      FROM unnest($2) WITH ORDINALITY AS o(own, i)
      JOIN (SELECT w.i, sum(w.p) AS z0,
                   sum(w.p * w.x) / sum(w.p) AS m1,
                   sum(w.p * w.x * w.x) / sum(w.p) AS m2
              FROM (SELECT u.i, u.x,
                           -- Terms below exp(-300) are dropped: next to z0 >= 1 they
                           -- do not count, and their products could underflow.
                           CASE WHEN $1 * u.x > 300 THEN 0 ELSE exp(-$1 * u.x) END AS p
                      FROM unnest($3, $4) AS u(i, x)) AS w
             GROUP BY w.i) AS z ON z.i = o.i
$$;

-- Fit the temperature of prototypes (label, center, start_date, end_date of
-- each element) on the usable embeddings of region in each prototype's
-- window, each labelled with that prototype's label.
--
-- The likelihood is that of softmax(-distance / T) over the prototypes,
-- taken at each embedding's own label; its negative log is convex in
-- beta = 1 / T, and the fit is a safeguarded Newton search (bisection when
-- Newton leaves the bracket) for:
--   * the maximum of the likelihood, when at least one calibration embedding
--     is nearer another prototype than its own (separable = false);
--   * otherwise (separable = true) the likelihood grows forever as T -> 0,
--     and the fit returns the temperature at which the mean log-loss is
--     ln((n + 2) / (n + 1)): the calibration labels, right n times out of n,
--     are given the average confidence of Laplace's rule of succession
--     rather than certainty.
-- Either way T stays within [1e-3 * G, 1e3 * G], G the median over the
-- embeddings of |distance to the nearest other prototype - distance to the
-- own one| (if that median is 0, the mean spread between nearest and
-- farthest prototype); a T at the upper bound says the labels carry no
-- information about distance.  log_loss is the mean negative log-likelihood
-- (natural log) per calibration embedding at T, log_loss_at_1 the same at
-- T = 1, n the number of calibration embeddings (a date in two windows
-- counts once per window).
CREATE FUNCTION regime_temperature_fit(p_region text, p_prototypes regime_prototype_set_members[])
RETURNS TABLE (
    temperature   double precision,
    log_loss      double precision,
    log_loss_at_1 double precision,
    n             integer,
    separable     boolean
)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    own         double precision[];
    sample      bigint[];
    excess      double precision[];
    n_samples   integer;
    all_nearest boolean;
    scale       double precision;
    target      double precision;
    lo          double precision;
    hi          double precision;
    beta        double precision;
    step        double precision;
    psi         double precision;
    dpsi        double precision;
    point       record;
BEGIN
    IF coalesce(cardinality(p_prototypes), 0) < 2 THEN
        RAISE EXCEPTION 'fitting a temperature needs at least two prototypes, got %',
                coalesce(cardinality(p_prototypes), 0)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With one prototype every confidence is 1, whatever the temperature.';
    END IF;

    WITH calibration AS (
        SELECT row_number() OVER (ORDER BY w.ordinality, e.as_of_date) AS i,
               w.ordinality AS k, e.embedding_vector
          FROM unnest(p_prototypes) WITH ORDINALITY AS w
         CROSS JOIN LATERAL (
                   SELECT l.as_of_date, l.embedding_vector
                     FROM regime_embeddings_latest AS l
                    WHERE l.region = p_region
                      AND l.as_of_date BETWEEN w.start_date AND w.end_date) AS e
         WHERE e.embedding_vector IS NOT NULL
    ), distance AS (
        SELECT c.i, p.ordinality AS k, c.k = p.ordinality AS is_own,
               c.embedding_vector <-> p.center AS d
          FROM calibration AS c
         CROSS JOIN unnest(p_prototypes) WITH ORDINALITY AS p
    ), per_embedding AS (
        SELECT d.i, min(d.d) AS nearest, max(d.d) AS farthest,
               min(d.d) FILTER (WHERE d.is_own) AS mine,
               min(d.d) FILTER (WHERE NOT d.is_own) AS rival
          FROM distance AS d
         GROUP BY d.i
    )
    SELECT (SELECT array_agg(q.mine - q.nearest ORDER BY q.i) FROM per_embedding AS q),
           (SELECT array_agg(d.i ORDER BY d.i, d.k) FROM distance AS d),
           (SELECT array_agg(d.d - q.nearest ORDER BY d.i, d.k)
              FROM distance AS d JOIN per_embedding AS q ON q.i = d.i),
           (SELECT count(*) FROM per_embedding),
           (SELECT bool_and(q.mine = q.nearest) FROM per_embedding AS q),
           (SELECT coalesce(nullif(percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(q.rival - q.mine)), 0),
                            avg(q.farthest - q.nearest))
              FROM per_embedding AS q)
      INTO own, sample, excess, n_samples, all_nearest, scale;

    IF n_samples = 0 THEN
        RAISE EXCEPTION 'no usable embedding for region % in the calibration windows', quote_literal(p_region)
            USING ERRCODE = 'no_data_found', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
    IF NOT scale > 0 THEN
        RAISE EXCEPTION 'cannot fit a temperature: every calibration embedding is as far from '
                        'each prototype as from its own'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Do two windows give the same prototype?';
    END IF;

    -- psi, increasing in beta, is 0 at the wanted beta: f' when the likelihood
    -- has a maximum, else target - f.
    target := n_samples * ln((n_samples + 2)::double precision / (n_samples + 1));
    lo := 1 / (1e3 * scale);
    hi := 1 / (1e-3 * scale);
    SELECT * INTO point FROM regime_softmax_nll(lo, own, sample, excess);
    IF (CASE WHEN all_nearest THEN target - point.nll ELSE point.slope END) >= 0 THEN
        beta := lo;
    ELSE
        SELECT * INTO point FROM regime_softmax_nll(hi, own, sample, excess);
        IF (CASE WHEN all_nearest THEN target - point.nll ELSE point.slope END) <= 0 THEN
            beta := hi;
        ELSE
            beta := sqrt(lo * hi);
            FOR iteration IN 1..200 LOOP
                SELECT * INTO point FROM regime_softmax_nll(beta, own, sample, excess);
                IF all_nearest THEN
                    psi := target - point.nll;
                    dpsi := -point.slope;
                ELSE
                    psi := point.slope;
                    dpsi := point.curvature;
                END IF;
                EXIT WHEN psi = 0;
                IF psi < 0 THEN
                    lo := beta;
                ELSE
                    hi := beta;
                END IF;
                step := CASE WHEN dpsi > 0 THEN psi / dpsi END;
                EXIT WHEN abs(step) <= 1e-13 * beta OR hi <= lo * (1 + 1e-14);
                IF step IS NULL OR NOT (beta - step > lo AND beta - step < hi) THEN
                    beta := sqrt(lo * hi);
                ELSE
                    beta := beta - step;
                END IF;
            END LOOP;
        END IF;
    END IF;

    temperature := 1 / beta;
    log_loss := (regime_softmax_nll(beta, own, sample, excess)).nll / n_samples;
    log_loss_at_1 := (regime_softmax_nll(1, own, sample, excess)).nll / n_samples;
    n := n_samples;
    separable := all_nearest;
    RETURN NEXT;
END
$$;

-- The prototypes of region's windows, as set members (set_name NULL).
-- PARALLEL UNSAFE, as everything that calls it: regime_windows_from_json
-- (prototypes--1.sql) has an exception block, which a parallel worker of
-- PostgreSQL 16 cannot run.
CREATE FUNCTION regime_prototype_set_members_of(p_region text, p_windows jsonb)
RETURNS regime_prototype_set_members[]
LANGUAGE sql STABLE PARALLEL UNSAFE
SET search_path FROM CURRENT
AS $$
    SELECT array_agg(ROW(NULL, p.label, p.center, p.l2_norm, p.n_dates, p.n_skipped, p.dispersion,
                         p.start_date, p.end_date, p.first_date, p.last_date)::regime_prototype_set_members
                     ORDER BY p.label)
      FROM compute_regime_prototypes($1, $2) AS p
$$;

-- The temperature that best explains the labels of region's windows
-- (PARALLEL UNSAFE: see regime_prototype_set_members_of).
CREATE FUNCTION fit_regime_temperature(region text, windows jsonb)
RETURNS TABLE (
    temperature   double precision,
    log_loss      double precision,
    log_loss_at_1 double precision,
    n             integer,
    separable     boolean
)
LANGUAGE sql STABLE PARALLEL UNSAFE
SET search_path FROM CURRENT
AS $$
    SELECT f.*
      FROM regime_temperature_fit($1, regime_prototype_set_members_of($1, $2)) AS f
$$;

COMMENT ON FUNCTION fit_regime_temperature(text, jsonb) IS
    'regime-pg: maximum-likelihood softmax temperature for the labels of a region''s windows';

-- Store a set row and its members; the caller checked everything else.
CREATE FUNCTION regime_store_prototype_set(p_set regime_prototype_sets,
                                           p_members regime_prototype_set_members[])
RETURNS regime_prototype_sets
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    saved regime_prototype_sets;
BEGIN
    BEGIN
        INSERT INTO regime_prototype_sets AS s
               (name, region, embedding_dim, temperature, windows, source,
                fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable)
        VALUES (p_set.name, p_set.region, regime_embedding_dim(), p_set.temperature,
                p_set.windows, p_set.source, p_set.fit_log_loss, p_set.fit_log_loss_at_1,
                p_set.fit_n, p_set.fit_separable)
        RETURNING s.* INTO saved;
    EXCEPTION WHEN unique_violation THEN
        -- A concurrent save of the same name committed first.
        PERFORM regime_prototype_set_exists_error(p_set.name);
    END;
    INSERT INTO regime_prototype_set_members
           (set_name, label, center, l2_norm, n_dates, n_skipped, dispersion,
            start_date, end_date, first_date, last_date)
    SELECT saved.name, m.label, m.center, m.l2_norm, m.n_dates, m.n_skipped, m.dispersion,
           m.start_date, m.end_date, m.first_date, m.last_date
      FROM unnest(p_members) AS m;
    RETURN saved;
END
$$;

-- Compute the prototypes of region's windows and save them as set name, in
-- one transaction.  temperature => NULL fits the temperature on the same
-- windows (fit_regime_temperature) and records the fit in the set row.
CREATE FUNCTION save_regime_prototype_set(name text, region text, windows jsonb,
                                          temperature double precision DEFAULT 1.0)
RETURNS regime_prototype_sets
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    p_name        ALIAS FOR $1;
    p_region      ALIAS FOR $2;
    p_windows     ALIAS FOR $3;
    p_temperature ALIAS FOR $4;
    members       regime_prototype_set_members[];
    fit           record;
    new_set       regime_prototype_sets;
BEGIN
    PERFORM regime_check_prototype_set_name(p_name);
    IF p_temperature IS NOT NULL THEN
        PERFORM regime_check_temperature(p_temperature);
    END IF;
    IF EXISTS (SELECT FROM regime_prototype_sets AS s WHERE s.name = p_name) THEN
        PERFORM regime_prototype_set_exists_error(p_name);
    END IF;

    members := regime_prototype_set_members_of(p_region, p_windows);
    new_set.name := p_name;
    new_set.region := p_region;
    new_set.windows := p_windows;
    new_set.source := 'computed';
    new_set.temperature := p_temperature;
    IF p_temperature IS NULL THEN
        SELECT * INTO fit FROM regime_temperature_fit(p_region, members);
        new_set.temperature := fit.temperature;
        new_set.fit_log_loss := fit.log_loss;
        new_set.fit_log_loss_at_1 := fit.log_loss_at_1;
        new_set.fit_n := fit.n;
        new_set.fit_separable := fit.separable;
    END IF;
    RETURN regime_store_prototype_set(new_set, members);
END
$$;

COMMENT ON FUNCTION save_regime_prototype_set(text, text, jsonb, double precision) IS
    'regime-pg: compute and save a named prototype set (temperature NULL: fitted)';

-- An optional number of a prototype document entry (NULL when absent).
CREATE FUNCTION regime_document_number(p_entry jsonb, p_key text, p_label text)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT p_entry ? p_key THEN
        RETURN NULL;
    END IF;
    IF (CASE WHEN jsonb_typeof(p_entry -> p_key) = 'number'
             THEN (p_entry -> p_key)::numeric < 0 ELSE true END) THEN
        RAISE EXCEPTION '% of prototype % must be a non-negative number, got %',
                p_key, p_label, left((p_entry -> p_key)::text, 80)
            USING ERRCODE = 'invalid_json_text';
    END IF;
    RETURN (p_entry -> p_key)::double precision;
END
$$;

-- An optional count of a prototype document entry (NULL when absent).
CREATE FUNCTION regime_document_count(p_entry jsonb, p_key text, p_label text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT p_entry ? p_key THEN
        RETURN NULL;
    END IF;
    IF (CASE WHEN jsonb_typeof(p_entry -> p_key) = 'number' AND (p_entry ->> p_key) ~ '^[0-9]{1,10}$'
             THEN (p_entry ->> p_key)::bigint > 2147483647 ELSE true END) THEN
        RAISE EXCEPTION '% of prototype % must be a non-negative integer, got %',
                p_key, p_label, left((p_entry -> p_key)::text, 80)
            USING ERRCODE = 'invalid_json_text';
    END IF;
    RETURN (p_entry ->> p_key)::integer;
END
$$;

-- An optional "YYYY-MM-DD" date of a prototype document entry (NULL when
-- absent).  No exception block: this runs in parallel workers, which cannot
-- start subtransactions.
CREATE FUNCTION regime_document_date(p_entry jsonb, p_key text, p_label text)
RETURNS date
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    value text := p_entry ->> p_key;
    y integer;
    m integer;
    d integer;
BEGIN
    IF NOT p_entry ? p_key THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_entry -> p_key) <> 'string' OR NOT value ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN
        RAISE EXCEPTION '% of prototype % must be a date as "YYYY-MM-DD", got %',
                p_key, p_label, left((p_entry -> p_key)::text, 80)
            USING ERRCODE = 'invalid_datetime_format', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
    y := left(value, 4)::integer;
    m := substr(value, 6, 2)::integer;
    d := right(value, 2)::integer;
    IF y < 1 OR m NOT BETWEEN 1 AND 12 OR d < 1 THEN
        d := 0;
    ELSIF d > (make_date(y, m, 1) + interval '1 month')::date - make_date(y, m, 1) THEN
        d := 0;
    END IF;
    IF d = 0 THEN
        RAISE EXCEPTION '% of prototype % is not a calendar date: %', p_key, p_label, value
            USING ERRCODE = 'invalid_datetime_format', TABLE = 'regimes', COLUMN = 'as_of_date';
    END IF;
    RETURN make_date(y, m, d);
END
$$;

-- Parse and check a prototype document (the format regime_prototypes_json
-- writes): its region, the windows of its prototypes as a windows document,
-- and its prototypes as set members (set_name NULL).  Keys other than the
-- documented ones are rejected, so that nothing is silently dropped.
CREATE FUNCTION regime_prototype_document_parse(document jsonb,
                                                OUT doc_region text,
                                                OUT doc_windows jsonb,
                                                OUT doc_members regime_prototype_set_members[])
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    expected constant text :=
        '{"embedding_dim": 384, "prototypes": {"LABEL": {"center": [...], "l2_norm": ..., '
        '"window": {"start_date": ..., "end_date": ...}, ...}}, "region": "..."}';
    entry_keys constant text[] := ARRAY['center', 'dispersion', 'first_date', 'l2_norm',
                                        'last_date', 'n_dates', 'n_skipped', 'window'];
    dim constant integer := regime_embedding_dim();
    -- 2^128 - 2^103 and 2^-150, exactly.
    float32_overflow constant numeric := 340282356779733661637539395458142568448;
    float32_underflow constant numeric :=
        7.00649232162408535461864791644958065640130970938257885878534141944895541342930300743319094181060791015625E-46;
    item record;
    entry jsonb;
    odd text;
    center real[];
    window_keys text[];
    member regime_prototype_set_members;
BEGIN
    IF document IS NULL THEN
        RAISE EXCEPTION 'prototype document must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF jsonb_typeof(document) <> 'object' THEN
        RAISE EXCEPTION 'a prototype document is a JSON object %', expected
            USING ERRCODE = 'invalid_json_text';
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO odd
      FROM jsonb_object_keys(document) AS k
     WHERE k <> ALL (ARRAY['embedding_dim', 'prototypes', 'region']);
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'prototype document has unknown keys: %', left(odd, 200)
            USING ERRCODE = 'invalid_json_text', DETAIL = 'Expected ' || expected;
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO odd
      FROM unnest(ARRAY['embedding_dim', 'prototypes', 'region']) AS k
     WHERE NOT document ? k;
    IF odd IS NOT NULL THEN
        RAISE EXCEPTION 'prototype document lacks %', odd
            USING ERRCODE = 'invalid_json_text', DETAIL = 'Expected ' || expected;
    END IF;

    IF jsonb_typeof(document -> 'embedding_dim') <> 'number'
       OR NOT (document ->> 'embedding_dim') ~ '^[0-9]{1,9}$' THEN
        RAISE EXCEPTION 'embedding_dim must be a positive integer, got %',
                left((document -> 'embedding_dim')::text, 80)
            USING ERRCODE = 'invalid_json_text';
    END IF;
    IF (document ->> 'embedding_dim')::integer <> dim THEN
        RAISE EXCEPTION 'the document''s embedding_dim is %; regime embeddings have % dimensions',
                document ->> 'embedding_dim', dim
            USING ERRCODE = 'data_exception';
    END IF;

    IF jsonb_typeof(document -> 'region') <> 'string' OR document ->> 'region' = '' THEN
        RAISE EXCEPTION 'region must be a non-empty string, got %', left((document -> 'region')::text, 80)
            USING ERRCODE = 'invalid_json_text';
    END IF;
    doc_region := document ->> 'region';
    IF length(doc_region) > 32 THEN
        RAISE EXCEPTION 'region is % characters long; regions have at most 32', length(doc_region)
            USING ERRCODE = 'string_data_right_truncation', TABLE = 'regimes', COLUMN = 'region';
    END IF;

    IF jsonb_typeof(document -> 'prototypes') <> 'object' OR document -> 'prototypes' = '{}' THEN
        RAISE EXCEPTION 'prototypes must be a non-empty JSON object {"LABEL": {"center": [...], ...}}, got %',
                left((document -> 'prototypes')::text, 80)
            USING ERRCODE = 'invalid_json_text';
    END IF;

    doc_windows := '{}';
    doc_members := '{}';
    FOR item IN SELECT p.key, p.value FROM jsonb_each(document -> 'prototypes') AS p ORDER BY p.key LOOP
        IF NOT regime_label_is_valid(item.key) THEN
            RAISE EXCEPTION 'label % does not follow the label rule', left(quote_literal(item.key), 80)
                USING ERRCODE = 'invalid_text_representation',
                      HINT = 'Labels are 1 to 32 upper-case letters, digits or underscores, '
                             'starting with a letter, for example NEUTRAL or RISK_OFF.';
        END IF;
        entry := item.value;
        IF jsonb_typeof(entry) <> 'object' THEN
            RAISE EXCEPTION 'prototype % must be a JSON object {"center": [...], ...}, got %',
                    item.key, left(entry::text, 80)
                USING ERRCODE = 'invalid_json_text';
        END IF;
        SELECT string_agg(k, ', ' ORDER BY k) INTO odd
          FROM jsonb_object_keys(entry) AS k
         WHERE k <> ALL (entry_keys);
        IF odd IS NOT NULL THEN
            RAISE EXCEPTION 'prototype % has unknown keys: %', item.key, left(odd, 200)
                USING ERRCODE = 'invalid_json_text',
                      DETAIL = 'Known keys: ' || array_to_string(entry_keys, ', ') || '.';
        END IF;

        IF jsonb_typeof(entry -> 'center') IS DISTINCT FROM 'array' THEN
            RAISE EXCEPTION 'prototype % must have a center, an array of % numbers', item.key, dim
                USING ERRCODE = 'invalid_json_text';
        END IF;
        IF jsonb_array_length(entry -> 'center') <> dim THEN
            RAISE EXCEPTION 'center of prototype % has % values; embedding_dim is %',
                    item.key, jsonb_array_length(entry -> 'center'), dim
                USING ERRCODE = 'data_exception';
        END IF;
        IF EXISTS (SELECT FROM jsonb_array_elements(entry -> 'center') AS v WHERE jsonb_typeof(v) <> 'number') THEN
            RAISE EXCEPTION 'center of prototype % must hold numbers only', item.key
                USING ERRCODE = 'invalid_json_text';
        END IF;
        -- Out of float32 range once rounded: at least 2^128 - 2^103 in magnitude
        -- (rounds to infinity), or non-zero and at most 2^-150 (rounds to 0).
        -- Checked before the cast, which would raise, so that no exception block
        -- is needed (parallel workers cannot start subtransactions).
        IF EXISTS (SELECT FROM jsonb_array_elements(entry -> 'center') AS v
                    WHERE abs(v::numeric) >= float32_overflow
                       OR (v::numeric <> 0 AND abs(v::numeric) <= float32_underflow)) THEN
            RAISE EXCEPTION 'center of prototype % holds a value that is not a float32 number', item.key
                USING ERRCODE = 'numeric_value_out_of_range',
                      HINT = 'Centre values are float32: magnitudes from about 1.4e-45 to 3.4e38, or 0.';
        END IF;
        center := ARRAY(SELECT v::real
                          FROM jsonb_array_elements(entry -> 'center') WITH ORDINALITY AS c(v, i)
                         ORDER BY c.i);

        member := ROW(NULL, item.key, center::vector(384),
                      regime_document_number(entry, 'l2_norm', item.key),
                      regime_document_count(entry, 'n_dates', item.key),
                      regime_document_count(entry, 'n_skipped', item.key),
                      regime_document_number(entry, 'dispersion', item.key),
                      NULL, NULL,
                      regime_document_date(entry, 'first_date', item.key),
                      regime_document_date(entry, 'last_date', item.key));
        IF entry ? 'window' THEN
            window_keys := NULL;
            IF jsonb_typeof(entry -> 'window') = 'object' THEN
                SELECT array_agg(k ORDER BY k) INTO window_keys
                  FROM jsonb_object_keys(entry -> 'window') AS k;
            END IF;
            IF window_keys IS DISTINCT FROM ARRAY['end_date', 'start_date'] THEN
                RAISE EXCEPTION 'window of prototype % must be {"start_date": "YYYY-MM-DD", "end_date": "YYYY-MM-DD"}, got %',
                        item.key, left((entry -> 'window')::text, 80)
                    USING ERRCODE = 'invalid_json_text';
            END IF;
            member.start_date := regime_document_date(entry -> 'window', 'start_date', item.key);
            member.end_date := regime_document_date(entry -> 'window', 'end_date', item.key);
            PERFORM regime_check_window(doc_region, item.key, member.start_date, member.end_date);
            doc_windows := doc_windows || jsonb_build_object(item.key, entry -> 'window');
        END IF;
        IF member.first_date > member.last_date THEN
            RAISE EXCEPTION 'prototype % has first_date % after last_date %',
                    item.key, member.first_date, member.last_date
                USING ERRCODE = 'invalid_parameter_value', TABLE = 'regimes', COLUMN = 'as_of_date';
        END IF;
        doc_members := doc_members || member;
    END LOOP;
END
$$;

-- Save the prototypes of a document as set name, as they are.  temperature
-- => NULL fits the temperature on the stored embeddings of the document's
-- region in each prototype's window (every prototype then needs a window).
CREATE FUNCTION save_regime_prototype_set_from_document(name text, document jsonb,
                                                        temperature double precision DEFAULT 1.0)
RETURNS regime_prototype_sets
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    p_name        ALIAS FOR $1;
    p_document    ALIAS FOR $2;
    p_temperature ALIAS FOR $3;
    parsed        record;
    fit           record;
    windowless    text;
    new_set       regime_prototype_sets;
BEGIN
    PERFORM regime_check_prototype_set_name(p_name);
    IF p_temperature IS NOT NULL THEN
        PERFORM regime_check_temperature(p_temperature);
    END IF;
    IF EXISTS (SELECT FROM regime_prototype_sets AS s WHERE s.name = p_name) THEN
        PERFORM regime_prototype_set_exists_error(p_name);
    END IF;

    SELECT * INTO parsed FROM regime_prototype_document_parse(p_document);
    new_set.name := p_name;
    new_set.region := parsed.doc_region;
    new_set.windows := parsed.doc_windows;
    new_set.source := 'document';
    new_set.temperature := p_temperature;
    IF p_temperature IS NULL THEN
        SELECT string_agg(m.label, ', ' ORDER BY m.label) INTO windowless
          FROM unnest(parsed.doc_members) AS m
         WHERE m.start_date IS NULL;
        IF windowless IS NOT NULL THEN
            RAISE EXCEPTION 'cannot fit a temperature for prototype set %: prototypes % have no window',
                    quote_literal(p_name), windowless
                USING ERRCODE = 'invalid_parameter_value',
                      TABLE = 'regime_prototype_sets', COLUMN = 'temperature';
        END IF;
        PERFORM regime_check_region(parsed.doc_region);
        SELECT * INTO fit FROM regime_temperature_fit(parsed.doc_region, parsed.doc_members);
        new_set.temperature := fit.temperature;
        new_set.fit_log_loss := fit.log_loss;
        new_set.fit_log_loss_at_1 := fit.log_loss_at_1;
        new_set.fit_n := fit.n;
        new_set.fit_separable := fit.separable;
    END IF;
    RETURN regime_store_prototype_set(new_set, parsed.doc_members);
END
$$;

COMMENT ON FUNCTION save_regime_prototype_set_from_document(text, jsonb, double precision) IS
    'regime-pg: save the prototypes of a prototype document as a named set';

-- The prototype document of a saved set: the format and keys of
-- regime_prototypes_json (keys a document-imported prototype lacked stay absent).
CREATE FUNCTION regime_prototype_set_json(name text)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path FROM CURRENT
SET extra_float_digits = 1
AS $$
    SELECT jsonb_build_object(
               'embedding_dim', s.embedding_dim,
               'prototypes', (SELECT jsonb_object_agg(m.label, jsonb_strip_nulls(jsonb_build_object(
                                         'center', to_jsonb(m.center::real[]),
                                         'l2_norm', m.l2_norm,
                                         'window', CASE WHEN m.start_date IS NOT NULL THEN
                                                       jsonb_build_object('start_date', m.start_date,
                                                                          'end_date', m.end_date)
                                                   END,
                                         'n_dates', m.n_dates,
                                         'n_skipped', m.n_skipped,
                                         'dispersion', m.dispersion,
                                         'first_date', m.first_date,
                                         'last_date', m.last_date)))
                                FROM regime_prototype_set_members AS m
                               WHERE m.set_name = s.name),
               'region', s.region)
      FROM regime_prototype_set($1) AS s
$$;

COMMENT ON FUNCTION regime_prototype_set_json(text) IS
    'regime-pg: the prototype document (JSON) of a saved set';

-- Remove a saved set, whole.  Returns true; raises undefined_object when
-- there is no such set.
CREATE FUNCTION delete_regime_prototype_set(name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'prototype set name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name';
    END IF;
    DELETE FROM regime_prototype_sets AS s WHERE s.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown prototype set %', left(quote_literal($1), 80)
            USING ERRCODE = 'undefined_object',
                  TABLE = 'regime_prototype_sets', COLUMN = 'name',
                  HINT = 'Saved sets are the rows of regime_prototype_sets; names are case-sensitive.';
    END IF;
    RETURN true;
END
$$;

COMMENT ON FUNCTION delete_regime_prototype_set(text) IS
    'regime-pg: delete a saved prototype set with all its prototypes';
