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


def freeze_startup_heap() -> None:
    """Call once a server has started. What exists by then (modules, tables, schemas,
    routes, pools) lives as long as the process: moved out of the cyclic collector's
    sight, it is not walked again by every full collection, which on a busy server is
    a pause of tens of milliseconds in some request's way."""
    gc.collect()
    gc.freeze()
