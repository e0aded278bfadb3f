-- regime-pg: bookkeeping of what this project installed, so that a
-- downgrade removes exactly what regime-pg created and nothing else.
--
-- One row per fact, for example ('created_regimes_table', 'true').

CREATE TABLE regime_pg_installation (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE regime_pg_installation IS
    'regime-pg: objects this project created (read by its downgrades)';
