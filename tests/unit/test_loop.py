"""What a server does with its heap once it has started (`runtime.loop.tune_collector`).

Each case runs in a fresh interpreter: the collector's settings are process-wide, and
this test process must keep its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any


def _in_fresh_interpreter(code: str) -> Any:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_start_up_heap_is_frozen_and_the_young_generation_collected_less_often() -> None:
    seen = _in_fresh_interpreter(
        """
        import gc, json
        from prost.runtime.loop import YOUNG_GENERATION_THRESHOLD, tune_collector
        before = gc.get_threshold()
        tune_collector()
        print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                          "young": YOUNG_GENERATION_THRESHOLD}))
        """
    )
    before, after = seen["before"], seen["after"]
    assert after[0] == seen["young"] > before[0]
    assert after[1:] == before[1:]  # the older generations keep their ratios
    assert seen["frozen"] > 1_000  # modules and all they made


def test_cyclic_garbage_made_while_serving_is_still_collected_by_itself() -> None:
    seen = _in_fresh_interpreter(
        """
        import gc, json, weakref
        from prost.runtime.loop import YOUNG_GENERATION_THRESHOLD, tune_collector
        tune_collector()

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        # Made and dropped: only the collector can free a cycle. Twice the threshold
        # of them (each cycle is two tracked objects and their two dicts) must have
        # set it off without anyone calling gc.collect().
        refs = [cycle() for _ in range(2 * YOUNG_GENERATION_THRESHOLD)]
        print(json.dumps({"freed": sum(r() is None for r in refs), "made": len(refs)}))
        """
    )
    assert seen["freed"] > seen["made"] // 2
