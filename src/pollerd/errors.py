"""The exceptions pollerd raises, under one root.

    PollerdError
    ├── ConfigError              pollers.yaml is unreadable or invalid (file, line, field)
    ├── ManifestError            a plugin.toml is unreadable or invalid (file, line, field)
    │   └── DuplicateKindError   two plugins declare the same kind
    ├── TransportError           one tick could not be completed; carries an ErrorClass
    │   ├── TickTimeoutError     no reply before the tick deadline            (transient)
    │   ├── PluginUnavailableError nobody serves the plugin, or it is failed  (transient)
    │   ├── ProtocolError        the plugin broke the wire protocol           (transient)
    │   └── PluginReplyError     the plugin answered with a JSON-RPC error    (by its code)
    ├── StoreError               the state store failed or has an unknown schema
    │   ├── StoreFencedError     a write of a leader that was replaced (epoch fencing)
    │   └── SlotCommittedError   a tick's commit of a slot another commit already holds
    ├── NatsError                the NATS server could not be started or reached
    ├── EventPublishError        an event was not acknowledged; the tick is not committed
    │   └── EventRejectedError   an event cannot be published as given (size, nesting)
    ├── NotReadyError            the service is starting or stopping: retry later (HTTP 503)
    └── SupervisorError          a supervised plugin could not be started

Only the standard library is imported here: the wire codec and the SDK use these names.
"""

from __future__ import annotations

import enum

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing; mypy takes it as True
if TYPE_CHECKING:  # the SDK imports this module: a one-shot plugin loads no datetime for it
    from datetime import datetime


class ErrorClass(enum.StrEnum):
    """What pollerd does after a failed tick (DESIGN §6)."""

    TRANSIENT = "transient"  # retried within the slot, then counted toward the breaker
    PERMANENT = "permanent"  # the job is paused with the reason
    CONFIG = "config"  # the job is broken until its config changes


class PollerdError(Exception):
    """Root of every error pollerd raises on purpose."""


class ConfigError(PollerdError):
    """pollers.yaml could not be read or is invalid.

    ``problems`` holds every problem found, each already formatted as ``file:line: field: message``.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ManifestError(PollerdError):
    """A plugin.toml could not be read or is invalid (``file:line: field: message``)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DuplicateKindError(ManifestError):
    """Two plugins declare the same poller kind."""

    def __init__(self, kind: str, first: tuple[str, str], second: tuple[str, str]) -> None:
        self.kind = kind
        self.first = first  # (plugin id, manifest path)
        self.second = second
        super().__init__(
            f"poller kind {kind!r} is declared by two plugins: "
            f"{first[0]!r} ({first[1]}) and {second[0]!r} ({second[1]}); "
            "remove the kind from one of the manifests"
        )


class TransportError(PollerdError):
    """One tick could not be completed. ``reason`` is a short label used in metrics and status."""

    error_class: ErrorClass = ErrorClass.TRANSIENT
    reason: str = "transient"

    def __init__(self, message: str, *, plugin: str = "", job_id: str = "") -> None:
        self.plugin = plugin
        self.job_id = job_id
        super().__init__(message)


class TickTimeoutError(TransportError):
    reason = "timeout"

    def __init__(self, *, plugin: str, job_id: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(
            f"plugin {plugin!r} did not reply within {timeout_s:.3g}s", plugin=plugin, job_id=job_id
        )


class PluginUnavailableError(TransportError):
    reason = "unavailable"


class ProtocolError(TransportError):
    reason = "protocol"


class PluginReplyError(TransportError):
    """The plugin answered with a JSON-RPC error object; its class follows the code (DESIGN §5)."""

    def __init__(
        self,
        code: int,
        message: str,
        error_class: ErrorClass,
        *,
        plugin: str = "",
        job_id: str = "",
    ) -> None:
        self.code = code
        self.error_class = error_class
        self.reason = error_class.value
        super().__init__(
            f"plugin {plugin!r} reported a {error_class.value} error ({code}): {message}",
            plugin=plugin,
            job_id=job_id,
        )
        self.plugin_message = message


class StoreError(PollerdError):
    """The state store failed, or holds a schema this version does not know."""


class NatsError(PollerdError):
    """The NATS server could not be started or reached."""


class SupervisorError(PollerdError):
    """A supervised plugin could not be started or kept running."""


class NotReadyError(PollerdError):
    """The service is starting or stopping and cannot do this now; retry once it runs."""


class EventPublishError(PollerdError):
    """An event of a tick was not acknowledged by the stream; the tick is not committed."""

    reason: str = "publish"


class EventRejectedError(EventPublishError):
    """An event of the plugin's reply cannot be published as it is (over the server's
    max_payload, nested too deeply to encode): the plugin's fault, a protocol failure."""

    reason = "protocol"


class StoreFencedError(StoreError):
    """A leader's write was refused: the job's key holds a newer leader's epoch, or this replica
    no longer holds the lease (epoch 0)."""

    def __init__(self, job_id: str, epoch: int, stored_epoch: int) -> None:
        self.job_id = job_id
        self.epoch = epoch
        self.stored_epoch = stored_epoch
        if epoch == 0:
            message = f"job {job_id!r}: not written, this replica does not lead any more"
        else:
            message = (
                f"job {job_id!r}: not written, fenced: it holds epoch {stored_epoch}, "
                f"newer than this leader's {epoch}"
            )
        super().__init__(message)


class SlotCommittedError(StoreError):
    """A tick's commit was dropped: the job's key already holds a commit of this slot or a later
    one (``stored_slot``), made by the tick ``committed_by`` (None when the job keeps no
    history). Nothing was written. Not fencing: the leader keeps leading."""

    def __init__(
        self, job_id: str, slot: datetime, stored_slot: datetime, committed_by: str | None
    ) -> None:
        self.job_id = job_id
        self.slot = slot
        self.stored_slot = stored_slot
        self.committed_by = committed_by
        by = "another tick" if committed_by is None else f"tick {committed_by}"
        super().__init__(
            f"job {job_id!r}: slot {slot.isoformat()} not committed, {by} already committed "
            f"slot {stored_slot.isoformat()}"
        )
