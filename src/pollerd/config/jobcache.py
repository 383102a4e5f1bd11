"""The valid jobs of the last load of a pollers.yaml, by the text each is written in.

A reload that changes one job of 10,000 should not validate the other 9,999 again. A job written
in the same text (at the same column, holding no alias: ``yamlfile.Source``) with the same
``defaults`` is the same ``JobConfig``: the reader does not build its data (``parse_yaml``'s
``known``), validate it with pydantic or hash it, and only moves it to its new line and position
(``JobConfig.moved``). Jobs that a plugin's schema refuses are caught after this, on every load.

What a job is depends on ``defaults`` too, which are merged into it: the cache holds the jobs of
one ``defaults``, compared by their repr (``1``, ``1.0`` and ``true`` are three values to the
validator). When they changed, the file is parsed again with no item skipped. Broken jobs are
never kept: there are few, and their messages name lines.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable

from pollerd.config.jobs import JobConfig
from pollerd.config.yamlfile import Source, YamlDocument

logger = logging.getLogger(__name__)


class JobCache:
    """The jobs of the last successful load that holds it (one reader of one file)."""

    def __init__(self) -> None:
        self._defaults: str | None = None
        self._jobs: dict[Source, JobConfig] = {}

    @property
    def known(self) -> Container[Source]:
        """The sources of the jobs kept: ``parse_yaml`` skips their items."""
        return self._jobs

    def fits(self, data: object) -> bool:
        """The jobs kept were validated with the ``defaults`` of ``data`` (a parsed file)."""
        return self._defaults == _defaults_key(data)

    def job(self, source: Source, line: int, index: int) -> JobConfig:
        """The job kept for ``source``, moved to ``line`` and item ``index`` of ``jobs``."""
        return self._jobs[source].moved(line, index)

    def keep(self, document: YamlDocument, jobs: Iterable[JobConfig]) -> None:
        """Keep the valid ``jobs`` of a successful load of ``document``, and nothing older."""
        sources = document.sources
        self._defaults = _defaults_key(document.data)
        self._jobs = {sources[job.index]: job for job in jobs if job.index in sources}

    def __len__(self) -> int:
        return len(self._jobs)


def _defaults_key(data: object) -> str:
    return repr(data.get("defaults") if isinstance(data, dict) else None)
