"""Test-only fault injection between a tick's publish and its commit; nothing else sets these.

- ``POLLERD_FAULT_EXIT_AFTER_PUBLISH=<job id>``: pollerd exits abruptly (as if killed) after that
  job's events are acknowledged and before its cursor is committed (crash-consistency tests).
- ``POLLERD_FAULT_STOP_AFTER_PUBLISH=<job id>[:<n>]``: pollerd stops itself with SIGSTOP there,
  once, the n-th time (default 1st) that job gets there: the replication tests then let another
  replica lead and SIGCONT it, so it resumes exactly between publish and commit believing it
  still leads.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

FAULT_EXIT_AFTER_PUBLISH = "POLLERD_FAULT_EXIT_AFTER_PUBLISH"
FAULT_STOP_AFTER_PUBLISH = "POLLERD_FAULT_STOP_AFTER_PUBLISH"
FAULT_EXIT_CODE = 86


def fault_exit_after_publish(job_id: str | None) -> Callable[[str], None] | None:
    if not job_id:
        return None

    def crash(current: str) -> None:
        if current == job_id:
            logger.critical("fault injection: exiting after publish, before commit (%s)", current)
            os._exit(FAULT_EXIT_CODE)

    return crash


def fault_stop_after_publish(value: str | None) -> Callable[[str], None] | None:
    if not value:
        return None
    job_id, _, nth = value.partition(":")
    seen = [0]

    def stop(current: str) -> None:
        if current != job_id:
            return
        seen[0] += 1
        if seen[0] == int(nth or 1):
            logger.critical("fault injection: SIGSTOP after publish, before commit (%s)", current)
            os.kill(os.getpid(), signal.SIGSTOP)
            logger.critical("fault injection: continued, committing now (%s)", current)

    return stop


def fault_after_publish(environ: Mapping[str, str]) -> Callable[[str], None] | None:
    """The fault the environment asks for, if any."""
    return fault_exit_after_publish(environ.get(FAULT_EXIT_AFTER_PUBLISH)) or (
        fault_stop_after_publish(environ.get(FAULT_STOP_AFTER_PUBLISH))
    )
