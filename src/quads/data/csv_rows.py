"""Reading a corpus CSV (FSC split files, manifests) into rows that remember their line numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quads.errors import DataError


@dataclass(frozen=True)
class CsvRow:
    line: int  # 1-based line in the file where the row ends (the header is line 1)
    fields: dict[str, str]


def read_csv_rows(path: Path, check_header: Callable[[list[str], Path], None]) -> tuple[list[str], list[CsvRow]]:
    """Header and rows of a UTF-8 CSV; the header is checked first (by `check_header`), then a row with the wrong
    number of fields is an error naming file and line.

    UTF-8 because FSC phrases contain a curly apostrophe; a byte-order mark is tolerated (spreadsheet exports).
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 text ({error.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty (expected a header line)")
        check_header(header, path)
        rows = []
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line, e.g. a trailing newline
            if len(values) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: expected {len(header)} comma-separated fields "
                    f"({','.join(header)}), found {len(values)}"
                )
            rows.append(CsvRow(reader.line_num, dict(zip(header, values, strict=True))))
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None
    return header, rows


def check_header_columns(names: list[str], required: tuple[str, ...], allowed: tuple[str, ...], path: Path,
                         expected: str, what: str = "header") -> None:
    """A header must name every required column, only allowed ones, each once; else a DataError at line 1."""
    missing = [name for name in required if name not in names]
    unexpected = [name for name in names if name not in allowed]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unexpected or duplicated:
        problems = [
            f"missing {missing}" if missing else "",
            f"unexpected {unexpected}" if unexpected else "",
            f"repeated {duplicated}" if duplicated else "",
        ]
        raise DataError(f"{path}:1: wrong {what} ({'; '.join(p for p in problems if p)}); expected {expected}")
