"""Reading and writing the CSV text files users make: UTF-8 with or without a byte-order
mark, 1-based line numbers in every error."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from epic_protocol.annotations.records import AnnotationError, PathLike


def open_text(path: PathLike) -> TextIO:
    """Open a text file the user made (CSV annotations, id lists, class files) for reading.

    UTF-8 with or without a byte-order mark: spreadsheet programs (Excel's and Google
    Sheets' "CSV UTF-8") start the file with ``U+FEFF``, which would otherwise stick to the
    first cell (uid ``0`` read as ``U+FEFF 0``, a header cell ``narration_id`` not found).
    Newlines are left to the ``csv`` module (``newline=""``). Every reader of such files
    opens them here.
    """
    return Path(path).open(newline="", encoding="utf-8-sig")


def csv_rows(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, stripped cells) for every non-blank CSV row.

    Raises ``FileNotFoundError`` for a missing file and :class:`AnnotationError` for one
    that is not UTF-8 text (naming the file and the line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    line_number = 0
    try:
        with open_text(path) as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                cells = [cell.strip() for cell in row]
                if any(cells):
                    yield line_number, cells
    except UnicodeDecodeError as error:
        raise AnnotationError(
            f"{path}:{line_number + 1}: not UTF-8 text ({error.reason}); save it as CSV UTF-8"
        ) from None


def parse_int(path: PathLike, line: int, column: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AnnotationError(
            f"{path}:{line}: column '{column}' must be an integer, got {value!r}"
        ) from None


def parse_float(path: PathLike, line: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise AnnotationError(
            f"{path}:{line}: column '{column}' must be a number, got {value!r}"
        ) from None


def check_span(path: PathLike, line: int, start: int, end: int) -> None:
    if start < 0 or end < start:
        raise AnnotationError(f"{path}:{line}: invalid frame span start={start} end={end}")


def write_csv_rows(
    path: PathLike, rows: Iterable[Sequence[object]], header: Sequence[str] | None = None
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
