"""The routines regime-pg created in ``public``, as the catalogs show them.

One query for every test that compares routines before and after a
migration: the routines of schema ``public`` that no extension owns (not
pgvector's), one row each, ordered by the first column.  Each test chooses
what it compares of them.

>>> "p.proconfig" in routines_query("p.oid::regprocedure::text, p.proconfig")
True
"""

from __future__ import annotations

from typing import LiteralString


def routines_query(columns: LiteralString) -> LiteralString:
    """``SELECT columns`` (of ``pg_proc AS p``) for each of regime-pg's routines, by column 1."""
    return f"""
    SELECT {columns}
      FROM pg_proc AS p
     WHERE p.pronamespace = 'public'::regnamespace
       AND NOT EXISTS (SELECT FROM pg_depend AS d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                          AND d.deptype = 'e')
     ORDER BY 1
"""
