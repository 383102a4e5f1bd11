"""Serve a plugin as a long-lived NATS micro service (``POLLERD_MODE=long_lived``, DESIGN §5).

``Plugin.run()`` imports this module only in long-lived mode, so one-shot plugins never import nats.

Environment (pollerd sets it for the plugins it supervises; set it yourself for an external one):

    POLLERD_NATS_URL        required, e.g. nats://127.0.0.1:4222
    POLLERD_NATS_TOKEN      optional auth token
    POLLERD_NATS_USER       optional user, with POLLERD_NATS_PASSWORD
    POLLERD_NATS_PASSWORD
    POLLERD_NATS_CREDS      optional path to a .creds file (needs the nkeys package)
    POLLERD_NATS_TLS_CA     optional CA file (PEM) to verify the server's certificate
    POLLERD_NATS_TLS_CERT   optional client certificate (PEM), with POLLERD_NATS_TLS_KEY
    POLLERD_NATS_TLS_KEY
    POLLERD_SUBJECT_PREFIX  ticks are served on <prefix>.tick; default pollerd.plugins.<plugin id>
    POLLERD_PLUGIN_VERSION  semantic version shown by $SRV.INFO; default 0.0.0
    POLLERD_PARENT_PID      exit when this process is gone; unset: the parent at start (unless
                            that is pid 1); 0: never (a detached external plugin)

The service is named after the plugin id (characters outside ``[A-Za-z0-9_-]`` become ``_``), has
one endpoint ``tick`` on ``<prefix>.tick`` in queue group ``pollerd`` (replicas share the load), and
its ``$SRV.INFO`` metadata carries ``plugin``, ``kinds`` (comma-separated) and ``protocol``.

A subscription runs its callbacks one at a time (DESIGN §11), so every request is handled in a task
of its own, at most ``plugin.max_concurrency`` at once. On SIGTERM or SIGINT, or when the watched
parent is gone, the service stops taking requests, lets the ticks already delivered finish for up
to ``DRAIN_GRACE_S`` (cancelling the rest: pollerd sees a timeout), drains the connection and
returns (the process exits 0).

A handler still running near its tick's deadline is cancelled and the tick answered with a
transient error (``Plugin.handle``). A sync handler's thread cannot be cancelled: it is left
running, and once more than ``plugin.max_stuck_threads`` handlers are stuck past their deadline
the service stops taking requests, lets the others finish and exits with ``EXIT_STUCK``, so that
pollerd restarts the process (the only way to end a stuck thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from nats.aio.client import Client
from nats.errors import Error as NatsClientError
from nats.errors import MaxPayloadError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from pollerd import wire
from pollerd.errors import NatsError
from pollerd.natsio import connection as natsconn
from pollerd.sdk._stop import PARENT_POLL_S, StopTrigger, watched_parent
from pollerd.wire import QUEUE_GROUP, TICK_ENDPOINT, service_name, tick_subject

__all__ = ["ServedPlugin", "ServiceSettings", "TickService", "serve", "watched_parent"]

logger = logging.getLogger(__name__)

ENV_NATS_URL = "POLLERD_NATS_URL"
# connect() option -> the variable it comes from (credentials and TLS files)
CONNECT_ENV = {
    key: f"POLLERD_NATS_{key.upper()}"
    for key in ("token", "user", "password", "creds", "tls_ca", "tls_cert", "tls_key")
}
ENV_SUBJECT_PREFIX = "POLLERD_SUBJECT_PREFIX"
ENV_PLUGIN_VERSION = "POLLERD_PLUGIN_VERSION"

DEFAULT_VERSION = "0.0.0"
DEFAULT_PREFIX_ROOT = "pollerd.plugins"
DRAIN_GRACE_S = 10.0
STUCK_CHECK_S = 0.5
EXIT_STUCK = 70  # sysexits EX_SOFTWARE: handlers stuck past their deadline; a restart ends them
DEFAULT_MAX_STUCK = 8
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


class ServedPlugin(Protocol):
    """What the service needs from ``pollerd.sdk.Plugin``."""

    @property
    def plugin_id(self) -> str: ...

    @property
    def kinds(self) -> tuple[str, ...]: ...

    @property
    def max_concurrency(self) -> int: ...

    async def handle(self, frame: bytes, *, waited_s: float = 0.0) -> bytes: ...


def overdue_handlers(plugin: object) -> list[str]:
    """Job ids of the plugin's handlers still running past their deadline (none for a stand-in
    without ``overdue_handlers``)."""
    overdue = getattr(plugin, "overdue_handlers", None)
    return list(overdue()) if callable(overdue) else []


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """The service's settings, read from the environment once at start."""

    nats_url: str
    subject_prefix: str
    version: str = DEFAULT_VERSION
    connect_options: Mapping[str, str] = field(default_factory=dict)  # see CONNECT_ENV
    parent_pid: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, plugin_id: str, ppid: int) -> Self:
        url = environ.get(ENV_NATS_URL, "").strip()
        if not url:
            raise NatsError(
                f"plugin {plugin_id!r} cannot serve ticks: {ENV_NATS_URL} is not set "
                "(pollerd sets it for the plugins it starts; set it for an external plugin)"
            )
        version = environ.get(ENV_PLUGIN_VERSION, "").strip() or DEFAULT_VERSION
        if not _SEMVER.match(version):
            logger.warning(
                "plugin %s: %s=%r is not a semantic version; using %s",
                plugin_id,
                ENV_PLUGIN_VERSION,
                version,
                DEFAULT_VERSION,
            )
            version = DEFAULT_VERSION
        return cls(
            nats_url=url,
            subject_prefix=environ.get(ENV_SUBJECT_PREFIX, "").strip()
            or f"{DEFAULT_PREFIX_ROOT}.{plugin_id}",
            version=version,
            connect_options={k: environ[v] for k, v in CONNECT_ENV.items() if environ.get(v)},
            parent_pid=watched_parent(environ, ppid),
        )


def _job_id_of(frame: bytes) -> str:
    """The job id of a request frame, for log lines (``?`` when the frame has none)."""
    try:
        params = json.loads(frame).get("params") or {}
        return str(params.get("job_id", "?"))
    except (ValueError, AttributeError):
        return "?"


def _tick_id_of(frame: bytes) -> str | None:
    try:
        tick_id = json.loads(frame).get("id")
    except (ValueError, AttributeError):
        return None
    return tick_id if isinstance(tick_id, str) else None


class TickService:
    """The micro service of one plugin on a connection, as an async context manager.

    Leaving the context stops it: no new requests, in-flight ticks get ``drain_grace_s`` to finish,
    the rest are cancelled unanswered. The connection stays open (it belongs to the caller).
    """

    def __init__(
        self,
        plugin: ServedPlugin,
        nc: Client,
        *,
        subject_prefix: str,
        version: str = DEFAULT_VERSION,
        drain_grace_s: float = DRAIN_GRACE_S,
        stuck_check_s: float = STUCK_CHECK_S,
    ) -> None:
        self._plugin = plugin
        self._nc = nc
        self.plugin_id = plugin.plugin_id
        self.subject = tick_subject(subject_prefix)
        self._version = version
        self._drain_grace_s = drain_grace_s
        self._slots = asyncio.Semaphore(max(1, plugin.max_concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._service: Service | None = None
        self._stuck_check_s = stuck_check_s
        self._max_stuck = int(getattr(plugin, "max_stuck_threads", DEFAULT_MAX_STUCK))
        self._watchdog: asyncio.Task[None] | None = None
        # Resolves with the reason when too many handlers are stuck past their deadline.
        self.stuck: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def __aenter__(self) -> Self:
        try:
            service = await add_service(
                self._nc,
                name=service_name(self.plugin_id),
                version=self._version,
                description=f"pollerd plugin {self.plugin_id}",
                metadata={
                    "plugin": self.plugin_id,
                    "kinds": ",".join(self._plugin.kinds),
                    "protocol": str(wire.PROTOCOL),
                },
            )
            self._service = service
            await service.add_endpoint(
                name=TICK_ENDPOINT,
                subject=self.subject,
                queue_group=QUEUE_GROUP,
                handler=self._on_request,
            )
            await self._nc.flush()
            self._watchdog = asyncio.create_task(self._watch_stuck())
        except (NatsClientError, OSError, TimeoutError) as exc:
            await self.stop()
            raise NatsError(
                f"plugin {self.plugin_id!r} cannot serve {self.subject}: "
                f"{natsconn.describe_error(exc)}"
            ) from exc
        logger.info(
            "plugin %s serving %s for kinds %s (queue group %s)",
            self.plugin_id,
            self.subject,
            ",".join(self._plugin.kinds),
            QUEUE_GROUP,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _watch_stuck(self) -> None:
        """Resolve ``stuck`` once more than ``max_stuck_threads`` handlers outlive their tick."""
        while True:
            await asyncio.sleep(self._stuck_check_s)
            jobs = overdue_handlers(self._plugin)
            if len(jobs) > self._max_stuck:
                self.stuck.set_result(
                    f"{len(jobs)} handlers still run past their tick's deadline (jobs: "
                    f"{', '.join(sorted(set(jobs)))}), more than max_stuck_threads="
                    f"{self._max_stuck}: a thread cannot be cancelled, so the process exits with "
                    f"code {EXIT_STUCK} for pollerd to restart it"
                )
                return

    async def _on_request(self, request: Request) -> None:
        """The endpoint callback: answer in a task of its own, which waits for a free slot.

        The callback returns at once (the subscription runs callbacks one at a time), so the
        time a request waits for a slot is known and taken off its budget.
        """
        task = asyncio.create_task(self._answer(request, asyncio.get_running_loop().time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Request, received: float) -> None:
        frame = request.data
        async with self._slots:
            try:
                waited_s = asyncio.get_running_loop().time() - received
                reply = await self._plugin.handle(frame, waited_s=waited_s)
            except Exception as exc:  # the SDK's handle never raises; a stand-in might
                logger.exception(
                    "tick job_id=%s plugin=%s: the handler raised",
                    _job_id_of(frame),
                    self.plugin_id,
                )
                reply = wire.encode_error(
                    _tick_id_of(frame), wire.CODE_TRANSIENT, f"plugin failed: {exc!r}"
                )
            await self._respond(request, frame, reply)

    async def _respond(self, request: Request, frame: bytes, reply: bytes) -> None:
        try:
            try:
                await request.respond(reply)
            except MaxPayloadError:
                await request.respond(
                    wire.encode_error(
                        _tick_id_of(frame),
                        wire.CODE_TRANSIENT,
                        f"the reply is {len(reply)} bytes, over the NATS server's max_payload",
                    )
                )
        except (NatsClientError, OSError, ValueError) as exc:
            logger.warning(
                "tick job_id=%s plugin=%s: cannot send the reply: %s",
                _job_id_of(frame),
                self.plugin_id,
                natsconn.describe_error(exc),
            )

    async def stop(self) -> None:
        """Stop taking requests; give in-flight ticks the grace period; cancel what is left."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.wait({self._watchdog})
        service, self._service = self._service, None
        if service is not None:
            try:
                await service.stop()
            except (NatsClientError, OSError) as exc:
                logger.warning(
                    "plugin %s: cannot unsubscribe cleanly: %s",
                    self.plugin_id,
                    natsconn.describe_error(exc),
                )
        if not self._tasks:
            return
        logger.info(
            "plugin %s: waiting up to %gs for %d in-flight ticks",
            self.plugin_id,
            self._drain_grace_s,
            len(self._tasks),
        )
        _done, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning(
                "plugin %s: cancelled %d ticks still running after %gs",
                self.plugin_id,
                len(pending),
                self._drain_grace_s,
            )
            await asyncio.gather(*pending, return_exceptions=True)


async def serve(
    plugin: ServedPlugin,
    environ: Mapping[str, str],
    *,
    drain_grace_s: float = DRAIN_GRACE_S,
    parent_poll_s: float = PARENT_POLL_S,
) -> None:
    """Serve ``plugin`` until SIGTERM/SIGINT or the parent's death. Raises ``NatsError``.

    Logs go to stderr (which pollerd forwards to its own log) unless logging is already set up.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    settings = ServiceSettings.from_environ(environ, plugin_id=plugin.plugin_id, ppid=os.getppid())
    async with StopTrigger(settings.parent_pid, parent_poll_s) as stop:
        nc = await natsconn.connect(
            settings.nats_url,
            name=f"pollerd-plugin-{plugin.plugin_id}",
            **settings.connect_options,  # type: ignore[arg-type]  # str options only
        )
        try:
            async with TickService(
                plugin,
                nc,
                subject_prefix=settings.subject_prefix,
                version=settings.version,
                drain_grace_s=drain_grace_s,
            ) as service:
                service.stuck.add_done_callback(lambda done: stop.put(done.result()))
                reason = await stop.wait()
                level = logging.ERROR if service.stuck.done() else logging.INFO
                logger.log(level, "plugin %s stopping: %s", plugin.plugin_id, reason)
        finally:
            await _drain(nc, plugin.plugin_id)
    if service.stuck.done():
        # Stuck threads would block the interpreter's exit (it joins pool threads): leave now.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_STUCK)
    logger.info("plugin %s stopped", plugin.plugin_id)


async def _drain(nc: Client, plugin_id: str) -> None:
    """Flush the last replies and close; fall back to a plain close."""
    try:
        await nc.drain()
    except (NatsClientError, OSError, TimeoutError) as exc:
        logger.warning("plugin %s: NATS drain failed: %s", plugin_id, natsconn.describe_error(exc))
        await nc.close()
