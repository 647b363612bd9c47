"""Features, each written once against the storage ports."""

from __future__ import annotations
