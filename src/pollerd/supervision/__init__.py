"""Supervised plugin processes: starting a long-lived plugin, checking it serves, restarting it
with backoff and giving up, and stopping it with pollerd.

May import ``config`` (manifests), ``engine.policy`` (pure restart decisions),
``transports.pluginlog`` (plugin output lines in the log), ``transports.natsmux`` and
``transports.natscancel`` (NATS requests that keep their cancellation), ``wire`` and
``errors``; the ``service`` owns the ``Supervisor``.
"""
