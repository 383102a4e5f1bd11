"""Python's cyclic garbage collector held off while a large config is built.

Loading pollers.yaml allocates a few hundred thousand objects that all live on (YAML nodes, dicts,
validated models, job configs). Each allocation burst lets the collector run, and as the surviving
objects pile up it traverses all of them again and again: at 10,000 jobs more than half of the
load was collector time. What a load builds holds no reference cycles (the YAML reader refuses an
alias that refers to itself), so reference counting frees all of it; pausing the collector for the
length of a load only postpones the collection of cycles made elsewhere meanwhile.

Loads may run in several threads at once (a reload in a worker thread while the CLI or a test
loads too): the collector is held off while any of them runs and set back as it was found.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off the cyclic collector for the duration of the block (re-entrant, thread-safe)."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
