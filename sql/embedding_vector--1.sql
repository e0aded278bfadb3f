-- regime-pg: the pgvector copy of the engine's float32 BYTEA embedding.
--
-- The Regime Engine writes regime_embedding as 384 little-endian float32
-- values (numpy's tobytes()).  regime-pg adds embedding_vector, a
-- vector(384) holding the same values bit for bit, and a trigger that fills
-- it whenever a row's BYTEA is written, so the engine's writer needs no
-- change.  A BYTEA that cannot be converted (wrong length, NaN, Inf) never
-- fails the engine's insert: the vector stays NULL and a WARNING names the
-- row.
--
-- Runs with search_path set by the migration; every function pins it.

-- The embedding dimension of encoder num-regime-core-v1.
CREATE FUNCTION regime_embedding_dim()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
RETURN 384;

COMMENT ON FUNCTION regime_embedding_dim() IS
    'regime-pg: dimension of the regime embeddings (encoder num-regime-core-v1)';

-- Decode little-endian IEEE 754 binary32 values, bit for bit: -0.0,
-- subnormals and the largest finite values included.  NaN and infinities
-- decode to NaN and +/-Infinity.  The length must be a multiple of 4.
--
-- This and regime_embedding_convert run in the sync trigger, as whoever
-- inserts into regimes: they name pg_catalog's functions and operators
-- explicitly, and use only operators whose operand types match pg_catalog's
-- exactly, so nothing planted in the schema of regimes can stand in.
CREATE FUNCTION regime_float32le_decode(bytes bytea)
RETURNS real[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
BEGIN
    IF pg_catalog.length(bytes) % 4 <> 0 THEN
        RAISE EXCEPTION 'float32 data must be a multiple of 4 bytes, got % bytes',
                pg_catalog.length(bytes)
            USING ERRCODE = 'invalid_binary_representation';
    END IF;
    RETURN ARRAY(
        SELECT (CASE
                    WHEN w.e = 255 AND w.m = 0 THEN w.s * 'Infinity'::float8
                    WHEN w.e = 255 THEN 'NaN'::float8
                    WHEN w.e = 0 THEN w.s * w.m::float8 * 2::float8 ^ (-149)::float8
                    ELSE w.s * (w.m + 8388608)::float8 * 2::float8 ^ (w.e - 150)::float8
                END)::real
          FROM pg_catalog.generate_series(0, pg_catalog.length(bytes) - 4, 4) AS i,
               LATERAL (SELECT CASE WHEN pg_catalog.get_byte(bytes, i + 3) >= 128
                                    THEN -1::float8 ELSE 1::float8 END AS s,
                               ((pg_catalog.get_byte(bytes, i + 3) & 127) << 1)
                                   | (pg_catalog.get_byte(bytes, i + 2) >> 7) AS e,
                               ((pg_catalog.get_byte(bytes, i + 2) & 127) << 16)
                                   | (pg_catalog.get_byte(bytes, i + 1) << 8)
                                   | pg_catalog.get_byte(bytes, i) AS m) AS w
         ORDER BY i);
END
$$;

COMMENT ON FUNCTION regime_float32le_decode(bytea) IS
    'regime-pg: little-endian float32 bytes to real[], bit-exact';

-- Convert an engine BYTEA embedding: the vector and NULL, or NULL and
-- the reason it cannot be converted (wrong length, NaN or Inf values).
CREATE FUNCTION regime_embedding_convert(embedding bytea,
                                         OUT embedding_vector vector(384),
                                         OUT problem text)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    expected integer := 4 * regime_embedding_dim();
    decoded real[];
BEGIN
    IF pg_catalog.length(embedding) <> expected THEN
        problem := pg_catalog.format('expected %s bytes (%s float32), got %s bytes',
                                     expected, regime_embedding_dim(),
                                     pg_catalog.length(embedding));
        RETURN;
    END IF;
    decoded := regime_float32le_decode(embedding);
    IF decoded OPERATOR(pg_catalog.&&) ARRAY['NaN', 'Infinity', '-Infinity']::real[] THEN
        problem := 'it holds NaN or infinite values';
        RETURN;
    END IF;
    embedding_vector := decoded::vector(384);
END
$$;

COMMENT ON FUNCTION regime_embedding_convert(bytea) IS
    'regime-pg: engine float32 BYTEA to (vector(384), NULL) or (NULL, reason)';

-- The engine's BYTEA embedding as a vector(384), bit-exact.  Raises
-- data_exception when the bytes cannot be converted.
CREATE FUNCTION regime_embedding_to_vector(embedding bytea)
RETURNS vector(384)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    converted record;
BEGIN
    SELECT * INTO converted FROM regime_embedding_convert(embedding);
    IF converted.problem IS NOT NULL THEN
        RAISE EXCEPTION 'cannot convert regime embedding: %', converted.problem
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN converted.embedding_vector;
END
$$;

COMMENT ON FUNCTION regime_embedding_to_vector(bytea) IS
    'regime-pg: engine float32 BYTEA embedding to vector(384), bit-exact';

-- Trigger function: keep embedding_vector equal to regime_embedding.  Never
-- fails the writer's statement on bad bytes: warns and leaves NULL.
CREATE FUNCTION regime_embedding_sync()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    converted record;
BEGIN
    NEW.embedding_vector := NULL;
    IF NEW.regime_embedding IS NOT NULL THEN
        SELECT * INTO converted FROM regime_embedding_convert(NEW.regime_embedding);
        NEW.embedding_vector := converted.embedding_vector;
        IF converted.problem IS NOT NULL THEN
            RAISE WARNING 'regimes row % (region %, as_of_date %): embedding_vector left NULL: %',
                NEW.regime_record_id, NEW.region, NEW.as_of_date, converted.problem;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION regime_embedding_sync() IS
    'regime-pg: trigger keeping regimes.embedding_vector in sync with regime_embedding';

-- The column.  PLAIN storage keeps the 1.5 kB vector inline in the heap
-- tuple; the toaster then moves the engine's BYTEA out of line instead, so
-- a centroid scan reads heap and index pages only, never TOAST.
ALTER TABLE regimes
    ADD COLUMN embedding_vector vector(384),
    ALTER COLUMN embedding_vector SET STORAGE PLAIN;

COMMENT ON COLUMN regimes.embedding_vector IS
    'regime-pg: regime_embedding as vector(384), filled by trigger regime_pg_embedding_sync';

CREATE TRIGGER regime_pg_embedding_sync
    BEFORE INSERT OR UPDATE OF regime_embedding ON regimes
    FOR EACH ROW EXECUTE FUNCTION regime_embedding_sync();
