"""The event loop the control plane's long-running processes run on.

uvloop (libuv under asyncio's interface) makes the loop's own work cheaper:
scheduling callbacks, waking from other threads (the store's writer, gRPC's
poller), timers. The apiserver spends its one core (the GIL) on that work
thousands of times a second, so it shows in throughput; nothing else changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a uvloop loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
