"""Plain-text tables for the demos' output."""

from __future__ import annotations


def table(title: str, header: tuple, rows: list) -> str:
  """`title`, then `header` and `rows` in left-aligned columns."""
  widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
  line = lambda cells: '  '.join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
  return '\n'.join([title, line(header), line(['-' * w for w in widths]), *map(line, rows)])
