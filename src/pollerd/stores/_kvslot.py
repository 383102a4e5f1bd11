"""Whether a tick's commit finds its slot already committed in the job's nats-kv record.

DESIGN §10: a commit whose slot the key's ``last_scheduled_at`` already reaches was made by
someone else and is dropped. DESIGN checks this when re-reading after a lost compare-and-set;
the store checks it on every tick commit, against the record the write is computed from (the
first try included), for two reasons:

- A lost CAS shows only the writes made after the revision the write is checked against, and
  that is the revision the store last saw, not the one read when the tick started: the tick's
  own read, a listing or another write of the job in this process moves it.
- A duplicate tick usually *starts* after the slot was committed: the double commits of the
  long chaos run came from a new leader whose catch-up re-ran slots the old leader had
  committed. Each of those ticks read the job afresh, saw the commit, and its CAS against that
  revision succeeded. Only a look at the stored slot stops it.

The cost is one comparison of two datetimes per write.

Which commit is "ours": tick ids are ``<job>@<slot>``, so a second run of one slot has the same
tick id and cannot be told from a retried write of our own (acknowledgement lost, the publish
repeated and refused as a lost race) by it. The whole tick record can: it holds when the tick
finished, how long it took and which replica ran it. A job that keeps no history has no record;
its ``last_run_at`` (the committing replica's clock reading) stands in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pollerd.errors import SlotCommittedError
from pollerd.stores._kvrecord import Record
from pollerd.stores.base import TickRecord


def already_landed(
    job_id: str, current: Record, tick: TickRecord | None, changes: Mapping[str, object]
) -> bool:
    """True when ``current`` holds this very commit (write nothing, it landed); False when the
    change is to be written. ``SlotCommittedError`` when ``current`` holds another commit of
    the slot or of a later one.

    Only a tick's commit is checked: a write with a tick record and a ``last_scheduled_at``.
    Operator writes (cursor, pause) and the history copy of ``pollerd store copy`` are not.
    """
    slot = changes.get("last_scheduled_at")
    if tick is None or not isinstance(slot, datetime):
        return False
    stored = current.state.last_scheduled_at
    if stored is None or stored < slot:
        return False
    newest = current.ticks[0] if current.ticks else None
    if newest is None:
        if current.state.last_run_at == changes.get("last_run_at"):
            return True
    elif newest == tick:
        return True
    raise SlotCommittedError(job_id, slot, stored, None if newest is None else newest.tick_id)
