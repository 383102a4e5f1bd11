"""Reading and validating what operators and plugin authors write: pollers.yaml and plugin.toml.

Durations, schedules, the YAML reader with line numbers, the pydantic models, the manifests, the
kind → plugin router, the loaded ``Setup`` and the reload plan. Imports ``errors`` and ``wire``
only; everything else in pollerd builds on it.
"""
