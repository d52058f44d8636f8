"""The event loop the servers run on: uvloop (as DESIGN.md's stack says), else
asyncio's; and what a server does with its heap once it has started."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvloop has no Windows build; asyncio's loop works everywhere
        return asyncio.run(main)
    return uvloop.run(main)


# The young generation is collected after this many net allocations of tracked objects
# (CPython's default is 700). A request's or an event's objects mostly die by reference
# counting before that, so the collector runs a few times a second instead of hundreds,
# each run a pause of a few milliseconds at most.
YOUNG_GENERATION_THRESHOLD = 7_000


def tune_collector() -> None:
    """Call once a server has started.

    What exists by then (modules, tables, schemas, routes, pools) lives as long as the
    process: frozen, it is moved out of the cyclic collector's sight and not walked
    again by every full collection, which on a busy server is a pause of tens of
    milliseconds in some request's way. From then on the young generation is collected
    less often (`YOUNG_GENERATION_THRESHOLD`); the older generations keep their ratios."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
