"""Distributions fetched once into zofo's cache with `pip download` (never installed or imported).

Used for the BIG-bench sdist only, and only when no local copy of a task is found (zofo.tasks.bigbench_sources);
the default model comes from an installed package instead (zofo.models.load).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zofo.errors import ZofoError


def cache_dir() -> Path:
    """Where zofo keeps downloaded distributions and converted models ($ZOFO_CACHE, else ~/.cache/zofo)."""
    return Path(os.environ.get("ZOFO_CACHE") or Path.home() / ".cache" / "zofo")


def _pip(pip: list[str], args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*pip, *args], capture_output=True, text=True)


def _older_pip(folder: Path) -> list[str]:
    """A pip < 26 run straight from its wheel (pip's documented `python pip.whl/pip` form).

    pip 26 refuses any PyPI sdist whose metadata declares a direct-URL dependency (bigbench 1.0.0 declares
    `bleurt @ file://...`); zofo only wants the archive, so such a download uses the previous pip.
    """
    wheels = sorted(folder.glob("pip-*.whl"))
    if not wheels:
        _pip([sys.executable, "-m", "pip"], ["download", "--no-deps", "pip<26", "-d", str(folder)])
        wheels = sorted(folder.glob("pip-*.whl"))
    if not wheels:
        raise ZofoError("could not download pip<26 from PyPI", "check the network")
    return [sys.executable, str(wheels[-1] / "pip")]


def download(requirement: str, cache: Path, source: bool = False) -> Path:
    """`pip download --no-deps` one distribution into `cache` (once) and return its file."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    version = requirement.split("==")[1] if "==" in requirement else ""
    found = cached(cache, name, version, source)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    args = ["download", "--no-deps", "-q", *kind, "-d", str(cache), requirement]
    result = _pip([sys.executable, "-m", "pip"], args)
    if cached(cache, name, version, source) is None and "direct URL" in result.stderr:
        result = _pip(_older_pip(cache / "pip-tool"), args)
    found = cached(cache, name, version, source)
    if result.returncode != 0 or found is None:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZofoError(f"could not download {requirement} from PyPI: {tail}",
                        "check the network, or put the file in " + str(cache))
    return found


def cached(cache: Path, name: str, version: str, source: bool) -> Path | None:
    """The distribution's file in `cache` (an sdist `.tar.gz` or a wheel), or None."""
    pattern = f"{name}-{version}*" + (".tar.gz" if source else ".whl")
    matches = sorted(p for p in cache.glob(pattern) if p.name.lower().startswith(name)) if cache.exists() else []
    return matches[0] if matches else None
