"""The plugin object: registers poller handlers and turns one request frame into one reply frame.

Standard library and ``pollerd.wire`` only, and no ``asyncio`` or ``logging`` at import time: a
one-shot plugin whose handler is a plain ``def`` never pays for them (about 50 ms per tick).
Unexpected handler failures are written to stderr directly for the same reason. No ``inspect``
or ``typing`` either (about 10 ms): see ``pollerd.wire``.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from types import FunctionType, MethodType

from pollerd import wire
from pollerd.sdk._tick import (
    BadRequestError,
    Tick,
    TickError,
    check_result,
    parse_request,
)
from pollerd.wire import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any, TypeVar

    H = TypeVar("H", bound=Callable[..., Any])

__all__ = ["Plugin"]

DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_MAX_STUCK_THREADS = 8
# A handler gets the tick's budget (deadline - now, both pollerd's clock) minus this share of it,
# capped, so that its "did not finish in time" reply reaches pollerd before pollerd's own timeout.
REPLY_MARGIN_SHARE = 0.1
MAX_REPLY_MARGIN_S = 0.5
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
UNNAMED_PLUGIN = "unnamed"
ENV_MODE = "POLLERD_MODE"
ENV_PLUGIN_ID = "POLLERD_PLUGIN_ID"
ENV_NATS_URL = "POLLERD_NATS_URL"
MODE_EPHEMERAL = "ephemeral"
# The exit code of a plugin that cannot run as configured (sysexits EX_CONFIG): pollerd's
# supervisor marks it failed at once instead of restarting it.
EXIT_CONFIG = 78
MODE_LONG_LIVED = "long_lived"
MODE_PREFORK = "prefork"
CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the code flag of an ``async def`` function


class _Call(FrozenRecord):
    """A request that parsed and found its handler."""

    __slots__ = ("request_id", "tick", "handler", "is_async")
    request_id: str
    tick: Tick
    handler: Callable[[Tick], Any]
    is_async: bool

    def __init__(
        self, request_id: str, tick: Tick, handler: Callable[[Tick], Any], is_async: bool
    ) -> None:
        self._set_fields(request_id=request_id, tick=tick, handler=handler, is_async=is_async)


class Plugin:
    """A plugin: handlers by kind, and ``run()`` to serve them in the mode pollerd asks for.

    ::

        plugin = Plugin("files")

        @plugin.poller("dir_watch")
        def watch(tick: Tick) -> TickResult: ...

        if __name__ == "__main__":
            plugin.run()
    """

    def __init__(
        self,
        plugin_id: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_stuck_threads: int = DEFAULT_MAX_STUCK_THREADS,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if max_stuck_threads < 0:
            raise ValueError(f"max_stuck_threads must be at least 0, got {max_stuck_threads}")
        self._id = plugin_id
        self.max_concurrency = max_concurrency
        self.max_stuck_threads = max_stuck_threads
        self._handlers: dict[str, Callable[[Tick], Any]] = {}
        self._pool: ThreadPoolExecutor | None = None
        # Handlers still running after their tick was answered "did not finish in time", with
        # the job they were serving: threads cannot be cancelled, and an async handler may
        # swallow its cancellation.
        self._overdue: dict[object, str] = {}

    @property
    def plugin_id(self) -> str:
        """The id given at construction, else ``POLLERD_PLUGIN_ID`` once ``run()`` has read it."""
        return self._id or UNNAMED_PLUGIN

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._handlers)

    def poller(self, *kinds: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``kinds`` (sync or ``async def``)."""
        if not kinds:
            raise ValueError("poller() needs at least one kind")
        for kind in kinds:
            if not KIND_PATTERN.match(kind):
                raise ValueError(f"poller kind {kind!r} must match {KIND_PATTERN.pattern}")
            if kind in self._handlers:
                raise ValueError(f"poller kind {kind!r} already has a handler")

        def register(handler: H) -> H:
            for kind in kinds:
                self._handlers[kind] = handler
            return handler

        return register

    @property
    def announced_id(self) -> str | None:
        """The id given at construction (None: the plugin takes pollerd's)."""
        return self._id

    def overdue_handlers(self) -> list[str]:
        """The job ids of handlers still running past their tick's deadline (one per handler)."""
        return list(self._overdue.values())

    async def handle(self, frame: bytes, *, waited_s: float = 0.0) -> bytes:
        """Answer one request frame with one reply frame (newline-terminated). Never raises.

        Sync handlers run in a pool of threads, so they do not block the loop or each other.
        A handler still running near the tick's deadline is cancelled (an async one) or left
        behind (a thread: it cannot be cancelled; see ``overdue_handlers``), and the tick is
        answered with a transient error. ``waited_s``: how long the request already waited for a
        free slot, taken off its budget. Cancellation propagates: a cancelled tick has no reply.
        """
        try:
            call = self._prepare(frame)
            if isinstance(call, bytes):
                return call
            return await self._answer(call, waited_s)
        except Exception as exc:  # pragma: no cover - a bug in the SDK itself
            return _sdk_failure(exc)

    def _handle_blocking(self, frame: bytes) -> bytes:
        """``handle()`` for a one-shot process: a sync handler runs inline, with no event loop."""
        try:
            call = self._prepare(frame)
            if isinstance(call, bytes):
                return call
            if call.is_async:
                import asyncio

                return asyncio.run(self._answer(call))
            try:
                result = call.handler(call.tick)
            except Exception as exc:
                return self._failure(call, exc)
            return self._success(call, result)
        except Exception as exc:  # pragma: no cover - a bug in the SDK itself
            return _sdk_failure(exc)

    async def _answer(self, call: _Call, waited_s: float = 0.0) -> bytes:
        import asyncio

        budget_s = _budget_s(call.tick, waited_s)
        if budget_s <= 0:
            message = (
                f"plugin {self.plugin_id!r}: no free slot before the tick's deadline "
                f"(waited {waited_s:.3f}s; max_concurrency={self.max_concurrency})"
                if waited_s > 0
                else f"plugin {self.plugin_id!r}: the tick came with no time left before its "
                "deadline"
            )
            return wire.encode_error(call.request_id, wire.CODE_TRANSIENT, message)
        if call.is_async:
            work: asyncio.Future[Any] = asyncio.ensure_future(call.handler(call.tick))
            token: object = work
        else:
            future = self._thread_pool().submit(call.handler, call.tick)
            work, token = asyncio.wrap_future(future), future
        try:
            done, _pending = await asyncio.wait({work}, timeout=budget_s)
        except asyncio.CancelledError:
            work.cancel()
            raise
        if not done:
            return self._overdue_reply(call, work, token)
        try:
            result = work.result()
        except Exception as exc:
            return self._failure(call, exc)
        return self._success(call, result)

    def _overdue_reply(self, call: _Call, work: Any, token: Any) -> bytes:
        """Cancel a handler that ran out of time, remember it until it ends, say so."""
        work.cancel()
        self._overdue[token] = call.tick.job_id
        token.add_done_callback(self._overdue_ended)  # from the worker thread for a thread
        what = "cancelled" if call.is_async else "its thread cannot be cancelled and still runs"
        message = (
            f"plugin {self.plugin_id!r}: the handler for kind {call.tick.kind!r} did not finish "
            f"by the tick's deadline ({call.tick.deadline.isoformat()}): {what}"
        )
        _print_traceback(f"{message} (job {call.tick.job_id!r})", None)
        return wire.encode_error(call.request_id, wire.CODE_TRANSIENT, message)

    def _overdue_ended(self, token: object) -> None:
        self._overdue.pop(token, None)

    def run(
        self, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> None:
        """Serve in the mode pollerd set: ``ephemeral`` (one tick over stdio), ``long_lived``, or
        ``prefork`` (a zygote that forks one child per tick; the child serves it as ``ephemeral``).

        Without ``POLLERD_MODE`` the mode is ``long_lived`` when ``POLLERD_NATS_URL`` is set, else
        ``ephemeral``. ``argv`` is reserved: the SDK reads no command-line options today.
        """
        del argv
        env: Mapping[str, str]
        if environ is None:
            import os

            env = os.environ
        else:
            env = environ
        if self._id is None:
            self._id = env.get(ENV_PLUGIN_ID) or None
        if not self._handlers:
            raise SystemExit(
                f"plugin {self.plugin_id!r} registers no poller: decorate a handler with "
                "@plugin.poller('<kind>') before calling run()"
            )
        mode = env.get(ENV_MODE) or (MODE_LONG_LIVED if env.get(ENV_NATS_URL) else MODE_EPHEMERAL)
        if mode == MODE_EPHEMERAL:
            from pollerd.sdk._stdio import serve_once

            serve_once(self, sys.stdin.buffer, sys.stdout)
        elif mode == MODE_LONG_LIVED:
            _check_announced_id(self._id, env.get(ENV_PLUGIN_ID))
            _run_service(self, env)
        elif mode == MODE_PREFORK:
            self._serve_prefork(env)
        else:
            raise SystemExit(
                f"plugin {self.plugin_id!r}: unknown POLLERD_MODE {mode!r}; expected 'ephemeral', "
                "'long_lived' or 'prefork'"
            )

    def _serve_prefork(self, env: Mapping[str, str]) -> None:
        """Be the zygote; in each forked child, serve its one tick as a one-shot process does."""
        from pollerd.sdk._stdio import serve_once
        from pollerd.sdk._zygote import run_child, serve_zygote

        if any(_is_coroutine_function(handler) for handler in self._handlers.values()):
            import asyncio  # noqa: F401 - imported once here rather than in every child

        if serve_zygote(self.kinds, env):
            run_child(lambda: serve_once(self, sys.stdin.buffer, sys.stdout))

    def _prepare(self, frame: bytes | str) -> _Call | bytes:
        """The call to make, or the error reply frame for a request that cannot be served."""
        try:
            message = json.loads(frame)
        except ValueError as exc:
            return wire.encode_error(None, wire.CODE_PARSE_ERROR, f"request is not JSON: {exc}")
        request_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(request_id, str):
            request_id = None
        try:
            tick = parse_request(message)
        except BadRequestError as exc:
            return wire.encode_error(request_id, exc.code, f"plugin {self.plugin_id!r}: {exc}")
        handler = self._handlers.get(tick.kind)
        if handler is None:
            served = ", ".join(self._handlers) or "none"
            message_text = (
                f"plugin {self.plugin_id!r} does not serve kind {tick.kind!r} (it serves: {served})"
            )
            return wire.encode_error(request_id, wire.CODE_CONFIG, message_text)
        return _Call(
            request_id=request_id or tick.tick_id,
            tick=tick,
            handler=handler,
            is_async=_is_coroutine_function(handler),
        )

    def _failure(self, call: _Call, exc: Exception) -> bytes:
        if isinstance(exc, TickError):
            return wire.encode_error(call.request_id, exc.code, str(exc) or type(exc).__name__)
        _print_traceback(
            f"plugin {self.plugin_id!r}: handler for kind {call.tick.kind!r} failed on job "
            f"{call.tick.job_id!r}",
            exc,
        )
        return wire.encode_error(
            call.request_id, wire.CODE_TRANSIENT, f"{type(exc).__name__}: {exc}"
        )

    def _success(self, call: _Call, result: object) -> bytes:
        try:
            reply = check_result(result)
            frame = wire.encode_result(call.request_id, reply)
        except (TypeError, ValueError) as exc:
            message = f"handler for kind {call.tick.kind!r} returned an invalid result: {exc}"
            _print_traceback(f"plugin {self.plugin_id!r}: {message}", None)
            return wire.encode_error(call.request_id, wire.CODE_TRANSIENT, message)
        if len(frame) > wire.MAX_REPLY_BYTES:
            message = (
                f"handler for kind {call.tick.kind!r} built a {len(frame)}-byte reply, over the "
                f"{wire.MAX_REPLY_BYTES}-byte cap: report fewer events per tick"
            )
            return wire.encode_error(call.request_id, wire.CODE_TRANSIENT, message)
        return frame

    def _thread_pool(self) -> ThreadPoolExecutor:
        """Room for ``max_concurrency`` handlers plus the stuck ones the service tolerates."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(
                max_workers=self.max_concurrency + self.max_stuck_threads,
                thread_name_prefix=f"plugin-{self.plugin_id}",
            )
        return self._pool


def _budget_s(tick: Tick, waited_s: float) -> float:
    """How long a handler may run: the tick's budget (``deadline - now``, both on pollerd's clock,
    so clock skew does not matter) less the time it waited and a margin for the reply."""
    budget_s = (tick.deadline - tick.now).total_seconds()
    margin_s = min(MAX_REPLY_MARGIN_S, budget_s * REPLY_MARGIN_SHARE)
    return max(0.0, budget_s - margin_s - waited_s)


def _is_coroutine_function(handler: object) -> bool:
    """``inspect.iscoroutinefunction()`` without importing ``inspect`` (about 8 ms): an
    ``async def`` function, also as a bound method or inside ``functools.partial``."""
    if isinstance(handler, MethodType):
        handler = handler.__func__
    while isinstance(handler, functools.partial):
        handler = handler.func
    return isinstance(handler, FunctionType) and bool(handler.__code__.co_flags & CO_COROUTINE)


def _print_traceback(headline: str, exc: BaseException | None) -> None:
    print(headline, file=sys.stderr)
    if exc is not None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


def _sdk_failure(exc: Exception) -> bytes:  # pragma: no cover - a bug in the SDK itself
    _print_traceback("pollerd.sdk failed to build a reply", exc)
    return wire.encode_error(None, wire.CODE_TRANSIENT, f"{type(exc).__name__}: {exc}")


def _check_announced_id(announced: str | None, expected: str | None) -> None:
    """Exit with ``EXIT_CONFIG`` when the code names another plugin than pollerd started.

    pollerd finds a long-lived plugin by the id in its plugin.toml; a service announced under
    another name is never found, and no restart can change that.
    """
    if announced is None or not expected or announced == expected:
        return
    print(
        f"pollerd.sdk: this plugin announces id {announced!r} (Plugin({announced!r})) but pollerd "
        f"started it as {expected!r} (the id in its plugin.toml): make them equal, or write "
        "Plugin() to take the id from plugin.toml",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(EXIT_CONFIG)


def _run_service(plugin: Plugin, environ: Mapping[str, str]) -> None:
    try:
        from pollerd.sdk._service import serve
    except ModuleNotFoundError as exc:
        if exc.name not in ("pollerd.sdk._service", "nats", "nats.micro"):
            raise
        raise SystemExit(
            f"plugin {plugin.plugin_id!r}: long_lived mode needs the SDK's NATS service "
            f"(pollerd.sdk._service and nats-py), which is not available here: {exc}. "
            "Install pollerd with its dependencies, or declare the plugin 'ephemeral'."
        ) from None
    import asyncio

    asyncio.run(serve(plugin, environ))
