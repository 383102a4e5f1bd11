"""The running service: ``Service`` wires config, store, NATS, plugins, engine and HTTP together;
``runtime`` runs it as a process (signals, child watcher, GC); ``watch`` reloads on change;
``backend`` serves the admin API from it. The top layer: only ``cli`` imports it.
"""
