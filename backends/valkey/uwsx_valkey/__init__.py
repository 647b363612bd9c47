"""uwsx storage adapter for Valkey (``valkey://``, ``valkeys://``, ``valkey+cluster://``).

A thin layer over :mod:`uwsx_redis`: the wire protocol, scripts and key layout are shared;
what differs is detected from the server (``server_name:valkey``, ``valkey_version``), e.g.
native per-field hash expiry from Valkey 9.0.
"""

from __future__ import annotations

from uwsx_valkey.backend import open_backend

__all__ = ["open_backend"]
