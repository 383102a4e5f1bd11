"""A one-shot SDK plugin that imports nothing but ``json`` besides the SDK (a plain ``def``)."""

import json

from pollerd.sdk import Plugin, Tick, TickResult

plugin = Plugin("bench")


@plugin.poller("echo")
def echo(tick: Tick) -> TickResult:
    json.dumps(tick.config)
    return TickResult(next_cursor=tick.cursor)


if __name__ == "__main__":
    plugin.run()
