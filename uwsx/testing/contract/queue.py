"""The Queue port contract: jobs with claim tokens and the fenced task state machine.

Every test works in ``space(self.uwsx_space("queue"))``: one space per contract class, so a
table-per-space backend (Postgres) creates one table per class and reuses it across runs.
"""

from __future__ import annotations

from uwsx.testing.contract._queue_jobs import QueueJobsContract
from uwsx.testing.contract._queue_tasks import QueueTasksContract

__all__ = ["QueueContract", "QueueJobsContract", "QueueTasksContract"]


class QueueContract(QueueJobsContract, QueueTasksContract):
    """Every operation of :class:`uwsx.ports.Queue`, including concurrent claimers."""
