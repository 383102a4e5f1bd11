"""The transport contract: send one tick request, get one reply or a TransportError."""

from __future__ import annotations

from abc import ABC, abstractmethod

from pollerd.wire import TickReply, TickRequest


class Transport(ABC):
    """Sends ticks to one plugin.

    ``send`` returns the decoded reply or raises a ``TransportError`` subclass
    (``TickTimeoutError``, ``PluginUnavailableError``, ``ProtocolError``, ``PluginReplyError``);
    no foreign exception escapes it. Cancelling ``send`` abandons the tick (and, for a subprocess,
    kills it). Concurrency limits are enforced by the caller, not here.
    """

    @abstractmethod
    async def send(self, request: TickRequest, timeout_s: float) -> TickReply: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release what the transport holds (default: nothing)."""
