"""The determinism rule is enforced: ruff's banned-API check rejects time, randomness, ids,
threads and task spawning outside ``uwsx/_runtime`` (and allows them inside it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "time.time()": "import time\n\nNOW = time.time()\n",
    "random": "import random\n\nX = random.random()\n",
    "uuid4": "import uuid\n\nX = uuid.uuid4()\n",
    "asyncio.create_task": "import asyncio\n\nasync def f():\n    asyncio.create_task(f())\n",
    "asyncio.sleep": "import asyncio\n\nasync def f() -> None:\n    await asyncio.sleep(1)\n",
    "threading": "import threading\n\nL = threading.Lock()\n",
}


def _ruff(filename: str, source: str) -> subprocess.CompletedProcess[str]:
    """Lint ``source`` as if it lived at ``filename`` in this repository (nothing is written)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    return subprocess.run(
        [ruff, "check", "--select", "TID251", "--no-cache", "--stdin-filename", filename, "-"],
        cwd=ROOT,
        input="from __future__ import annotations\n\n" + source,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
@pytest.mark.parametrize("where", ["uwsx/features/probe.py", "backends/redis/uwsx_redis/probe.py"])
def test_banned_outside_runtime(what: str, where: str) -> None:
    result = _ruff(where, FORBIDDEN[what])
    assert result.returncode == 1, result.stdout
    assert "TID251" in result.stdout


def test_allowed_inside_runtime() -> None:
    result = _ruff("uwsx/_runtime/probe.py", FORBIDDEN["time.time()"])
    assert result.returncode == 0, result.stdout
