"""Rewrite every results folder's tables and plots from its compacted run records, and check them.

    python experiments/regenerate.py                   (every folder of experiments/results/aggregates.yaml)
    python experiments/regenerate.py --only core-grids (the folders whose path contains that string)

Each folder's aggregate (its record files and options, in aggregates.yaml) runs into a scratch folder; every file
MANIFEST.sha256 lists for the folder is then compared with it byte for byte and copied into the folder, and so are
the plots (dev_curves.png, pareto.png; kept out of git by results/.gitignore). Files the manifest does not list are
left as they are: tables an older version of the report wrote, which the current one words differently. Exits 1
if any listed file differs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: the repository root makes `experiments` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.report.aggregate import aggregate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PLOTS = ("dev_curves.png", "pareto.png")
DEFAULT_CURVES = "mezo,zo-lora,bilevel-zofo-lora,fo-lora"  # study.py --aggregate's default


def read_manifest(manifest: Path) -> dict[str, str]:
    """{path: sha256} of the files the report regenerates byte-identically (`sha256sum` format)."""
    return {path.strip(): sha for sha, path in (line.split(None, 1) for line in manifest.read_text().splitlines())}


def run_aggregate(spec: dict, target: Path, root: Path) -> None:
    """One folder's aggregate into ``target`` (its `also` tables too), the report's printout silenced."""
    options = spec.get("options", {})

    def one(out: Path, paired: str | None) -> None:
        aggregate([root / s for s in spec["sources"]], out, options.get("curves", DEFAULT_CURVES).split(","),
                  options.get("reference", "mezo"), paired, options.get("select-seeds"), options.get("reruns", False))

    with contextlib.redirect_stdout(io.StringIO()):
        one(target, options.get("paired"))
        for name, extra in spec.get("also", {}).items():
            one(target / "also", extra.get("paired"))
            shutil.copyfile(target / "also" / "paired.md", target / name)


def regenerate(folder: str, spec: dict, manifest: dict[str, str], root: Path) -> list[str]:
    """Regenerate one folder (a path relative to ``root``); the listed files that differ from the manifest."""
    listed = {p: sha for p, sha in manifest.items() if Path(p).parent == Path(folder)}
    differ = []
    with tempfile.TemporaryDirectory() as scratch:
        run_aggregate(spec, Path(scratch), root)
        for path, sha in listed.items():
            written = Path(scratch) / Path(path).name
            if not written.exists() or hashlib.sha256(written.read_bytes()).hexdigest() != sha:
                differ.append(path)
            else:
                shutil.copyfile(written, root / path)
        for plot in PLOTS:
            if (Path(scratch) / plot).exists():
                shutil.copyfile(Path(scratch) / plot, root / folder / plot)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder holding aggregates.yaml")
    parser.add_argument("--root", type=Path, default=None,
                        help="the folder the paths in aggregates.yaml and MANIFEST.sha256 start from "
                             "(default: the repository root)")
    parser.add_argument("--only", default="", help="regenerate only folders whose path contains this")
    args = parser.parse_args(argv)
    root = args.root or args.results.resolve().parent.parent
    specs = yaml.safe_load((args.results / "aggregates.yaml").read_text())
    manifest = read_manifest(args.results / "MANIFEST.sha256")
    differ, checked = [], 0
    for folder, spec in specs.items():
        if args.only in folder:
            differ += regenerate(folder, spec, manifest, root)
            checked += sum(Path(p).parent == Path(folder) for p in manifest)
    print(f"{checked - len(differ)} of {checked} listed files byte-identical" + "".join(f"\n  differs: {p}"
                                                                                       for p in differ))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
