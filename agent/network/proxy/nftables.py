"""Applying the nftables ruleset: `nft -f -`, one transaction per sync.

Behind the small `Nft` interface so the proxier can be tested against a fake.
Every command is an asyncio subprocess with a timeout (the agent's event loop
also runs the kubelet). `nft -f` is atomic: when it refuses any line the
kernel keeps the table exactly as it was, and nft names the line.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from typing import Protocol

from agent.network.proxy.iptables import run_command
from agent.network.proxy.model import Endpoint, ServicePort
from agent.network.proxy.nft_rules import (
    FAMILY,
    Existing,
    NftRenderer,
    NftRuleset,
    build_transaction,
    delete_table,
    parse_existing,
)

# nft's errors start "/dev/stdin:12:5-20: Error: ..." (the file, line, columns).
_LOCATION = re.compile(r"^(?:/dev/stdin|-):(\d+):[\d-]+: Error: (.*)$", re.MULTILINE)


class NftError(Exception):
    """nft refused the input (or could not run). line_no is 1-based, 0 if unknown."""

    def __init__(self, message: str, line_no: int = 0, line: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line_no = line_no
        self.line = line


def parse_error(stderr: str, text: str) -> NftError:
    m = _LOCATION.search(stderr)
    if m is None:
        first = next((s for s in stderr.splitlines() if s.strip()), "nft failed")
        return NftError(first)
    n = int(m.group(1))
    lines = text.split("\n")
    return NftError(m.group(2), n, lines[n - 1] if 0 < n <= len(lines) else "")


class Nft(Protocol):
    async def apply(self, text: str) -> None:
        """`nft -f -` the text; NftError if refused (nothing applied then)."""
        ...

    async def existing(self) -> Existing:
        """Our per-Service chains and affinity sets now in the kernel."""
        ...


def nft_available() -> bool:
    return shutil.which("nft") is not None


class NftCommands:
    """The nft(8) CLI in the current network namespace or, for tests, in
    `netns` through nsenter."""

    def __init__(self, *, netns: str | None = None, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._prefix: list[str] = []
        if netns is not None:
            path = netns if "/" in netns else f"/var/run/netns/{netns}"
            self._prefix = ["nsenter", f"--net={path}"]

    async def apply(self, text: str) -> None:
        out = await run_command([*self._prefix, "nft", "-f", "-"], stdin=text, timeout=self.timeout)
        if out.returncode != 0:
            raise parse_error(out.stderr, text)

    async def _list(self, *args: str) -> str:
        out = await run_command([*self._prefix, "nft", *args], timeout=self.timeout)
        if out.returncode != 0:
            raise NftError(f"nft {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    async def existing(self) -> Existing:
        # Chains without their rules, sets without their elements: a full
        # sync needs only the names.
        chains = await self._list("list", "chains", FAMILY)
        sets = await self._list("-t", "list", "sets", FAMILY)
        return parse_existing(chains, sets)

    async def remove_table(self) -> None:
        await self.apply(delete_table())

    async def table_text(self, table: str) -> str:
        """`nft list table ip <table>`; "" when there is no such table."""
        args = ["list", "table", FAMILY, table]
        out = await run_command([*self._prefix, "nft", *args], timeout=self.timeout)
        if out.returncode == 0:
            return out.stdout
        if "No such file or directory" in out.stderr:
            return ""
        raise NftError(f"nft {' '.join(args)}: {out.stderr.strip()}")


class NftablesBackend:
    """Renders and applies; remembers what was applied so the next sync can
    be incremental. Failures raise NftError and leave `applied` as it was
    (nft changed nothing), so the proxier's retry is a full sync."""

    def __init__(self, nft: Nft, cluster_cidr: str) -> None:
        self.nft = nft
        self.renderer = NftRenderer(cluster_cidr)
        self.applied: NftRuleset | None = None
        self.last_ruleset: NftRuleset | None = None  # rendered, maybe not applied

    def render(self, ports: Mapping[ServicePort, tuple[Endpoint, ...]]) -> NftRuleset:
        self.last_ruleset = self.renderer.render(ports)
        return self.last_ruleset

    async def apply(self, ruleset: NftRuleset, *, full: bool) -> tuple[int, int]:
        """(chains written, bytes of nft input)."""
        if full or self.applied is None:
            text, written = build_transaction(ruleset, None, await self.nft.existing())
        else:
            text, written = build_transaction(ruleset, self.applied, Existing())
        await self.nft.apply(text)
        self.applied = ruleset
        return written, len(text)
