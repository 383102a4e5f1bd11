"""A one-shot SDK plugin that imports what real pollers import: pydantic, to validate its config."""

from pydantic import BaseModel, ConfigDict

from pollerd.sdk import Plugin, Tick, TickResult


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    greeting: str = "hello"


plugin = Plugin("bench")


@plugin.poller("echo")
def echo(tick: Tick) -> TickResult:
    EchoConfig.model_validate(tick.config)
    return TickResult(next_cursor=tick.cursor)


if __name__ == "__main__":
    plugin.run()
