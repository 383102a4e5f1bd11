"""Job state stores: one ABC, an in-memory store and SQLite."""
