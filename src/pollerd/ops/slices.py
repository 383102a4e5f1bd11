"""Work over every job, cut into slices so that the event loop runs ticks in between.

A scrape of ``/metrics`` or a ``GET /v1/jobs`` at 10,000 jobs is 0.1–1 s of Python. Done in
one go on the event loop, it held every tick that fell due meanwhile: measured with
``bench/scale.py``'s 10,000 jobs every 10 s, a scrape put the plugins' lateness up to 190 ms
and a job listing up to 830 ms, against 30 ms otherwise. Cut into slices of at most
``SLICE_S`` with a turn of the loop after each, the same work delays a tick by a few slices at
most: a tick needs several turns of the loop (its task, nats-py's writer, its reader, the
reply, the commit), each of which runs one slice. Slices of 250 jobs (15–20 ms of job rows)
still let a listing put ticks 500–600 ms late, as the plugin's in-flight limit then drains
slower than ticks fall due.

What a slice reads must not change size under it: callers iterate over snapshots (a list of a
dict's keys, a setup's tuple of jobs), never over a live dict.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

SLICE_S = 0.002  # the work between two turns of the event loop
SLICE = 50  # jobs a text piece or JSON chunk holds: well under SLICE_S each

T = TypeVar("T")


async def each(
    items: Iterable[T], clock: Callable[[], float] = time.perf_counter
) -> AsyncIterator[T]:
    """``items``, with a turn of the event loop whenever ``SLICE_S`` of work went by."""
    until = clock() + SLICE_S
    for item in items:
        yield item
        if clock() >= until:
            await asyncio.sleep(0)
            until = clock() + SLICE_S


async def joined(pieces: Iterable[str]) -> str:
    """The pieces of a text, with a turn of the event loop whenever ``SLICE_S`` went by.

    Written into one growing buffer as they come, not kept until the end: ticks allocate
    between the slices, and thousands of pieces left among their objects kept the heap from
    shrinking after a scrape (the service's RSS 1.8 MiB higher after five scrapes of 10,000
    jobs)."""
    text = io.StringIO()
    async for piece in each(pieces):
        text.write(piece)
    return text.getvalue()


def chunks(items: Iterable[T], size: int = SLICE) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter); an iterator is read lazily."""
    source = iter(items)
    while chunk := list(islice(source, size)):
        yield chunk


async def json_array(items: Iterable[Any]) -> bytes:
    """``json.dumps(list(items))`` (the same text), a slice at a time, UTF-8."""
    text = io.StringIO()
    text.write("[")
    separator = ""
    async for chunk in each(chunks(items)):
        text.write(separator)
        text.write(", ".join(map(json.dumps, chunk)))
        separator = ", "
    text.write("]")
    return text.getvalue().encode()
