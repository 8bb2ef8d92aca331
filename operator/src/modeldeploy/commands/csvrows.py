"""CSV samples and request data: the rows, without a header line. Standard library only."""

from __future__ import annotations

import csv
import io

__all__ = ["data_rows"]


def _is_header(row: list[str]) -> bool:
    """A header names its columns: some cell is neither a number nor empty (a missing value)."""
    for cell in row:
        if not cell.strip():
            continue
        try:
            float(cell)
        except ValueError:
            return True
    return False


def data_rows(text: str) -> list[list[str]]:
    """The non-empty rows of ``text``, the first one dropped when it is a header."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    return rows[1:] if rows and _is_header(rows[0]) else rows
