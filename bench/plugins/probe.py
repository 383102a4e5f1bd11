"""A long-lived SDK plugin for bench/scale.py: answers at once and records each tick's lateness.

Lateness is measured where a plugin author would see it: the handler's start minus the tick's
``scheduled_at``. Each record is ``<handler start, unix s> <lateness s> <job_id>``; a thread writes
them to ``probe.out`` in the plugin folder (its working directory) twice a second, so the handler
itself only appends to a list.
"""

import threading
import time
from pathlib import Path

from pollerd.sdk import Plugin, Tick, TickResult

FLUSH_INTERVAL_S = 0.5
OUT = Path("probe.out")

plugin = Plugin("probe")
_records: list[tuple[float, float, str]] = []


@plugin.poller("probe")
async def probe(tick: Tick) -> TickResult:
    started = time.time()
    _records.append((started, started - tick.scheduled_at.timestamp(), tick.job_id))
    return TickResult()


def _flush_forever() -> None:
    with OUT.open("a") as out:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            taken = _records[:]
            del _records[: len(taken)]
            out.writelines(f"{start:.6f} {late:.6f} {job}\n" for start, late, job in taken)
            out.flush()


if __name__ == "__main__":
    threading.Thread(target=_flush_forever, name="probe-flush", daemon=True).start()
    plugin.run()
