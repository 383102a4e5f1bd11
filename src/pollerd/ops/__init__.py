"""The operator's surface: the HTTP API and metrics, the admin commands and their client, how jobs
and plugins are shown, the tick log, logging set-up, and ``new-plugin`` scaffolding.

May import ``config``, ``engine``, ``stores``, ``events``, ``transports`` and ``natsio``; the
``service`` is reached only through the ``AdminBackend`` protocol it implements.
"""
