"""The cyclic collector is held off during a load and set back as it was found."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from pollerd.config.gcpause import collector_paused


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    if not was_enabled:
        gc.disable()


@pytest.mark.usefixtures("collector_enabled")
def test_the_collector_is_off_inside_and_back_on_after() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_nested_pauses_set_the_collector_back_only_when_the_outer_one_ends() -> None:
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_the_collector_is_set_back_when_the_load_fails() -> None:
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("a bad file")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_enabled")
def test_a_pause_in_another_thread_keeps_the_collector_off_until_both_end() -> None:
    inside, release = threading.Event(), threading.Event()

    def other_load() -> None:
        with collector_paused():
            inside.set()
            release.wait()

    thread = threading.Thread(target=other_load)
    thread.start()
    inside.wait()
    with collector_paused():
        pass
    still_off = not gc.isenabled()
    release.set()
    thread.join()
    assert still_off
    assert gc.isenabled()
