"""Reading official dataset files, plain or gzip-compressed, with `file:line` in every error."""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from zofo.errors import ZofoError


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading; `x.gz` is decompressed on the fly."""
    return _opened(path, "rt", "utf-8")


def _opened(path: str | Path, mode: str, encoding: str | None = None) -> IO:
    """``path`` opened for reading in ``mode``, decompressed on the fly where it is `x.gz`."""
    path = Path(path)
    return (gzip.open if path.suffix == ".gz" else open)(path, mode, encoding=encoding)


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn what a damaged file raises while it is read into a ZofoError naming it: a gzip file cut short or not
    gzip at all, text that is not UTF-8 (with the first line that is not)."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ZofoError(f"{path}: not a whole gzip file ({err})", "copy or download the file again") from None
    except UnicodeDecodeError:
        raise ZofoError(f"{path}:{first_undecodable_line(path)}: not UTF-8 text",
                        "save the file as UTF-8") from None


def first_undecodable_line(path: str | Path) -> int:
    """The number of the first line of ``path`` (decompressed where `x.gz`) that is not UTF-8; 0 where none is."""
    with _opened(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def find_file(folder: str | Path, stem: str, suffixes: tuple[str, ...] = (".jsonl",)) -> Path | None:
    """`folder/stem.suffix` or `folder/stem.suffix.gz`, the first that exists; None if none does."""
    for suffix in suffixes:
        for candidate in (Path(folder) / f"{stem}{suffix}", Path(folder) / f"{stem}{suffix}.gz"):
            if candidate.is_file():
                return candidate
    return None


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (`file:line`, object) for each non-blank line of a JSON-lines file."""
    with reading(path), open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ZofoError(f"{where}: bad JSON ({err.msg})", "fix or delete that line") from None
            if not isinstance(obj, dict):
                raise ZofoError(f"{where}: expected a JSON object, got {type(obj).__name__}",
                                "each line must be one JSON object")
            yield where, obj


def read_json(path: str | Path) -> Any:
    """Parse a whole JSON file; a syntax error names the file and line."""
    with reading(path), open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise ZofoError(f"{path}:{err.lineno}: bad JSON ({err.msg})", "fix the file") from None


def iter_tsv(path: str | Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (`file:line`, row) for a tab-separated file whose first line is a header."""
    with reading(path), open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ZofoError(f"{path}:1: empty file", "a GLUE tsv starts with a header line")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ZofoError(f"{where}: {len(row)} columns, header has {len(header)}",
                                "check the tabs on that line")
            yield where, dict(zip(header, row, strict=True))


def need(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = object) -> Any:
    """`obj[key]`, or a ZofoError naming the missing or mistyped field and where it is."""
    if not isinstance(obj, dict) or key not in obj:
        raise ZofoError(f"{where}: missing field {key!r}", "use the dataset's official field names")
    value = obj[key]
    if not isinstance(value, kind):
        raise ZofoError(f"{where}: field {key!r} has type {type(value).__name__}",
                        "use the dataset's official format")
    return value


def lookup_label(mapping: dict[Any, int], value: Any, where: str) -> int:
    """Map an official label value to its candidate index, or fail listing the valid labels."""
    key = value.lower() if isinstance(value, str) else value
    if key not in mapping:
        valid = ", ".join(repr(k) for k in mapping)
        raise ZofoError(f"{where}: unknown label {value!r}", f"valid labels: {valid}")
    return mapping[key]
