"""What a config reload changes: a pure comparison of the running setup and the new one."""

from __future__ import annotations

from dataclasses import dataclass

from pollerd.config.manifest import Manifest
from pollerd.config.pollers import JobConfig
from pollerd.config.setup import Setup


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    jobs_added: tuple[JobConfig, ...]
    jobs_removed: tuple[str, ...]
    jobs_changed: tuple[JobConfig, ...]  # same id, new definition (kind changes included)
    plugins_added: tuple[Manifest, ...]
    plugins_removed: tuple[str, ...]
    plugins_changed: tuple[Manifest, ...]  # same id, new manifest: restarted

    @property
    def empty(self) -> bool:
        return not any(
            (
                self.jobs_added,
                self.jobs_removed,
                self.jobs_changed,
                self.plugins_added,
                self.plugins_removed,
                self.plugins_changed,
            )
        )

    def summary(self) -> dict[str, list[str]]:
        return {
            "added": [job.id for job in self.jobs_added],
            "removed": list(self.jobs_removed),
            "changed": [job.id for job in self.jobs_changed],
            "plugins_added": [m.id for m in self.plugins_added],
            "plugins_removed": list(self.plugins_removed),
            "plugins_changed": [m.id for m in self.plugins_changed],
        }


def plan_reload(old: Setup, new: Setup) -> ReloadPlan:
    old_jobs = {job.id: job for job in old.jobs}
    new_jobs = {job.id: job for job in new.jobs}
    old_plugins = {m.id: m for m in old.router.plugins()}
    new_plugins = {m.id: m for m in new.router.plugins()}
    changed_plugins = tuple(
        m for pid, m in new_plugins.items() if pid in old_plugins and old_plugins[pid] != m
    )
    moved = {m.id for m in changed_plugins}
    return ReloadPlan(
        jobs_added=tuple(job for jid, job in new_jobs.items() if jid not in old_jobs),
        jobs_removed=tuple(jid for jid in old_jobs if jid not in new_jobs),
        jobs_changed=tuple(
            job
            for jid, job in new_jobs.items()
            if jid in old_jobs
            and (old_jobs[jid].config_hash != job.config_hash or _plugin_of(new, job) in moved)
        ),
        plugins_added=tuple(m for pid, m in new_plugins.items() if pid not in old_plugins),
        plugins_removed=tuple(pid for pid in old_plugins if pid not in new_plugins),
        plugins_changed=changed_plugins,
    )


# Service settings a reload does not apply: they need a restart of pollerd.
RESTART_FIELDS = (
    ("nats", "nats"),
    ("store", "store"),
    ("state_dir", "state_dir"),
    ("plugin_dirs", "plugins"),
    ("http", "http"),
    ("shutdown_grace_s", "shutdown_grace"),
    ("max_cursor_bytes", "max_cursor_bytes"),
)


def restart_needed(old: Setup, new: Setup) -> list[str]:
    """The top-level settings that changed on disk and apply only after a restart."""
    return [
        key
        for attr, key in RESTART_FIELDS
        if getattr(old.config, attr) != getattr(new.config, attr)
    ]


def _plugin_of(setup: Setup, job: JobConfig) -> str | None:
    manifest = setup.router.plugin_for(job.kind)
    return manifest.id if manifest else None
