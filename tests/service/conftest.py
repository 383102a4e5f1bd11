"""Fixtures shared by the service's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pollerd.service.reloading import SpareReader


@pytest.fixture
async def spare() -> AsyncIterator[SpareReader]:
    """A reader of large files whose child, if any, is ended after the test."""
    reader = SpareReader()
    yield reader
    await reader.aclose()
