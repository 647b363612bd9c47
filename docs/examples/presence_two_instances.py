"""Presence on two instances sharing one backend (memory:// here; redis://... or
postgresql://... in production): joins and leaves reach the other instance's clients as
``presence_diff`` frames, and a crashed instance's users are announced as leaves once their
entries expire (``ttl``)."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import LocalPlatform, Presence


def names(presence_frames: list[uwsx.platform.Frame]) -> set[str]:
    """What a browser would show after applying the frames it received."""
    shown: dict[str, object] = {}
    for frame in presence_frames:
        if frame.event == "presence_state":
            shown = dict(frame.data)
        elif frame.event == "presence_diff":
            shown.update(frame.data["joins"])
            for key in frame.data["leaves"]:
                shown.pop(key, None)
    return set(shown)


async def main() -> None:
    def public(user: dict[str, object]) -> dict[str, object]:
        return {"id": user["id"], "name": user["name"]}

    a_backend = await uwsx.connect("memory://demo-presence")
    b_backend = await uwsx.connect("memory://demo-presence")
    a = Presence(a_backend, select=public, heartbeat=0.2, ttl=1.0)
    b = Presence(b_backend, select=public, heartbeat=0.2, ttl=1.0)
    pa, pb = LocalPlatform(), LocalPlatform()

    alice = pa.connect(id="alice", name="Alice")  # on instance A
    bob = pb.connect(id="bob", name="Bob")  # on instance B
    await b.join(bob, "room", pb)
    await a.join(alice, "room", pa)
    await asyncio.sleep(0.05)  # let A's join event reach B
    print("Bob sees:", sorted(names(bob.frames_on("__presence:room"))))
    print("cluster list:", sorted(u["name"] for u in await b.list("room")))

    # Instance A crashes: no leave is ever sent. B's heartbeat notices Alice's entry expired.
    await a.close()
    for _ in range(30):
        await asyncio.sleep(0.1)
        if names(bob.frames_on("__presence:room")) == {"bob"}:
            break
    print("after A crashed, Bob sees:", sorted(names(bob.frames_on("__presence:room"))))
    print("stats on B:", b.stats())
    assert names(bob.frames_on("__presence:room")) == {"bob"}

    await b.leave(bob, pb)
    await b.close()
    for backend in (a_backend, b_backend):
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
