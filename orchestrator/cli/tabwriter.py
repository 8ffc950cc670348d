"""Go's text/tabwriter, which kubectl prints every table and description with.

Reimplemented rather than approximated so the columns line up exactly as
kubectl's do: cells are tab-terminated, the text after a line's last tab is
not part of any column, and a column's width is set per *block* of
consecutive lines that have a cell in it (so a line without tabs, such as
`Containers:` in `describe`, starts new alignment below it).
"""

from __future__ import annotations

from collections.abc import Sequence

# kubectl's printers.GetNewTabWriter: tables (get, api-resources, config get-contexts).
TABLE_MINWIDTH = 6
TABLE_PADDING = 3
# kubectl's describe: tabbedString's writer.
DESCRIBE_MINWIDTH = 0
DESCRIBE_PADDING = 2


def _format(
    lines: list[list[str]],
    widths: list[int],
    line0: int,
    line1: int,
    out: list[str],
    minwidth: int,
    padding: int,
) -> None:
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        # A block of lines that have a cell in this column starts here.
        _write_lines(lines, widths, line0, this, out)
        line0 = this
        width = minwidth
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        widths.append(width)
        _format(lines, widths, line0, this, out, minwidth, padding)
        widths.pop()
        line0 = this
    _write_lines(lines, widths, line0, line1, out)


def _write_lines(
    lines: list[list[str]], widths: list[int], line0: int, line1: int, out: list[str]
) -> None:
    for cells in lines[line0:line1]:
        parts = []
        for j, cell in enumerate(cells):
            if j < len(widths):
                parts.append(cell + " " * (widths[j] - len(cell)))
            else:
                parts.append(cell)
        out.append("".join(parts))


def align(
    lines: Sequence[str], *, minwidth: int = TABLE_MINWIDTH, padding: int = TABLE_PADDING
) -> list[str]:
    """Lines with tab-separated cells, aligned as Go's tabwriter would."""
    split = [line.split("\t") for line in lines]
    out: list[str] = []
    _format(split, [], 0, len(split), out, minwidth, padding)
    return out


def table(
    rows: Sequence[Sequence[str]], *, minwidth: int = TABLE_MINWIDTH, padding: int = TABLE_PADDING
) -> list[str]:
    """Rows of cells (the last column is left unpadded, as kubectl's)."""
    return align(["\t".join(row) for row in rows], minwidth=minwidth, padding=padding)


class RememberingTable:
    """Rows printed one at a time (`get -w`) that keep the widths seen so far,
    as kubectl's tabwriter.RememberWidths does: columns never shrink."""

    def __init__(self, *, minwidth: int = TABLE_MINWIDTH, padding: int = TABLE_PADDING) -> None:
        self.widths: list[int] = []
        self.minwidth = minwidth
        self.padding = padding

    def format(self, rows: Sequence[Sequence[str]]) -> list[str]:
        for row in rows:
            for i, cell in enumerate(row[:-1]):
                need = max(self.minwidth, len(cell) + self.padding)
                if i < len(self.widths):
                    self.widths[i] = max(self.widths[i], need)
                else:
                    self.widths.append(need)
        out = []
        for row in rows:
            parts = [cell.ljust(self.widths[i]) for i, cell in enumerate(row[:-1])]
            parts.extend(row[-1:])
            out.append("".join(parts))
        return out
