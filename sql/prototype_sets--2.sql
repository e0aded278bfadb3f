-- regime-pg: stored prototype sets, version 2: saving works inside a
-- transaction that ran SET CONSTRAINTS ALL IMMEDIATE (finding F17 in
-- docs/hardening.md).
--
-- Replaces regime_store_prototype_set of prototype_sets--1.sql: same
-- signature, flags and settings (it has no comment).  Both save functions,
-- save_regime_prototype_set and save_regime_prototype_set_from_document,
-- store through it and stay those of prototype_sets--1.sql, as does every
-- other object.
--
-- Why: the constraint trigger regime_pg_prototype_set_complete (a saved set
-- has prototypes) is DEFERRABLE INITIALLY DEFERRED, and version 1 wrote a
-- set's row and its members in two statements.  A transaction that ran SET
-- CONSTRAINTS ALL IMMEDIATE (some frameworks do) has the check run at the
-- end of the first statement, before any member exists: every save failed
-- with "prototype set ... has no prototypes".
--
-- How: the set row and its members are written by one statement (the row by
-- a data-modifying WITH, the members from its RETURNING).  PostgreSQL runs
-- the AFTER triggers of a statement, the immediate constraint triggers
-- among them, once the whole statement is done, so the check sees the
-- members in either mode: at commit by default, at the end of that
-- statement when the caller made it IMMEDIATE.  A set without members is
-- still refused, then or at commit.
--
-- Not SET CONSTRAINTS regime_pg_prototype_set_complete DEFERRED: SET
-- CONSTRAINTS lasts until the end of the transaction, and PostgreSQL has no
-- way to read the mode in force, so a save could not put back the caller's
-- IMMEDIATE afterwards (setting IMMEDIATE again would also wrongly switch a
-- caller that had the default, and fire the check of any set row the caller
-- inserted and has not completed yet).  The single statement leaves the
-- caller's mode alone.
--
-- Unchanged: of concurrent saves of one name exactly one wins, the others
-- get unique_violation (23505) naming the set; any other error of the
-- statement (a duplicate label in p_members, which only a direct caller of
-- this function can pass, or a member's CHECK) comes out as it is.
--
-- Runs with search_path set by the migration; every function pins it.

-- Store a set row and its members; the caller checked everything else.
CREATE OR REPLACE FUNCTION regime_store_prototype_set(p_set regime_prototype_sets,
                                                      p_members regime_prototype_set_members[])
RETURNS regime_prototype_sets
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    saved    regime_prototype_sets;
    violated text;
BEGIN
    BEGIN
        -- One statement: the completeness check, when immediate, runs after both inserts.
        WITH stored_set AS (
            INSERT INTO regime_prototype_sets AS s
                   (name, region, embedding_dim, temperature, windows, source,
                    fit_log_loss, fit_log_loss_at_1, fit_n, fit_separable)
            VALUES (p_set.name, p_set.region, regime_embedding_dim(), p_set.temperature,
                    p_set.windows, p_set.source, p_set.fit_log_loss, p_set.fit_log_loss_at_1,
                    p_set.fit_n, p_set.fit_separable)
            RETURNING s.*
        ), stored_members AS (
            INSERT INTO regime_prototype_set_members
                   (set_name, label, center, l2_norm, n_dates, n_skipped, dispersion,
                    start_date, end_date, first_date, last_date)
            SELECT n.name, m.label, m.center, m.l2_norm, m.n_dates, m.n_skipped, m.dispersion,
                   m.start_date, m.end_date, m.first_date, m.last_date
              FROM stored_set AS n
             CROSS JOIN unnest(p_members) AS m
        )
        SELECT n.* INTO saved FROM stored_set AS n;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS violated = CONSTRAINT_NAME;
        IF violated = 'regime_prototype_sets_pkey' THEN
            -- A concurrent save of the same name committed first.
            PERFORM regime_prototype_set_exists_error(p_set.name);
        END IF;
        RAISE;
    END;
    RETURN saved;
END
$$;
