"""`pollerd nats-permissions`: the least each NATS user needs, for an external server's config,
and the environment an external plugin needs to reach the embedded server."""

from __future__ import annotations

import json
from typing import Any

from pollerd.config.setup import Setup
from pollerd.errors import PollerdError
from pollerd.natsio.auth import (
    POLLERD_USER,
    NatsUser,
    load_credentials,
    plugin_accesses,
    plugin_permissions,
    plugin_user_name,
    pollerd_permissions,
    render_authorization,
)
from pollerd.natsio.serverfiles import URL_FILE_NAME

PASSWORD_PLACEHOLDER = "<set a password>"
HEADER = (
    "# pollerd's NATS users for {path}: put this in the server's config (or the equivalent\n"
    "# permissions in your accounts / operator JWTs), set each password, and give pollerd its\n"
    "# user in pollers.yaml (nats: {{user, password}}) and each external plugin its own in\n"
    "# POLLERD_NATS_USER / POLLERD_NATS_PASSWORD. Plugins pollerd supervises connect as pollerd,\n"
    "# whose user therefore also serves their ticks."
)


def permission_users(setup: Setup) -> list[NatsUser]:
    """pollerd's user and one per long-lived plugin, with placeholder passwords."""
    manifests = setup.router.plugins()
    accesses = plugin_accesses(manifests)
    served = plugin_accesses(m for m in manifests if m.entrypoint is not None)
    pollerd = pollerd_permissions(accesses, served)
    users = [NatsUser(POLLERD_USER, PASSWORD_PLACEHOLDER, pollerd)]
    users += [
        NatsUser(plugin_user_name(a.plugin_id), PASSWORD_PLACEHOLDER, plugin_permissions(a))
        for a in sorted(accesses, key=lambda a: a.plugin_id)
    ]
    return users


def permissions_text(setup: Setup) -> str:
    header = HEADER.format(path=setup.config.path.name)
    return header + "\n" + render_authorization(permission_users(setup)) + "\n"


def permissions_json(setup: Setup) -> dict[str, Any]:
    return {"users": [user.block() for user in permission_users(setup)]}


def embedded_plugin_env(setup: Setup, plugin_id: str) -> dict[str, str]:
    """What an external plugin sets to serve ``plugin_id`` through the embedded server."""
    config = setup.config
    manifest = next((m for m in setup.router.plugins() if m.id == plugin_id), None)
    if manifest is None or manifest.lifecycle != "long_lived":
        known = ", ".join(a.plugin_id for a in plugin_accesses(setup.router.plugins())) or "none"
        raise PollerdError(f"no long-lived plugin {plugin_id!r}; long-lived plugins: {known}")
    if not config.nats.embedded:
        raise PollerdError(
            "nats is not embedded: give the plugin the user you made for it on your server "
            "(see `pollerd nats-permissions`)"
        )
    store_dir = config.state_dir / "nats"
    try:
        url = (store_dir / URL_FILE_NAME).read_text().strip()
    except OSError:
        raise PollerdError(
            f"no {store_dir / URL_FILE_NAME} yet: start pollerd once so the server has a port "
            "(or set nats.port)"
        ) from None
    credentials = load_credentials(store_dir, [plugin_id])
    return {
        "POLLERD_NATS_URL": url,
        "POLLERD_NATS_USER": plugin_user_name(plugin_id),
        "POLLERD_NATS_PASSWORD": credentials.plugin(plugin_id),
        "POLLERD_PLUGIN_ID": plugin_id,
        "POLLERD_SUBJECT_PREFIX": manifest.subject_prefix,
        "POLLERD_PARENT_PID": "0",
    }


def env_text(env: dict[str, str]) -> str:
    return "\n".join(f"{name}={json.dumps(value)}" for name, value in env.items())
