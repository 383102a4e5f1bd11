"""Run the feeds plugin: ``python -m feeds`` from the plugin folder; POLLERD_MODE picks how."""

from __future__ import annotations

from feeds.plugin import plugin

if __name__ == "__main__":
    plugin.run()
