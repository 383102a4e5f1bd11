"""Preparing a reload: the config on disk, validated and compared with the running one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pollerd.config.reload import ReloadPlan, plan_reload, restart_needed
from pollerd.config.setup import Setup, load_setup
from pollerd.errors import PollerdError


class ReloadRefusedError(PollerdError):
    """The config on disk is invalid, or would break a running job: the old one keeps running."""


@dataclass(frozen=True, slots=True)
class PreparedReload:
    setup: Setup
    plan: ReloadPlan
    restart_needed: list[str]  # top-level settings that apply only after a restart


def prepare_reload(current: Setup, environ: Mapping[str, str]) -> PreparedReload:
    """Load and validate the config on disk; raises ``ReloadRefusedError`` with every reason."""
    config = current.config
    try:
        # The path as the operator gave it, so messages name the file as at boot.
        new = load_setup(Path(config.source or config.path), environ)
    except PollerdError as exc:
        raise ReloadRefusedError(str(exc)) from exc
    # A job that runs now and is invalid in the new file (a typo) would stop: refuse the whole
    # edit, as for an invalid file. New invalid jobs are only reported, as at boot.
    running = {job.id for job in current.jobs}
    breaking = [broken.reason for broken in new.broken if broken.id in running]
    if breaking:
        raise ReloadRefusedError("\n".join(breaking))
    return PreparedReload(new, plan_reload(current, new), restart_needed(current, new))
