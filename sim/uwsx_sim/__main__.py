"""``python -m uwsx_sim``: the same commands as ``uwsx sim``."""

from __future__ import annotations

from uwsx_sim.cli import main

raise SystemExit(main())
