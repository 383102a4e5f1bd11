"""What the reading child keeps between two reloads, moved after each load to compact memory.

The child (``pollerd.service.reloading``) keeps the jobs of its last good load
(``pollerd.config.jobcache``) and its last answer (``pollerd.service.setupdelta``): at 10,000 jobs
about 9 MB of objects. They are allocated during the load among many more that live only for
it (YAML events and nodes, pydantic's models), and CPython's allocator gives a block of
memory (an arena) back to the system only when nothing in it lives: a few kept objects in each
pinned the load's arenas, and the child stayed at about 85 MB between reloads, 45 MB more than its
imports. ``compact`` copies what is kept through one pickle, drops the copy the load made, then
builds the kept objects again in fresh arenas: the child goes back to about 50 MB. It runs after
the answer is written (0.15 s at 10,000 jobs), so pollerd does not wait for it.

One pickle for the cache and the answer: a job the cache holds is the very object of the answer
(the delta names it by position because of that), and pickling both at once keeps them one object.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import pickle
from dataclasses import dataclass, field

from pollerd.config.gcpause import collector_paused
from pollerd.config.jobcache import JobCache
from pollerd.config.setup import Setup
from pollerd.service.setupdelta import SetupDelta, encode_setup

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReaderState:
    """The child's memory from one request to the next: its jobs and its last answer."""

    cache: JobCache = field(default_factory=JobCache)
    answered: tuple[int, Setup] | None = None  # the last setup answered, and its number

    def encode(self, setup: Setup, base: int | None) -> SetupDelta:
        """``setup`` as the next answer, which is kept; relative to the last one if it is the
        ``base`` pollerd names (pollerd holds it).

        A function of its own: no local name keeps the last answer alive past ``compact``."""
        answered = self.answered
        number = answered[0] + 1 if answered is not None else 1
        relative = answered if answered is not None and answered[0] == base else None
        self.answered = (number, setup)
        return encode_setup(setup, number, relative)

    def compact(self) -> None:
        """Build what is kept again after the load's memory is freed, and give that back."""
        data = pickle.dumps((self.cache, self.answered), protocol=pickle.HIGHEST_PROTOCOL)
        self.cache, self.answered = JobCache(), None  # the last references to the load's copy
        gc.collect()  # the load's own garbage, if any of it is cyclic
        with collector_paused():  # what is kept holds no cycles; see pollerd.config.gcpause
            self.cache, self.answered = pickle.loads(data)
        del data
        trim_malloc()


def trim_malloc() -> None:
    """Hand the C allocator's free memory back to the system: glibc keeps it otherwise.

    Other C libraries have no ``malloc_trim``; their memory is left as it is."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        logger.debug("no malloc_trim in this C library")
