"""GLUE SST-2: the tsv reader (plain or .gz) and its templates ("<sentence> It was" terrible/great).

Local data is a folder with `train.tsv`, `dev.tsv`, `test.tsv` (each optionally .gz), pools of the
same names. A file without a `label` column (the official GLUE test set) is unlabelled and skipped;
when no labelled test file remains, `dev.tsv` is the test pool (GLUE's dev set is its evaluation set,
which is what MeZO tests on). A single .tsv file is one "train" pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.base import TASKS, Pools, TaskSpec
from zofo.tasks.example import Example, Record
from zofo.tasks.hub import hub_reader
from zofo.tasks.io import find_file, iter_tsv, lookup_label, need

SST2_LABELS = {"0": 0, "1": 1, 0: 0, 1: 1}


def norm_sst2(obj: dict[str, Any], where: str) -> list[Record]:
    label = lookup_label(SST2_LABELS, need(obj, "label", where), where)
    return [Record({"sentence": need(obj, "sentence", where, str), "label": label}, where)]


def read_tsv(path: Path) -> list[Record] | None:
    """Labelled SST-2 records of one tsv file; None when the file has no label column."""
    rows = iter_tsv(path)
    first = next(rows, None)
    if first is None or "label" not in first[1]:
        return None if first is not None else []
    return [record for where, row in [first, *rows] for record in norm_sst2(row, where)]


def read_sst2(path: Path) -> Pools:
    """Pools of an SST-2 folder (or one tsv file); see the module docstring for the layout."""
    if path.is_file():
        return {"train": read_tsv(path) or []}
    if not path.is_dir():
        raise ZofoError(f"data path {path} does not exist", "give a folder with train/dev/test.tsv")
    files = {pool: find_file(path, pool, (".tsv",)) for pool in ("train", "dev", "test")}
    if not any(files.values()):
        raise ZofoError(f"no GLUE tsv files in {path}", "expected train.tsv, dev.tsv, test.tsv (or .gz)")
    pools = {pool: read_tsv(file) for pool, file in files.items() if file}
    labelled = {pool: records for pool, records in pools.items() if records is not None}
    if "test" not in labelled and "dev" in labelled:
        labelled["test"] = labelled.pop("dev")
    return labelled


def sst2_mezo(r: Record) -> Example:
    return Example(f'{r["sentence"].strip()} It was', (" terrible", " great"), r["label"])


def sst2_review(r: Record) -> Example:
    return Example(f'Review: {r["sentence"].strip()}\nSentiment:', (" negative", " positive"), r["label"])


TASKS.register("sst2")(TaskSpec(
    name="sst2", templates={"mezo": sst2_mezo, "review": sst2_review}, read=read_sst2,
    hub=hub_reader("stanfordnlp/sst2", None, norm_sst2),
    protocol="GLUE tsv: train.tsv=train pool, dev.tsv=dev pool, test.tsv=test pool",
))
