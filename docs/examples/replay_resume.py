"""A client that reconnects with its last seen seq gets exactly what it missed."""

from __future__ import annotations

import asyncio

import uwsx
from uwsx import LocalPlatform, ReplayBuffer


async def main() -> None:
    backend = await uwsx.connect("memory://demo-replay")
    platform = LocalPlatform()
    replay = ReplayBuffer(backend, size=100)

    for n in range(1, 6):
        seq = await replay.publish(platform, "scores", "goal", {"n": n})
        print("stored seq", seq)

    # The client saw seq 3 before its connection dropped; it reconnects and resumes.
    client = platform.connect(id="fan")
    await replay.replay(client, "scores", 3, platform)
    for frame in client.frames:
        print(frame.event, frame.data)

    print(await replay.gap("scores", 3))
    await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
