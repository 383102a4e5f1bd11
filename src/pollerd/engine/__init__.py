"""Deciding and running ticks: the scheduler's timers, the dispatcher's overlap and catch-up
decisions, the runner's tick → publish → commit path, the pure policies behind them and the port the
events of a tick go out through (``events``).

May import ``config``, ``stores`` and ``transports``; never the operator's surface
(``ops``) or the ``service`` that wires it all together.
"""
