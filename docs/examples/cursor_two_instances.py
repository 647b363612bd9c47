"""Shared cursors on two instances: updates are throttled per connection (leading edge at
once, the latest position on the trailing edge), stored with a TTL and relayed; a client
attaching later gets a snapshot of every live cursor."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import Cursor, LocalPlatform


async def main() -> None:
    a_backend = await uwsx.connect("memory://demo-cursor")
    b_backend = await uwsx.connect("memory://demo-cursor")
    a = Cursor(a_backend, throttle=0.05, select=lambda u: {"name": u["name"]})
    b = Cursor(b_backend, throttle=0.05, select=lambda u: {"name": u["name"]})
    pa, pb = LocalPlatform(), LocalPlatform()

    viewer = pb.connect(name="Viewer")  # watches the canvas on instance B
    await b.attach(viewer, "canvas", pb)
    b.update(pb.connect(name="Bob"), "canvas", {"x": 0, "y": 0}, pb)  # B now relays too
    await asyncio.sleep(0.05)

    alice = pa.connect(name="Alice")
    for x in range(10):  # a burst: the first is sent at once, the last after the throttle
        a.update(alice, "canvas", {"x": x, "y": 5}, pa)
    await asyncio.sleep(0.2)
    moves = [f.data["data"] for f in viewer.frames_on("__cursor:canvas") if f.event == "update"]
    print("viewer on B saw Alice at:", [m for m in moves if m["y"] == 5])
    print("stored cursors:", sorted(e["user"]["name"] for e in await b.list("canvas")))

    late = pb.connect(name="Late")
    await b.attach(late, "canvas", pb)
    print("late viewer snapshot:", sorted(e["user"]["name"] for e in late.frames[0].data))

    await a.remove(alice, pa)
    await asyncio.sleep(0.05)
    print("after remove:", sorted(e["user"]["name"] for e in await b.list("canvas")))
    assert [m["x"] for m in moves if m["y"] == 5] == [0, 9]

    for cursor in (a, b):
        await cursor.close()
    for backend in (a_backend, b_backend):
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
