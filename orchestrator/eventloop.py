"""The event loop the control plane's long-running processes run on.

uvloop (libuv under asyncio's interface) makes the loop's own work cheaper:
scheduling callbacks, waking from other threads (the store's writer, gRPC's
poller), timers. The apiserver spends its one core (the GIL) on that work
thousands of times a second, so it shows in throughput; nothing else changes.

The garbage collector is tuned for the same reason. These processes hold
large long-lived heaps (the watch cache, informer caches) and allocate
quickly: with the default gen-0 threshold (700 net allocations) the collector
took about 3 % of the apiserver's core in the scheduler benchmark (py-spy).
Reference cycles are rare in this code, so collecting less often costs
little memory. What was loaded at start-up (modules, protobuf descriptors)
is frozen out of every collection.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

# Gen 0 every 20,000 net allocations; gen 1 and 2 as often relative to it as
# by default (10 and 10).
GC_THRESHOLDS = (20_000, 10, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a uvloop loop, with the collector tuned as above."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
