"""A small `bigbench-1.0.0.tar.gz` built by the tests: the real sdist's layout, a few task.json files.

It carries an in-tree PEP 517 backend with no build requirements, so `pip download` can prepare its metadata
with no package index at all; it is served to pip from a local folder (PIP_FIND_LINKS, PIP_NO_INDEX).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
METADATA = "Metadata-Version: 2.1\nName: bigbench\nVersion: 1.0.0\n"
BACKEND = f'''import os

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, "bigbench-1.0.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as handle:
        handle.write({METADATA!r})
    return "bigbench-1.0.0.dist-info"

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("a test archive, not installable")
'''
TOY = {"name": "toy", "metrics": ["multiple_choice_grade"],
       "examples": [{"input": f"Is {i} even?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2)}}
                    for i in range(6)]}


def build_sdist(folder: Path, tasks: dict[str, dict]) -> Path:
    """`folder/bigbench-1.0.0.tar.gz` holding `tasks` ({path name: task.json content})."""
    top = folder / "build" / "bigbench-1.0.0"
    for name, doc in tasks.items():
        (top / "bigbench" / "benchmark_tasks" / name).mkdir(parents=True)
        (top / "bigbench" / "benchmark_tasks" / name / "task.json").write_text(json.dumps(doc))
    (top / "pyproject.toml").write_text(PYPROJECT)
    (top / "backend.py").write_text(BACKEND)
    (top / "PKG-INFO").write_text(METADATA)
    archive = folder / "bigbench-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname="bigbench-1.0.0")
    return archive
