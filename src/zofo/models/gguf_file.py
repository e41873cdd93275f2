"""A GGUF file's layout checked before transformers reads it, so that a truncated or damaged file gets one clear
error instead of a `struct.error` from deep inside the reader.

The layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic "GGUF", version (uint32), tensor
count and metadata count (uint64); the metadata (key string, value type, value); per tensor its name, shape,
type and offset; then, aligned to `general.alignment` (default 32), the tensor data. The walk reads only the
header, through a read-only memory map, and so costs well under a second even for a large model.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from zofo.errors import ZofoError

FIX = "download it again, or re-assemble it if it came in parts: cat model.gguf.part* > model.gguf"
#: metadata value type -> struct format of a scalar (8: string, 9: array, read apart)
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


class _Short(Exception):
    """The header runs past the end of the file; ``needed``: the bytes it would take at least."""

    def __init__(self, needed: int):
        self.needed = needed


class _Cursor:
    """Reads little-endian values from a buffer, left to right."""

    def __init__(self, data: mmap.mmap | bytes):
        self.data, self.pos = data, 0

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise _Short(self.pos + n)
        self.pos += n

    def read(self, fmt: str):
        start = self.pos
        self.skip(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self) -> bytes:
        n = self.read("<Q")
        start = self.pos
        self.skip(n)
        return bytes(self.data[start:self.pos])


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a whole GGUF model: too short for what its header describes, or unreadable."""
    size = path.stat().st_size
    if size < 4:
        raise ZofoError(f"GGUF file {path} is truncated: {size} bytes, too short for a header", FIX)
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            end = data_end(_Cursor(data), path)
        except _Short as short:
            raise ZofoError(f"GGUF file {path} is truncated: {size:,} bytes, cut off inside its header, which "
                            f"needs at least {short.needed:,}", FIX) from None
    if end > size:
        raise ZofoError(f"GGUF file {path} is truncated: {size:,} bytes, its header describes {end:,}", FIX)


def data_end(cursor: _Cursor, path: Path) -> int:
    """The byte where the last tensor's data ends, as the header describes it."""
    magic = bytes(cursor.data[:4])
    if magic != b"GGUF":
        raise ZofoError(f"{path} cannot be parsed as GGUF: it starts with {magic!r}, not b'GGUF'",
                        "give a .gguf model file, or " + FIX)
    cursor.skip(4)
    version = cursor.read("<I")
    if version not in (2, 3):
        raise ZofoError(f"{path} cannot be parsed as GGUF: version {version}, where 2 or 3 is read",
                        "convert it with a current llama.cpp, or " + FIX)
    n_tensors, n_metadata = cursor.read("<Q"), cursor.read("<Q")
    alignment = 32
    for _ in range(n_metadata):
        key, kind = cursor.string(), cursor.read("<I")
        if key == b"general.alignment" and kind == 4:
            alignment = cursor.read("<I")
        else:
            _skip_value(cursor, kind, path)
    tensors = [_tensor_extent(cursor, path) for _ in range(n_tensors)]
    start = -(-cursor.pos // max(alignment, 1)) * max(alignment, 1)
    return start + max((offset + n for offset, n in tensors), default=0)


def _skip_value(cursor: _Cursor, kind: int, path: Path) -> None:
    if kind in SCALARS:
        cursor.skip(struct.calcsize(SCALARS[kind]))
    elif kind == STRING:
        cursor.string()
    elif kind == ARRAY:
        item, count = cursor.read("<I"), cursor.read("<Q")
        if item in SCALARS:
            cursor.skip(count * struct.calcsize(SCALARS[item]))
        else:
            for _ in range(count):
                _skip_value(cursor, item, path)
    else:
        raise ZofoError(f"{path} cannot be parsed as GGUF: unknown metadata value type {kind} at byte "
                        f"{cursor.pos - 4:,}", FIX)


def _tensor_extent(cursor: _Cursor, path: Path) -> tuple[int, int]:
    """(offset from the data start, bytes) of the next tensor described in the header."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    name = cursor.string()
    shape = [cursor.read("<Q") for _ in range(cursor.read("<I"))]
    kind, offset = cursor.read("<I"), cursor.read("<Q")
    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise ZofoError(f"{path} cannot be parsed as GGUF: tensor {name.decode(errors='replace')} has unknown type "
                        f"{kind}", "update the gguf package, or " + FIX) from None
    elements = 1
    for dim in shape:
        elements *= dim
    return offset, elements // block * block_bytes
