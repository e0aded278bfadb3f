-- regime-pg: prototypes, version 6: a NULL created_at never wins the dedup
-- (finding F16 in docs/hardening.md).
--
-- Replaces the view regime_embeddings_latest of prototypes--1.sql: same
-- columns, same security_invoker, same comment (CREATE OR REPLACE VIEW keeps
-- the comment and the privileges granted on the view).  Every function stays
-- that of its latest version; all of them read duplicates through this view.
--
-- Why: the view orders each (region, as_of_date) by created_at DESC, and
-- PostgreSQL sorts NULL first in a descending order, so a row whose
-- created_at is NULL won over every dated row of its date, whatever its
-- age.  The engine's column is NOT NULL, but regime-pg's check of an
-- existing regimes requires only the column's type, not NOT NULL.
--
-- Now: created_at DESC NULLS LAST.  Of several rows of one date the latest
-- dated one wins; a row without created_at wins only over other rows
-- without it, by the same tie rule as equal created_at: the greatest
-- regime_record_id.  Where created_at is never NULL (the engine's table)
-- nothing changes.
--
-- Runs with search_path set by the migration; every function pins it.

-- The engine's rows, one per (region, as_of_date): the latest created_at
-- wins, NULL counting as older than any.  Filters on region and as_of_date
-- are pushed below the DISTINCT ON.
CREATE OR REPLACE VIEW regime_embeddings_latest WITH (security_invoker = true) AS
    SELECT DISTINCT ON (r.region, r.as_of_date)
           r.region, r.as_of_date, r.regime_record_id, r.created_at, r.embedding_vector
      FROM regimes AS r
     ORDER BY r.region, r.as_of_date, r.created_at DESC NULLS LAST, r.regime_record_id DESC;
