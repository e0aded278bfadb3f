-- The Regime Engine's table, created only on a database that does not
-- have it yet.  Same columns and index as the engine's own migration, so
-- that the engine can write to a database that regime-pg set up.

CREATE TABLE regimes (
    regime_record_id varchar(64) PRIMARY KEY,
    as_of_date       date NOT NULL,
    region           varchar(32) NOT NULL,
    regime_label     varchar(32) NOT NULL,
    regime_embedding bytea,
    embedding_ref    varchar(255),
    confidence       double precision NOT NULL,
    metadata         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ix_regimes_region_as_of_date ON regimes (region, as_of_date);

COMMENT ON TABLE regimes IS
    'Regime Engine output: one embedding per (region, as_of_date); created by regime-pg';
