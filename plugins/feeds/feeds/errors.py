"""Why a feeds tick failed, with the class pollerd acts on (transient, permanent or config)."""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorClassName = Literal["transient", "permanent", "config"]


class FeedError(Exception):
    """Root of the plugin's errors; the handler maps ``error_class`` to the SDK's errors."""

    error_class: ClassVar[ErrorClassName] = "transient"


class TransientFeedError(FeedError):
    """Worth retrying: network trouble, a 5xx, a feed caught mid-update."""


class PermanentFeedError(FeedError):
    """Retrying will not help until someone acts: a 404, a document that is not a feed."""

    error_class = "permanent"


class FeedConfigError(FeedError):
    """The job's ``config`` is invalid."""

    error_class = "config"
