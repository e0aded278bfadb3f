"""The released version 3 of the centroid, installed beside the current one for comparison.

``install_v3(conn)`` creates the functions of ``prototypes--3.sql`` (and the
one of ``prototypes--2.sql`` they call) under the names of ``V3_FUNCTIONS``,
taken from the released files (checked against ``sql/SHA256SUMS``) with
every call among them renamed, so ``regime_v3_for_window(region, NULL,
start, end)`` computes what revision 0010 did.

>>> V3_FUNCTIONS["regime_prototype_for_window"]
('prototypes--3.sql', 'regime_v3_for_window')
"""

from __future__ import annotations

import re

from regime_pg.connection import Connection
from regime_pg.migration_ops import released_function

#: Released functions replaced or called on the way to the centre, callees first,
#: renamed for the reference: name in the released file -> (file, name in the test).
V3_FUNCTIONS = {
    "regime_window_distances": ("prototypes--3.sql", "regime_v3_distances"),
    "regime_window_bucket_states": ("prototypes--3.sql", "regime_v3_bucket_states"),
    "regime_window_parts": ("prototypes--3.sql", "regime_v3_parts"),
    "regime_prototype_compute": ("prototypes--3.sql", "regime_v3_compute"),
    "regime_prototype_compute_custom_plans": ("prototypes--2.sql", "regime_v3_custom_plans"),
    "regime_prototype_for_window": ("prototypes--3.sql", "regime_v3_for_window"),
}


def install_v3(conn: Connection) -> None:
    """The released version 3 of the centroid, under the names of V3_FUNCTIONS."""
    names = {old: new for old, (_, new) in V3_FUNCTIONS.items()}
    pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
    conn.execute("SET search_path = public")
    for function, (released, _) in V3_FUNCTIONS.items():
        text = pattern.sub(lambda m: names[m.group(1)], released_function(released, function))
        conn.execute(text.encode())
    conn.execute("RESET search_path")
