"""The event loop the servers run on: uvloop (as DESIGN.md's stack says), else asyncio's."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvloop has no Windows build; asyncio's loop works everywhere
        return asyncio.run(main)
    return uvloop.run(main)
