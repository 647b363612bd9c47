"""The SortedLog port contract: sequenced appends, exact trimming, expiry, spaces, atomicity.

The bodies are shared with the Stream contract (see :mod:`uwsx.testing.contract._log_cases`).
"""

from __future__ import annotations

from uwsx.testing.contract._base import ContractBase
from uwsx.testing.contract._log_cases import bind_log_cases

__all__ = ["SortedLogContract"]


class SortedLogContract(ContractBase):
    """Every operation of :class:`uwsx.ports.SortedLog` on ``backend.log``, including 250
    concurrent appends from several clients getting seqs 1..250."""


bind_log_cases(SortedLogContract, "log", exact_trim=True)
