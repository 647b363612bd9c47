"""pytest plugin of the uwsx contract suite (placeholder until the suite lands)."""

from __future__ import annotations
