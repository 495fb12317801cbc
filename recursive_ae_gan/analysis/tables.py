"""Markdown tables, as every command prints and writes them (``report``, ``evaluate``, ``gpu_check``)."""

from __future__ import annotations

from collections.abc import Sequence


def format_value(value: object) -> str:
    """Four significant digits for floats, empty for missing values, ``str`` for the rest."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (cells through ``format_value``): readable in a terminal, rendered in
    a markdown file."""
    lines = [list(header), ["---"] * len(header), *([format_value(cell) for cell in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)
