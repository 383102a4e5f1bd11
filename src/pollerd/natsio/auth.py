"""Who may do what on NATS: one user per plugin with the least it needs, and pollerd's own user.

A plugin's user may only

- subscribe to its own ``<prefix>.tick`` **in the queue group** ``pollerd`` (nobody else may
  subscribe there, so no other client can answer its ticks),
- answer the requests it received (``allow_responses``: one reply per request, to its reply
  subject; it cannot publish anywhere else, so not to ``pollerd.events.>`` nor ``$JS.API.>``),
- subscribe to the ``$SRV`` discovery subjects of its own micro service (``nats.micro``).

pollerd's user may do anything on the embedded server (it owns it: JetStream API, events, ticks,
``$SRV``). For an external server, ``pollerd_permissions`` is the least pollerd itself needs.

The embedded server's credentials live in ``<state_dir>/nats/auth.json`` (0600): random
passwords made at the first start and kept, so an external plugin configured with its password
survives a restart of pollerd. Deleting the file while pollerd is stopped rotates them all.
Pure functions here; the file is read and written by ``load_credentials``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pollerd.engine.events import SUBJECT_ROOT as EVENTS_SUBJECT_ROOT
from pollerd.errors import NatsError
from pollerd.wire import QUEUE_GROUP, service_name, tick_subject

logger = logging.getLogger(__name__)

POLLERD_USER = "pollerd"
PLUGIN_USER_PREFIX = "plugin-"
CREDENTIALS_FILE_NAME = "auth.json"
CREDENTIALS_VERSION = 1
PASSWORD_BYTES = 24
PRIVATE_FILE_MODE = 0o600
SRV_VERBS = ("PING", "INFO", "STATS")


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One user of a server config; ``permissions`` None means unrestricted."""

    name: str
    password: str
    permissions: Mapping[str, Any] | None = None

    def block(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"user": self.name, "password": self.password}
        if self.permissions is not None:
            entry["permissions"] = dict(self.permissions)
        return entry


@dataclass(frozen=True, slots=True)
class PluginAccess:
    """What a plugin's user is for: its id and the subject prefix of its ticks."""

    plugin_id: str
    subject_prefix: str


class PluginLike(Protocol):
    """What ``plugin_accesses`` reads of a manifest."""

    @property
    def id(self) -> str: ...
    @property
    def lifecycle(self) -> str: ...
    @property
    def subject_prefix(self) -> str: ...


def plugin_accesses(manifests: Iterable[PluginLike]) -> list[PluginAccess]:
    """The long-lived plugins: those that reach NATS and so get a user."""
    return [PluginAccess(m.id, m.subject_prefix) for m in manifests if m.lifecycle == "long_lived"]


def plugin_user_name(plugin_id: str) -> str:
    return PLUGIN_USER_PREFIX + plugin_id


def plugin_permissions(access: PluginAccess) -> dict[str, Any]:
    """The permissions block of one plugin's user (see the module docstring)."""
    name = service_name(access.plugin_id)
    discovery = [f"$SRV.{verb}" for verb in SRV_VERBS]
    own = [f"$SRV.{verb}.{name}" for verb in SRV_VERBS]
    own_instances = [f"$SRV.{verb}.{name}.*" for verb in SRV_VERBS]
    return {
        "publish": {"deny": [">"]},
        "subscribe": {
            "allow": [f"{tick_subject(access.subject_prefix)} {QUEUE_GROUP}"]
            + discovery
            + own
            + own_instances
        },
        "allow_responses": {"max": 1},
    }


def pollerd_permissions(
    plugins: Iterable[PluginAccess], served: Iterable[PluginAccess] = ()
) -> dict[str, Any]:
    """The least pollerd needs on an external server: publish events and ticks, use the JetStream
    API for its stream and `pollerd events`, ping plugins, and receive the replies.

    ``served``: the plugins pollerd supervises. They connect with pollerd's own credentials on an
    external server, so pollerd's user also serves their ticks.
    """
    ticks = sorted({tick_subject(access.subject_prefix) for access in plugins})
    permissions: dict[str, Any] = {
        "publish": {"allow": [f"{EVENTS_SUBJECT_ROOT}.>", "$JS.API.>", "$SRV.>", *ticks]},
        "subscribe": {"allow": ["_INBOX.>"]},
    }
    for access in served:
        own = plugin_permissions(access)
        permissions["subscribe"]["allow"] += [
            s for s in own["subscribe"]["allow"] if s not in permissions["subscribe"]["allow"]
        ]
        permissions["allow_responses"] = own["allow_responses"]
    return permissions


def embedded_users(credentials: Credentials, plugins: Iterable[PluginAccess]) -> list[NatsUser]:
    """The users of the embedded server: pollerd (unrestricted), then one per plugin."""
    users = [NatsUser(POLLERD_USER, credentials.pollerd)]
    for access in sorted(plugins, key=lambda a: a.plugin_id):
        users.append(
            NatsUser(
                plugin_user_name(access.plugin_id),
                credentials.plugin(access.plugin_id),
                plugin_permissions(access),
            )
        )
    return users


def render_authorization(users: Iterable[NatsUser]) -> str:
    """An ``authorization { users = [...] }`` block (NATS config accepts JSON values)."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        text = json.dumps(user.block(), indent=2)
        lines += ["    " + line for line in text.splitlines()]
    lines += ["  ]", "}"]
    return "\n".join(lines)


@dataclass(frozen=True)
class Credentials:
    """The embedded server's passwords: pollerd's, and each plugin's by id."""

    pollerd: str
    plugins: Mapping[str, str]

    def plugin(self, plugin_id: str) -> str:
        try:
            return self.plugins[plugin_id]
        except KeyError:
            raise NatsError(f"no NATS credentials for plugin {plugin_id!r}") from None

    def with_plugins(self, plugin_ids: Iterable[str]) -> Credentials:
        """These credentials plus a new random password for each plugin that has none."""
        plugins = dict(self.plugins)
        for plugin_id in plugin_ids:
            plugins.setdefault(plugin_id, new_password())
        return Credentials(self.pollerd, plugins)

    def to_json(self) -> str:
        document = {"version": CREDENTIALS_VERSION, "pollerd": self.pollerd, "plugins": {}}
        document["plugins"] = dict(sorted(self.plugins.items()))
        return json.dumps(document, indent=2) + "\n"


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def parse_credentials(text: str, source: str) -> Credentials:
    """Credentials from the file's text; ``NatsError`` naming ``source`` when it is not one."""
    try:
        document = json.loads(text)
        version = document.get("version")
        if version != CREDENTIALS_VERSION:
            raise NatsError(
                f"{source}: credentials version {version!r}, this pollerd reads "
                f"{CREDENTIALS_VERSION}; delete the file to make new ones"
            )
        plugins = document["plugins"]
        pollerd = document["pollerd"]
        if not isinstance(pollerd, str) or not isinstance(plugins, dict):
            raise TypeError("pollerd must be a string and plugins a mapping")
        if not all(isinstance(v, str) for v in plugins.values()):
            raise TypeError("every plugin password must be a string")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NatsError(
            f"{source}: not a pollerd NATS credentials file ({exc}); delete it to make new ones"
        ) from exc
    return Credentials(pollerd, dict(plugins))


def credentials_path(store_dir: Path) -> Path:
    return store_dir / CREDENTIALS_FILE_NAME


def read_credentials(store_dir: Path) -> Credentials | None:
    """The stored credentials, or None when there are none yet."""
    path = credentials_path(store_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise NatsError(f"cannot read the NATS credentials {path}: {exc.strerror}") from exc
    return parse_credentials(text, str(path))


def load_credentials(store_dir: Path, plugin_ids: Iterable[str]) -> Credentials:
    """The stored credentials with one for each plugin of ``plugin_ids``; written back (0600)
    when something was added."""
    stored = read_credentials(store_dir)
    current = stored or Credentials(new_password(), {})
    wanted = current.with_plugins(plugin_ids)
    if wanted != stored:
        write_private(credentials_path(store_dir), wanted.to_json())
    return wanted


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, replacing it atomically."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.chmod(temporary, PRIVATE_FILE_MODE)
        os.replace(temporary, path)
    except OSError as exc:
        raise NatsError(f"cannot write {path}: {exc.strerror or exc}") from exc
