"""pollerd: runs poller jobs on a schedule and routes each tick to the plugin that owns its kind.

This package init stays import-free: one-shot plugins import ``pollerd.sdk`` and must not pay for
the service's dependencies.
"""

__version__ = "0.1.0"
