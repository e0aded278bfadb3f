"""``regime-pg sums enable | disable | status`` on a real server.

``status`` prints the state and exits 3 while the sums are off (as ``db
status`` does for a stopped server); ``enable`` builds them and a compute
then reads them; ``disable`` empties them; a database regime-pg is not in is
one error line and exit 1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from tests.cli_support import assert_one_error, cli
from tests.conftest import Server, create_database, database_dsn, drop_database
from tests.engine import business_days, insert_rows

DIM = 384


@pytest.fixture
def dsn(pg_server: Server, migrated_template: str) -> Iterator[str]:
    name = create_database(pg_server, template=migrated_template)
    dsn = database_dsn(pg_server.admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        insert_rows(conn, "US", business_days(dt.date(2018, 1, 1), 60),
                    np.ones((60, DIM), dtype="<f4"))
    yield dsn
    drop_database(pg_server, name)


def status_lines(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_enable_status_disable(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    off = cli(capsys, "sums", "status", "--dsn", dsn)
    assert off.code == 3
    assert status_lines(off.out) == {"enabled": "no", "regions": "0", "buckets": "0",
                                     "groups": "0"}
    on = cli(capsys, "sums", "enable", "--dsn", dsn)
    assert on.code == 0 and on.out == ""
    assert on.err.startswith("regime-pg: stored bucket sums enabled: ")
    state = cli(capsys, "sums", "status", "--dsn", dsn)
    assert state.code == 0
    lines = status_lines(state.out)
    assert lines["enabled"] == "yes" and lines["regions"] == "1"
    assert int(lines["buckets"]) >= 6 and int(lines["groups"]) >= 1
    again = cli(capsys, "-q", "sums", "enable", "--dsn", dsn)  # a rebuild
    assert (again.code, again.out, again.err) == (0, "", "")
    quiet = cli(capsys, "sums", "disable", "-q", "--dsn", dsn)
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    assert cli(capsys, "sums", "status", "--dsn", dsn).code == 3


def test_unmigrated_database_is_one_error(capsys: pytest.CaptureFixture[str],
                                          empty_db: str) -> None:
    assert_one_error(cli(capsys, "sums", "enable", "--dsn", empty_db), 1,
                     "run: regime-pg migrate")


def test_unknown_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "sums", "rebuild")
    assert result.code == 2 and result.out == ""
    assert "invalid choice: 'rebuild'" in result.err
