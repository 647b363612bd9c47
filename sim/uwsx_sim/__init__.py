"""uwsx_sim: run the real uwsx features for N instances under a seeded virtual-time loop.

The same seed gives the same run (the same trace hash) in every process. See ``docs/sim.md``
for the model, the fault semantics and every invariant; ``uwsx sim list`` for the scenarios.
"""

from __future__ import annotations

from uwsx_sim.clock import Rng, SimClock
from uwsx_sim.loop import NODE, Deadlock, NodeRef, SimLoop, SimViolation

__all__ = [
    "NODE",
    "Deadlock",
    "NodeRef",
    "Rng",
    "SimClock",
    "SimLoop",
    "SimViolation",
    "__version__",
]

__version__ = "0.1.0"
