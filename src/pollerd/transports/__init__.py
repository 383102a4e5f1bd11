"""How a tick reaches a plugin: a one-shot subprocess or a NATS request."""
