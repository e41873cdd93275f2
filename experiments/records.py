"""Run records: a study's run folders compacted into one gzip-compressed JSON-lines file, and read back.

A study writes one folder per run (config.yaml, log.jsonl, result.json, placement.json, and its output in
logs/NAME.log). Kept as they are, a few hundred runs are thousands of small files; the report needs only their
contents, so a finished study's folders are compacted into ``runs.jsonl.gz`` beside them, one line per run:

    {"name": ..., "result": result.json or null (unfinished), "log": [log.jsonl entries] or null,
     "placement": placement.json or null, "config": config.yaml (only where result.json lacks it or differs),
     "failure": the last error line of its output (unfinished runs only)}

and one line per other small file of the folder, {"file": NAME, "text": ...} (e.g. the study files of its calls).
`read` gives the same records from a folder or from its compacted file, so the report reads either; a path
``X/runs`` that is gone but has ``X/runs.jsonl.gz`` reads the latter, so commands written before compaction run.

    python experiments/records.py compact RUNS_DIR        (writes RUNS_DIR.jsonl.gz, checks it reads back equal)
    python experiments/records.py compact-results DIR     (DIR/run-results.jsonl.gz from DIR's per-run NAME.json)
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
from pathlib import Path

import yaml

SUFFIX = ".jsonl.gz"


def records_file(source: Path) -> Path:
    """Where the compacted records of run folder ``source`` live."""
    return source.with_name(source.name + SUFFIX)


def read(source: Path) -> list[dict]:
    """The run records (sorted by name) of a folder of run folders, or of its compacted file (``source`` itself
    ending in .jsonl.gz, or ``source`` gone and its `records_file` there)."""
    if source.name.endswith(SUFFIX):
        return [r for r in read_lines(source) if "name" in r]
    if not source.exists() and records_file(source).exists():
        return read(records_file(source))
    return [run_record(d) for d in sorted(p for p in source.iterdir() if is_run(p))] if source.exists() else []


def read_lines(path: Path) -> list[dict]:
    """Every line of a records file, runs and files alike."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def is_run(folder: Path) -> bool:
    """Whether ``folder`` is a run folder (anything a run writes), not logs/ or a stray directory."""
    return folder.is_dir() and any((folder / f).exists() for f in ("result.json", "log.jsonl", "placement.json"))


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def run_record(run_dir: Path) -> dict:
    """One run folder as a record (see the module's docstring)."""
    result, log_file = _json(run_dir / "result.json"), run_dir / "log.jsonl"
    record = {"name": run_dir.name, "result": result,
              "log": [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else None,
              "placement": _json(run_dir / "placement.json")}
    config_file = run_dir / "config.yaml"
    if config_file.exists():
        config = yaml.safe_load(config_file.read_text())
        if result is None or result.get("config") != config:
            record["config"] = config
    if result is None:
        record["failure"] = failure_of(run_dir)
    return record


def failure_of(run_dir: Path) -> str:
    """The last error line of an unfinished run's output (the study's logs/NAME.log beside its folder)."""
    log = run_dir.parent / "logs" / f"{run_dir.name}.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Interrupt)\b", line)]
    return errors[-1][:120].replace("|", "/") if errors else "no error in its output"


def write(lines: list[dict], target: Path) -> None:
    """A records file; the same records give the same bytes (no time stamp in the gzip header)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as f:
        f.write("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode())
    target.write_bytes(buffer.getvalue())


def compact(source: Path) -> Path:
    """Write `records_file` of run folder ``source``: its runs, then the small files at its top (study YAMLs);
    checks that it reads back as the folder does and returns it. The folder itself is left for the caller."""
    files = [{"file": p.name, "text": p.read_text()} for p in sorted(source.iterdir()) if p.is_file()]
    runs = read(source)
    target = records_file(source)
    write(runs + files, target)
    if json.dumps(read(target)) != json.dumps(runs):  # as text: a NaN loss is not equal to itself
        raise RuntimeError(f"{target} does not read back as {source}")
    return target


def compact_results(folder: Path) -> Path:
    """Write ``folder``/run-results.jsonl.gz from the per-run JSONs an aggregate wrote there (NAME.json: the run's
    result.json), for studies whose run folders were not kept; checks it reads back equal and returns it."""
    files = sorted(folder.glob("*__s[0-9]*.json"))
    lines = [{"name": f.stem, "result": json.loads(f.read_text())} for f in files]
    target = folder / "run-results.jsonl.gz"
    write(lines, target)
    if json.dumps(read_lines(target)) != json.dumps(lines):
        raise RuntimeError(f"{target} does not read back as the JSONs of {folder}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["compact", "compact-results"],
                        help="compact: a folder of run folders; compact-results: a folder of per-run result JSONs")
    parser.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    for folder in args.folders:
        print(compact(folder) if args.command == "compact" else compact_results(folder))


if __name__ == "__main__":
    main()
