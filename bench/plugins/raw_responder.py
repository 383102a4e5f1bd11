"""A long-lived responder with plain nats-py and json: the baseline of bench/nats.py.

Usage: ``python raw_responder.py <nats url> <subject>``. It answers each request on ``subject``
(queue group ``pollerd``) like raw_echo.py does, in a task per message as the SDK does (callbacks of
one subscription run one at a time), prints ``ready`` once subscribed, and exits on SIGTERM or
when its stdin closes (its parent is gone). It logs in with POLLERD_NATS_USER / _PASSWORD when set.
"""

import asyncio
import json
import os
import signal
import sys

import nats


async def main(url: str, subject: str) -> None:
    nc = await nats.connect(
        url,
        name="bench-raw-responder",
        user=os.environ.get("POLLERD_NATS_USER"),
        password=os.environ.get("POLLERD_NATS_PASSWORD"),
    )
    tasks = set()

    async def answer(msg):
        request = json.loads(msg.data)
        params = request["params"]
        result = {"next_cursor": params["cursor"], "events": []}
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": result}
        await msg.respond(json.dumps(reply).encode())

    async def on_request(msg):
        task = asyncio.create_task(answer(msg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await nc.subscribe(subject, queue="pollerd", cb=on_request)
    await nc.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # readable at EOF: the parent is gone
    print("ready", flush=True)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
