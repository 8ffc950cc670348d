"""In-memory stand-ins for iptables and conntrack, for tests of the proxier.

FakeIptables keeps chains the way iptables-restore --noflush would: a declared
chain is created or flushed, "-A" appends, "-X" deletes; a table is applied
only if all of it parses, as the real command commits table by table.
"""

from __future__ import annotations

from agent.network.proxy.iptables import RestoreError
from agent.network.proxy.rules import Jump


class FakeIptables:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[str]]] = {"nat": {}, "filter": {}}
        self.jumps: list[Jump] = []
        self.restores: list[str] = []
        self.saves = 0
        self.fail_on: str | None = None  # a restore containing this line fails there

    async def restore(self, text: str) -> None:
        self.restores.append(text)
        lines = text.split("\n")
        table = ""
        work: dict[str, list[str]] = {}
        for n, line in enumerate(lines, 1):
            if self.fail_on is not None and line == self.fail_on:
                raise RestoreError("iptables-restore: line failed (fake)", n, line)
            if line.startswith("*"):
                table = line[1:]
                work = {c: list(r) for c, r in self.tables.setdefault(table, {}).items()}
            elif line.startswith(":"):
                work[line[1:].split(" ", 1)[0]] = []
            elif line.startswith("-A "):
                chain = line.split(" ", 2)[1]
                if chain not in work:
                    raise RestoreError(f"chain {chain} does not exist", n, line)
                work[chain].append(line)
            elif line.startswith("-X "):
                work.pop(line[3:], None)
            elif line == "COMMIT":
                self.tables[table] = work

    async def save(self) -> str:
        self.saves += 1
        out = []
        for table, chains in self.tables.items():
            out.append(f"*{table}")
            out.extend(f":{c} - [0:0]" for c in chains)
            for rules in chains.values():
                out.extend(rules)
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    async def ensure_jump(self, jump: Jump) -> bool:
        if jump in self.jumps:
            return False
        self.jumps.append(jump)
        return True


class FakeConntrack:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, ...]] = []

    async def delete(self, *filters: str) -> None:
        self.deleted.append(filters)
