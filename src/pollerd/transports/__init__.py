"""How a tick reaches a plugin: one ABC (``base``), a one-shot subprocess (``subprocess``), a NATS
request (``nats``) and the in-flight bound in front of either (``guarded``).

Imports ``wire`` and ``errors`` only, so the engine can depend on it without cycles.
"""
