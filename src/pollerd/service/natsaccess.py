"""pollerd's way onto NATS: the embedded server with one user per long-lived plugin, or an
external server with the configured credentials; and what each supervised plugin gets in its
environment to connect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from pathlib import Path

from nats.aio.client import Client

from pollerd.config.manifest import Manifest
from pollerd.config.pollers import NatsConfig
from pollerd.natsio.auth import (
    POLLERD_USER,
    Credentials,
    PluginAccess,
    embedded_users,
    load_credentials,
    plugin_accesses,
    plugin_user_name,
)
from pollerd.natsio.connection import connect, connect_from_config
from pollerd.natsio.server import EmbeddedNatsServer

logger = logging.getLogger(__name__)

ENV_USER = "POLLERD_NATS_USER"
ENV_PASSWORD = "POLLERD_NATS_PASSWORD"
_SECRETS = (("token", "TOKEN"), ("user", "USER"), ("password", "PASSWORD"))
_FILES = (
    ("creds", "CREDS"),
    ("tls_ca", "TLS_CA"),
    ("tls_cert", "TLS_CERT"),
    ("tls_key", "TLS_KEY"),
)


def nats_env(config: NatsConfig) -> dict[str, str]:
    """What a supervised plugin needs to reach an external server: pollerd's credentials and
    TLS files (``POLLERD_NATS_TOKEN|USER|PASSWORD|CREDS|TLS_CA|TLS_CERT|TLS_KEY``)."""
    env = {}
    for key, name in (*_SECRETS, *_FILES):
        value = getattr(config, key, None)
        if value:
            env[f"POLLERD_NATS_{name}"] = str(value)
    return env


class NatsAccess:
    """Connects pollerd and hands each supervised plugin its credentials.

    Embedded: the server runs with pollerd's user and one user per long-lived plugin; each plugin
    gets its own user. External: every plugin gets pollerd's settings (``nats_env``).
    """

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self.server: EmbeddedNatsServer | None = None
        self.credentials: Credentials | None = None
        self._accesses: list[PluginAccess] = []

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else self.config.url

    async def start(
        self,
        stack: AsyncExitStack,
        store_dir: Path,
        manifests: Iterable[Manifest],
        *,
        on_lost: Callable[[str], None] | None = None,
    ) -> Client:
        """Start the embedded server if configured (stopped by ``stack``) and connect pollerd
        (the caller closes the client)."""
        if not self.config.embedded:
            return await connect_from_config(self.config, name="pollerd", on_lost=on_lost)
        self._accesses = plugin_accesses(manifests)
        self.credentials = load_credentials(store_dir, [a.plugin_id for a in self._accesses])
        self.server = EmbeddedNatsServer(
            store_dir,
            port=self.config.port,
            users=embedded_users(self.credentials, self._accesses),
        )
        await stack.enter_async_context(self.server)
        return await connect(
            self.server.url,
            name="pollerd",
            user=POLLERD_USER,
            password=self.credentials.pollerd,
            on_lost=on_lost,
        )

    def plugin_env(self, manifest: Manifest) -> dict[str, str]:
        """The NATS part of a supervised plugin's environment."""
        if self.server is None or self.credentials is None:
            return nats_env(self.config)
        if manifest.lifecycle != "long_lived":
            return {}  # a pre-fork zygote: it does not use NATS, so it has no user
        return {
            ENV_USER: plugin_user_name(manifest.id),
            ENV_PASSWORD: self.credentials.plugin(manifest.id),
        }

    async def plugins_changed(self, manifests: Iterable[Manifest]) -> None:
        """After a reload: the embedded server gets users for exactly these plugins."""
        if self.server is None or self.credentials is None:
            return
        accesses = plugin_accesses(manifests)
        if sorted(accesses, key=str) == sorted(self._accesses, key=str):
            return
        self.credentials = load_credentials(self.server.store_dir, [a.plugin_id for a in accesses])
        await self.server.reconfigure(embedded_users(self.credentials, accesses))
        self._accesses = accesses
