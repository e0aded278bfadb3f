"""The Regime Engine's schema at its revision 0027, as the tests and the migration-safety
benchmark build it: its ``alembic_version`` and its ``regimes`` table (BYTEA embeddings,
no vector column) with the index ``ix_regimes_region_date``.

Plain, the way the engine's own Alembic chain leaves it, or declaratively partitioned
(LIST by region, RANGE by date), where only the primary key (it must contain the
partition key), the PARTITION BY clause and the partitions differ: see docs/scaling.md.
"""

from __future__ import annotations

from typing import Literal

import psycopg

#: How ``regimes`` can be partitioned: LIST by ``region`` or RANGE by ``as_of_date``.
PartitionScheme = Literal["list", "range"]

#: The engine's Alembic revision this schema is, in its own ``alembic_version``.
ENGINE_REVISION = "0027"

#: ``regimes``'s columns in table order, as ``(name, definition)``.  The primary key,
#: ``regime_record_id``, comes first; its constraint is added by :func:`engine_schema_sql`.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("regime_record_id", "varchar(64)"),
    ("as_of_date", "date NOT NULL"),
    ("region", "varchar(32) NOT NULL"),
    ("regime_label", "varchar(32) NOT NULL"),
    ("regime_embedding", "bytea NULL"),
    ("embedding_ref", "varchar(255) NULL"),
    ("confidence", "double precision NOT NULL"),
    ("metadata", "jsonb NULL"),
    ("created_at", "timestamptz NOT NULL DEFAULT now()"),
)

#: The column names, in table order.
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)

#: Per scheme: the partitioning method, its key column, and the partitions (name, bound).
PARTITIONS: dict[PartitionScheme, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "list": (
        "LIST",
        "region",
        (
            ("regimes_us", "FOR VALUES IN ('US')"),
            ("regimes_eu", "FOR VALUES IN ('EU')"),
            ("regimes_other", "DEFAULT"),
        ),
    ),
    "range": (
        "RANGE",
        "as_of_date",
        (
            ("regimes_2016", "FOR VALUES FROM ('2016-01-01') TO ('2017-01-01')"),
            ("regimes_2017", "FOR VALUES FROM ('2017-01-01') TO ('2018-01-01')"),
            ("regimes_2018", "FOR VALUES FROM ('2018-01-01') TO ('2019-01-01')"),
            ("regimes_2019", "FOR VALUES FROM ('2019-01-01') TO ('2020-01-01')"),
            ("regimes_other", "DEFAULT"),
        ),
    ),
}


def engine_schema_sql(partition_by: PartitionScheme | None = None) -> str:
    """The engine's DDL at revision 0027, ``regimes`` plain or partitioned ``partition_by``.

    >>> print(engine_schema_sql(), end="")
    CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);
    INSERT INTO alembic_version VALUES ('0027');
    CREATE TABLE regimes (
        regime_record_id varchar(64) PRIMARY KEY,
        as_of_date date NOT NULL,
        region varchar(32) NOT NULL,
        regime_label varchar(32) NOT NULL,
        regime_embedding bytea NULL,
        embedding_ref varchar(255) NULL,
        confidence double precision NOT NULL,
        metadata jsonb NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ix_regimes_region_date ON regimes (region, as_of_date);

    Partitioned, the key also holds the partition key, and the partitions follow the table:

    >>> lines = engine_schema_sql("list").splitlines()
    >>> print(lines[3])
        regime_record_id varchar(64) NOT NULL,
    >>> print(*lines[12:], sep="\\n")
        PRIMARY KEY (regime_record_id, region)
    ) PARTITION BY LIST (region);
    CREATE TABLE regimes_us PARTITION OF regimes FOR VALUES IN ('US');
    CREATE TABLE regimes_eu PARTITION OF regimes FOR VALUES IN ('EU');
    CREATE TABLE regimes_other PARTITION OF regimes DEFAULT;
    CREATE INDEX ix_regimes_region_date ON regimes (region, as_of_date);
    """
    (key, key_type), *others = COLUMNS
    columns = [f"{name} {definition}" for name, definition in others]
    if partition_by is None:
        columns.insert(0, f"{key} {key_type} PRIMARY KEY")
        table_end = ");"
        partitions = []
    else:
        method, partition_key, bounds = PARTITIONS[partition_by]
        columns.insert(0, f"{key} {key_type} NOT NULL")
        columns.append(f"PRIMARY KEY ({key}, {partition_key})")
        table_end = f") PARTITION BY {method} ({partition_key});"
        partitions = [
            f"CREATE TABLE {name} PARTITION OF regimes {bound};" for name, bound in bounds
        ]
    return "\n".join(
        [
            "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY);",
            f"INSERT INTO alembic_version VALUES ('{ENGINE_REVISION}');",
            "CREATE TABLE regimes (",
            ",\n".join(f"    {column}" for column in columns),
            table_end,
            *partitions,
            "CREATE INDEX ix_regimes_region_date ON regimes (region, as_of_date);",
            "",
        ]
    )


#: The plain schema, what the engine's own Alembic chain leaves behind.
ENGINE_SCHEMA_SQL = engine_schema_sql()


def create_engine_schema(
    conn: psycopg.Connection[tuple[object, ...]], partition_by: PartitionScheme | None = None
) -> None:
    """What the Regime Engine's own Alembic chain (at '0027') leaves behind, on ``conn``;
    ``regimes`` partitioned ``partition_by`` if given."""
    conn.execute(engine_schema_sql(partition_by).encode())
