"""A capped lobby spanning two instances: atomic capacity, roles, role-filtered messages,
metadata, and dissolving the group everywhere."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import Group, LocalPlatform


async def main() -> None:
    a_backend = await uwsx.connect("memory://demo-groups")
    b_backend = await uwsx.connect("memory://demo-groups")
    a = Group(a_backend, "lobby", max_members=3, meta={"game": "chess"})
    b = Group(
        b_backend,
        "lobby",
        max_members=3,
        on_full=lambda conn, role: print("lobby full, refused a", role),
        on_close=lambda: print("instance B: lobby closed"),
    )
    pa, pb = LocalPlatform(), LocalPlatform()
    await a.start()  # stores the initial metadata, subscribes to group events

    host = pa.connect(name="host")
    await a.join(host, pa, "admin")
    players = [pb.connect(name=f"p{i}") for i in range(3)]
    joined = [await b.join(p, pb) for p in players]  # the third is one too many
    print("joins on B:", joined, "| members:", await a.count())
    print("meta:", await b.get_meta())

    await b.publish(pb, "chat", {"text": "hi all"})
    await a.publish(pa, "admin-only", {"text": "psst"}, role="admin")
    await asyncio.sleep(0.05)
    print("host received:", [f.event for f in host.frames])

    await a.dissolve(pa)
    await asyncio.sleep(0.05)
    print("B closed:", b.closed, "| late join:", await b.join(pb.connect(), pb))
    assert joined == [True, True, False]

    for group in (a, b):
        await group.close()
    for backend in (a_backend, b_backend):
        await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
