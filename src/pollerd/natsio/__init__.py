"""pollerd's own NATS: connecting with deliberate options, running the embedded nats-server, and
publishing events to JetStream (the engine's `EventPublisher` for production).

Named so as not to shadow the ``nats`` client library. Imports ``errors``, ``wire``,
``engine.events``, ``supervision.lifeline`` and ``transports.natscancel`` only.
"""
