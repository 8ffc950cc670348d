"""Progress of `up`, `down` and `image load`: a spinner per step on a terminal,
plain lines otherwise (CI logs, pipes), nothing at all from the Python API."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Reporter:
    """Silent: the default of the Python API."""

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        yield

    def note(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class PlainReporter(Reporter):
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        t0 = time.monotonic()
        self._print(f"* {title} ...")
        try:
            yield
        except BaseException:
            self._print(f"  failed: {title}")
            raise
        self._print(f"  ok: {title} ({time.monotonic() - t0:.1f}s)")

    def note(self, message: str) -> None:
        self._print(f"  {message}")

    def warn(self, message: str) -> None:
        self._print(f"  warning: {message}")


class RichReporter(Reporter):
    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console: Any = Console(file=stream or sys.stderr, highlight=False)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            with self.console.status(f"{title} ..."):
                yield
        except BaseException:
            self.console.print(f"[red]✗[/red] {title}")
            raise
        self.console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - t0:.1f}s)[/dim]")

    def note(self, message: str) -> None:
        self.console.print(f"  {message}", markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"  [yellow]warning:[/yellow] {message}")


def for_stream(stream: TextIO | None = None) -> Reporter:
    s = stream or sys.stderr
    return RichReporter(s) if s.isatty() else PlainReporter(s)
