"""Test-only fault injection: with ``POLLERD_FAULT_EXIT_AFTER_PUBLISH`` set to a job id, pollerd
exits abruptly (as if killed) after that job's events are acknowledged and before its cursor is
committed. The crash-consistency tests use it; nothing else sets it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)

FAULT_EXIT_AFTER_PUBLISH = "POLLERD_FAULT_EXIT_AFTER_PUBLISH"
FAULT_EXIT_CODE = 86


def fault_exit_after_publish(job_id: str | None) -> Callable[[str], None] | None:
    if not job_id:
        return None

    def crash(current: str) -> None:
        if current == job_id:
            logger.critical("fault injection: exiting after publish, before commit (%s)", current)
            os._exit(FAULT_EXIT_CODE)

    return crash
