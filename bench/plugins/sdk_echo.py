"""The same plugin as raw_echo.py, written with the SDK."""

from pollerd.sdk import Plugin, Tick, TickResult

plugin = Plugin("bench")


@plugin.poller("echo")
async def echo(tick: Tick) -> TickResult:
    return TickResult(next_cursor=tick.cursor)


if __name__ == "__main__":
    plugin.run()
