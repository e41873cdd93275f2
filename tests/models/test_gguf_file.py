"""A truncated or damaged GGUF file is refused in one line that names the file, what is wrong and what to do."""

from __future__ import annotations

import re

import pytest

from tests.tiny import small_gguf
from zofo.errors import ZofoError
from zofo.models.gguf_file import check_gguf
from zofo.models.load import load_model

AGAIN = r"\(download it again, or re-assemble it if it came in parts: cat model.gguf.part\* > model.gguf\)$"


@pytest.fixture
def whole(tmp_path):
    return small_gguf(tmp_path / "whole.gguf")


def cut(whole, n: int):
    path = whole.with_name(f"cut{n}.gguf")
    path.write_bytes(whole.read_bytes()[:n])
    return path


def described(error: pytest.ExceptionInfo) -> int:
    return int(re.search(r"its header describes ([\d,]+) ", str(error.value)).group(1).replace(",", ""))


def test_a_whole_file_passes(whole):
    check_gguf(whole)


@pytest.mark.parametrize("short_by", [100, 7000])  # inside the last tensor; inside the first
def test_a_file_cut_in_its_data_names_both_sizes(whole, short_by):
    size = whole.stat().st_size
    short = cut(whole, size - short_by)
    with pytest.raises(ZofoError, match=rf"^GGUF file {short} is truncated: {size - short_by:,} bytes, its header "
                                        rf"describes [\d,]+ {AGAIN}") as refused:
        load_model(str(short))  # the check runs before transformers reads the file
    assert size - short_by < described(refused) <= size  # the writer pads the last tensor to the alignment


@pytest.mark.parametrize("n, says", [(40, "40 bytes, cut off inside its header, which needs at least 52"),
                                     (2, "2 bytes, too short for a header")])
def test_a_file_cut_in_its_header_says_so(whole, n, says):
    with pytest.raises(ZofoError, match=rf"is truncated: {says}.*{AGAIN}"):
        check_gguf(cut(whole, n))


def test_a_file_that_is_not_gguf_cannot_be_parsed(tmp_path):
    other = tmp_path / "model.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ZofoError, match=rf"^{other} cannot be parsed as GGUF: it starts with b'PK\\x03\\x04', not "
                                        r"b'GGUF' \(give a .gguf model file, or download it again"):
        check_gguf(other)
