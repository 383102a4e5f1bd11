"""Ticks to a long-lived plugin as NATS requests on ``<subject_prefix>.tick`` (DESIGN §5)."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    MaxPayloadError,
    NoRespondersError,
)
from nats.errors import Error as NatsClientError
from nats.errors import TimeoutError as NatsTimeoutError

from pollerd import wire
from pollerd.errors import PluginUnavailableError, ProtocolError, TickTimeoutError, TransportError
from pollerd.transports.base import Transport
from pollerd.transports.natsmux import mux_for
from pollerd.wire import tick_subject

logger = logging.getLogger(__name__)

SERVICE_ERROR_HEADER = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class NatsTransport(Transport):
    """Sends each tick as one request to whichever replica of the plugin's queue group answers.

    The connection belongs to the caller (one per pollerd, shared by every plugin).
    """

    def __init__(
        self,
        nc: Client,
        *,
        plugin_id: str,
        subject_prefix: str,
        max_cursor_bytes: int = wire.MAX_CURSOR_BYTES,
    ) -> None:
        self._nc = nc
        self._mux = mux_for(nc)
        self.plugin_id = plugin_id
        self.subject = tick_subject(subject_prefix)
        self._max_cursor_bytes = max_cursor_bytes

    async def send(self, request: wire.TickRequest, timeout_s: float) -> wire.TickReply:
        job_id = request.job_id
        self._check_connection(job_id)
        frame = request.encode()
        try:
            msg = await self._mux.request(self.subject, frame, timeout_s)
        except NoRespondersError:
            raise PluginUnavailableError(
                f"no plugin serves {self.subject}: is plugin {self.plugin_id!r} running?",
                plugin=self.plugin_id,
                job_id=job_id,
            ) from None
        except NatsTimeoutError:
            raise TickTimeoutError(
                plugin=self.plugin_id, job_id=job_id, timeout_s=timeout_s
            ) from None
        except (ConnectionClosedError, ConnectionDrainingError):
            raise self._unavailable("the NATS connection is closed", job_id) from None
        except MaxPayloadError:
            raise TransportError(
                f"the tick request for plugin {self.plugin_id!r} is {len(frame)} bytes, over the "
                "NATS server's max_payload: shrink the job config or cursor, or raise max_payload",
                plugin=self.plugin_id,
                job_id=job_id,
            ) from None
        except (NatsClientError, OSError) as exc:
            raise self._unavailable(f"the NATS request failed ({exc!r})", job_id) from None
        headers = msg.headers or {}
        if SERVICE_ERROR_HEADER in headers:
            raise ProtocolError(
                f"plugin {self.plugin_id!r} answered {self.subject} with a service error "
                f"{headers.get(SERVICE_ERROR_CODE_HEADER, '')}: {headers[SERVICE_ERROR_HEADER]}",
                plugin=self.plugin_id,
                job_id=job_id,
            )
        return wire.decode_reply(
            msg.data,
            tick_id=request.tick_id,
            plugin=self.plugin_id,
            job_id=job_id,
            max_cursor_bytes=self._max_cursor_bytes,
        )

    def _check_connection(self, job_id: str) -> None:
        """Fail at once, rather than at the deadline, while the connection is down."""
        if self._nc.is_closed:
            raise self._unavailable("the NATS connection is closed", job_id)
        if self._nc.is_reconnecting:
            raise self._unavailable("the NATS connection is down (reconnecting)", job_id)
        if self._nc.is_draining:
            raise self._unavailable("the NATS connection is draining", job_id)

    def _unavailable(self, why: str, job_id: str) -> PluginUnavailableError:
        return PluginUnavailableError(
            f"cannot reach plugin {self.plugin_id!r} on {self.subject}: {why}",
            plugin=self.plugin_id,
            job_id=job_id,
        )
