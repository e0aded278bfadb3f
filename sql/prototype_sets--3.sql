-- regime-pg: stored prototype sets, version 3: importing a prototype
-- document checks each prototype's l2_norm against the norm of its centre,
-- as the Python import does.
--
-- Replaces save_regime_prototype_set_from_document of prototype_sets--1.sql
-- (same signature, flags and settings; CREATE OR REPLACE, so its comment and
-- privileges stay).  It still stores through regime_store_prototype_set of
-- prototype_sets--2.sql; every other object stays that of its latest
-- version.
--
-- Why: regime_pg.sets.import_set (so `regime-pg sets import`) refuses a
-- document whose l2_norm is not the norm of its centre
-- (regime_pg.document.check_l2_norms), but the SQL function stored such a
-- document as it was: a psql import accepted what the client refuses, and
-- the set then carried a norm that belongs to another centre.
--
-- Now: after the document is parsed (and before a temperature is fitted or
-- anything is written), every prototype that has an l2_norm is checked the
-- way check_l2_norms checks it, math.isclose(l2_norm, norm, rel_tol, abs_tol):
--   * norm is vector_norm of the centre as it is stored, the float32 values
--     (each JSON number rounded once to float32) squared and summed in
--     float8: what check_l2_norms computes (numpy's float64 norm of the
--     float32 centre), and what compute_regime_prototype stores as l2_norm,
--     so every document regime-pg exports differs from it by 0;
--   * rel_tol = embedding_dim * 2^-24 (2.3e-5 at 384 dimensions) and
--     abs_tol = sqrt(embedding_dim * 2^-149) (about 7.3e-22: what float32
--     squares of subnormal values lose), the constants of
--     regime_pg.document._norm_tolerance, exactly; see there for why that
--     tolerance takes every writer's way of taking the norm and still rejects
--     the norm of another centre;
--   * |l2_norm - norm| <= abs_tol passes first; only a larger difference is
--     compared with rel_tol * greatest(l2_norm, norm), a product that then
--     cannot underflow (PostgreSQL raises on a float8 underflow).
-- The same float8 operations on the same values as Python's: only the norm's
-- summation order (a few float8 ulps) and, for centre decimals that are not
-- the shortest of their float32, Python's rounding through float64 can make
-- the two differ, far inside the tolerance.
--
-- A mismatch raises data_exception (22000), the SQLSTATE of a centre whose
-- length is not embedding_dim (the other value of the document that disagrees
-- with the rest), with TABLE regime_prototype_set_members and COLUMN l2_norm
-- in its diagnostics (the client maps that to InvalidDocumentError), and
-- check_l2_norms's wording, the values in full: "prototype CRISIS: l2_norm
-- 5.01 is not the norm of its center, 5 (relative tolerance
-- 2.288818359375e-05)".  Of several, the first label in byte order is named,
-- as the client names it.  Nothing is written.  A prototype without l2_norm
-- passes, as before.
--
-- Runs with search_path set by the migration; every function pins it.

-- Save the prototypes of a document as set name, as they are.  temperature
-- => NULL fits the temperature on the stored embeddings of the document's
-- region in each prototype's window (every prototype then needs a window).
CREATE OR REPLACE FUNCTION save_regime_prototype_set_from_document(name text, document jsonb,
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
    -- The tolerance of regime_pg.document.check_l2_norms: dim * 2^-24, and
    -- sqrt(dim * 2^-149) (1.401298464324817e-45 is 2^-149 exactly).
    dim           constant double precision := regime_embedding_dim();
    rel_tol       constant double precision := dim / 16777216;
    abs_tol       constant double precision := sqrt(dim * float8 '1.401298464324817e-45');
    parsed        record;
    off_norm      record;
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
    SELECT m.label, m.l2_norm, c.norm INTO off_norm
      FROM unnest(parsed.doc_members) AS m
     CROSS JOIN LATERAL (SELECT vector_norm(m.center) AS norm) AS c
     WHERE m.l2_norm IS NOT NULL
       AND CASE WHEN abs(m.l2_norm - c.norm) <= abs_tol THEN false
                ELSE abs(m.l2_norm - c.norm) > rel_tol * greatest(m.l2_norm, c.norm)
           END
     ORDER BY m.label COLLATE "C"
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'prototype %: l2_norm % is not the norm of its center, % (relative tolerance %)',
                off_norm.label, off_norm.l2_norm, off_norm.norm, rel_tol
            USING ERRCODE = 'data_exception',
                  TABLE = 'regime_prototype_set_members', COLUMN = 'l2_norm',
                  HINT = 'l2_norm is optional: give the norm of the center, or leave it out.';
    END IF;

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
