"""``python -m regime_pg``: the same as the ``regime-pg`` command."""

from regime_pg.cli import main

raise SystemExit(main())
