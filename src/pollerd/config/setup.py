"""What `pollerd check` and `pollerd run` load at boot: config, manifests, routes and jobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pollerd.config.gcpause import collector_paused
from pollerd.config.jobcache import JobCache
from pollerd.config.manifest import discover_manifests
from pollerd.config.pollers import BrokenJob, JobConfig, ServiceConfig, load_config
from pollerd.config.router import PluginPollerRouter, resolve_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    config: ServiceConfig
    router: PluginPollerRouter
    jobs: tuple[JobConfig, ...]  # runnable (disabled ones included), in file order
    broken: tuple[BrokenJob, ...]  # invalid jobs and jobs of unknown kinds, by line

    def job(self, job_id: str) -> JobConfig | None:
        """The runnable job with this id, if any."""
        return self._jobs_by_id.get(job_id)

    @cached_property
    def _jobs_by_id(self) -> dict[str, JobConfig]:
        # Built at the first lookup: the status page looks up each of 10,000 jobs, which a scan
        # of ``jobs`` made 50 million comparisons.
        return {job.id: job for job in self.jobs}


def load_setup(path: Path, environ: Mapping[str, str], cache: JobCache | None = None) -> Setup:
    """Load pollers.yaml and the manifests it points to, and route every job to its plugin.

    Raises ``ConfigError`` (the file), ``ManifestError`` (a manifest or plugin folder) or
    ``DuplicateKindError`` (a kind declared by two plugins): all fatal at boot. A single bad job
    is not fatal: it is in ``broken`` with its reason. A reader that loads the same file again
    passes its ``cache``: the jobs written as in its last load are not validated again.
    """
    with collector_paused():  # more than half of a 10,000-job load was collector time
        config = load_config(path, environ, cache)
        router = PluginPollerRouter(discover_manifests(config.plugin_dirs))
        jobs, broken = resolve_jobs(config, router)
    for job in broken:
        logger.warning("job_id=%s broken: %s", job.id, job.reason)
    return Setup(config=config, router=router, jobs=tuple(jobs), broken=tuple(broken))
