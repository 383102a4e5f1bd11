"""Which plugin owns which poller kind, and which configured jobs can run (DESIGN §1, §3)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pollerd.config.jobschema import ConfigSchema, config_line
from pollerd.config.manifest import Manifest
from pollerd.config.pollers import BrokenJob, JobConfig, ServiceConfig
from pollerd.config.problems import format_loc
from pollerd.errors import DuplicateKindError

logger = logging.getLogger(__name__)


class PluginPollerRouter:
    """Maps each poller kind to the one plugin manifest that declares it."""

    def __init__(self, manifests: Iterable[Manifest] = ()) -> None:
        self._plugins: dict[str, Manifest] = {}
        self._kinds: dict[str, str] = {}
        for manifest in manifests:
            self.register(manifest)

    def register(self, manifest: Manifest) -> None:
        """Add a plugin, or replace the one with the same id (its old kinds are released).

        Raises ``DuplicateKindError`` if another plugin owns one of its kinds; nothing changes then.
        """
        for kind in manifest.kinds:
            owner_id = self._kinds.get(kind)
            if owner_id is not None and owner_id != manifest.id:
                owner = self._plugins[owner_id]
                raise DuplicateKindError(
                    kind,
                    (owner.id, f"{owner.path}:{owner.kind_line(kind)}"),
                    (manifest.id, f"{manifest.path}:{manifest.kind_line(kind)}"),
                )
        self.unregister(manifest.id)
        self._plugins[manifest.id] = manifest
        for kind in manifest.kinds:
            self._kinds[kind] = manifest.id
        logger.debug("plugin=%s registered for kinds %s", manifest.id, ", ".join(manifest.kinds))

    def unregister(self, plugin_id: str) -> None:
        """Remove a plugin and release its kinds; unknown ids are ignored."""
        manifest = self._plugins.pop(plugin_id, None)
        if manifest is None:
            return
        for kind in manifest.kinds:
            if self._kinds.get(kind) == plugin_id:
                del self._kinds[kind]

    def plugin_for(self, kind: str) -> Manifest | None:
        owner_id = self._kinds.get(kind)
        return self._plugins[owner_id] if owner_id is not None else None

    def plugin(self, plugin_id: str) -> Manifest | None:
        return self._plugins.get(plugin_id)

    def plugins(self) -> list[Manifest]:
        """Every registered plugin, sorted by id."""
        return [self._plugins[plugin_id] for plugin_id in sorted(self._plugins)]

    def kinds(self) -> dict[str, str]:
        """kind → plugin id, sorted by kind."""
        return {kind: self._kinds[kind] for kind in sorted(self._kinds)}


def resolve_jobs(
    config: ServiceConfig, router: PluginPollerRouter
) -> tuple[list[JobConfig], list[BrokenJob]]:
    """Split the configured jobs into those a plugin can run and the broken ones.

    Runnable jobs include disabled ones (the caller skips them). Broken jobs are ``config.broken``
    plus every job whose kind no plugin owns or whose config its plugin's schema refuses,
    ordered by line.
    """
    known = ", ".join(router.kinds()) or "(no plugins loaded)"
    schemas: dict[str, ConfigSchema | None] = {}
    runnable: list[JobConfig] = []
    broken = list(config.broken)
    for job in config.jobs:
        manifest = router.plugin_for(job.kind)
        if manifest is None:
            where = config.where(job.line_of("kind"), f"jobs[{job.index}].kind")
            reason = f"{where}: unknown kind {job.kind!r}; known kinds: {known}"
            broken.append(BrokenJob(job.id, job.kind, job.line, reason, (reason,)))
            continue
        if manifest.id not in schemas:
            declared = manifest.config_schema
            schemas[manifest.id] = ConfigSchema(declared) if declared is not None else None
        schema = schemas[manifest.id]
        problems = _config_problems(config, job, schema) if schema is not None else ()
        if problems:
            broken.append(BrokenJob(job.id, job.kind, job.line, "; ".join(problems), problems))
        else:
            runnable.append(job)
    broken.sort(key=lambda item: item.line)
    return runnable, broken


def _config_problems(
    config: ServiceConfig, job: JobConfig, schema: ConfigSchema
) -> tuple[str, ...]:
    located = [
        (config_line(job, inner), format_loc(("jobs", job.index, "config", *inner)), message)
        for inner, message in schema.problems(job.config)
    ]
    return tuple(f"{config.where(line, loc)}: {message}" for line, loc, message in sorted(located))
