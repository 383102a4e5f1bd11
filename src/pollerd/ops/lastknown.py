"""`pollerd jobs` when pollers.yaml is invalid: what the running service still runs.

A reload that fails validation leaves the service on its previous config, so an operator who just
broke the file still wants to see the jobs that run. The admin address is read from the raw file,
best effort (the file is invalid, possibly not even YAML); without one it is the default address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pollerd.config.models import DEFAULT_LISTEN, HttpModel, parse_listen
from pollerd.config.yamlfile import read_yaml
from pollerd.errors import PollerdError
from pollerd.ops.adminclient import call, service_is_up

logger = logging.getLogger(__name__)

# A top-level `http: host:port` line, for a file that does not parse as YAML at all.
_HTTP_LINE = re.compile(r"^http:\s*['\"]?([^'\"#\s{]+)")


@dataclass(frozen=True, slots=True)
class RunningService:
    """What a running service answered: its jobs (as in `pollerd jobs --json`) and readiness."""

    address: str
    jobs: list[dict[str, Any]]
    readiness: dict[str, Any]


def admin_address(path: Path, environ: Mapping[str, str]) -> tuple[str, int] | None:
    """The admin API address the file names, else the default; None when it says ``off`` or
    there is no such file (a wrong ``-c`` says nothing about which service to ask)."""
    if not path.is_file():
        return None
    try:
        document = read_yaml(path, environ, path.name)
    except PollerdError:
        return _address_from_lines(path)
    data = document.data if isinstance(document.data, dict) else {}
    value = data.get("http")
    if value is None:
        return parse_listen(DEFAULT_LISTEN)
    try:
        model = HttpModel.model_validate(value if isinstance(value, dict) else {"listen": value})
    except ValidationError:
        return parse_listen(DEFAULT_LISTEN)
    return model.address


def _address_from_lines(path: Path) -> tuple[str, int] | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        match = _HTTP_LINE.match(line)
        if match is not None:
            try:
                return parse_listen(match.group(1))
            except ValueError:
                break
    return parse_listen(DEFAULT_LISTEN)


async def query_running_service(address: tuple[str, int] | None) -> RunningService | None:
    """The jobs and readiness of the service at ``address``; None when none answers there."""
    if address is None:
        return None
    host, port = address
    if not await service_is_up(host, port):
        return None
    try:
        jobs_status, jobs = await call(host, port, "GET", "/v1/jobs")
        _, readiness = await call(host, port, "GET", "/readyz")
    except PollerdError as exc:
        logger.debug("the service at %s:%d stopped answering: %s", host, port, exc)
        return None
    if jobs_status != 200 or not isinstance(jobs, list):
        return None
    return RunningService(
        address=f"{host}:{port}",
        jobs=jobs,
        readiness=readiness if isinstance(readiness, dict) else {},
    )


def keeps_running_line(service: RunningService) -> str:
    line = f"the service on {service.address} keeps running the previous config"
    reasons = service.readiness.get("reasons")
    refused = reasons.get("config") if isinstance(reasons, dict) else None
    return line + (" (its last reload was refused)" if refused else "")


def format_running(service: RunningService) -> str:
    """A short table of the running service's jobs, under a line saying why it is shown."""
    lines = [keeps_running_line(service) + "; its jobs:"]
    header = ("ID", "KIND", "STATE", "LAST", "LAST RUN", "ERRORS")
    rows = [
        (
            str(job.get("id")),
            str(job.get("kind") or "?"),
            str(job.get("state")),
            str(job.get("last_status") or "-"),
            str(job.get("last_run_at") or "-"),
            str(job.get("consecutive_errors", 0)),
        )
        for job in service.jobs
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for cells in (header, *rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines)
