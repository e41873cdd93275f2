"""Every loader on the real copies in ../shared/data and on official-format / malformed fixtures."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from zofo.errors import ZofoError
from zofo.tasks import load_task, task_names

SUPERGLUE_VAL = {"BoolQ": 3270, "CB": 56, "COPA": 100, "RTE": 277, "WiC": 638, "WSC": 104}


@pytest.mark.parametrize(("folder", "n_val"), sorted(SUPERGLUE_VAL.items()))
def test_superglue_val_sets_load(data, folder, n_val):
    task = load_task(folder.lower(), data / "superglue" / folder)
    assert len(task.records("test")) == n_val
    assert len(task.records("train")) == 32 and len(task.records("dev")) == 32
    for example in task.examples("test"):
        assert example.candidates and 0 <= example.label < len(example.candidates)


def test_multirc_nested_val_loads(data):
    task = load_task("multirc", data / "superglue" / "MultiRC")
    records = task.records("test")
    assert len({r.where for r in records}) == 83  # 83 paragraphs (lines), one record per answer
    assert len(records) > 83 * 10 and {r["label"] for r in records} == {0, 1}


def test_record_fewglue_loads(data):
    task = load_task("record", data / "superglue" / "ReCoRD")
    examples = task.examples("train")
    assert len(examples) >= 32
    assert all(example.candidates[example.label] in example.answers for example in examples)


def test_sst2_loads(data):
    task = load_task("sst2", data / "sst2")
    assert {k: len(v) for k, v in task.pools.items()} == {"train": 60614, "dev": 6735, "test": 872}
    assert task.examples("test")[0].prompt.endswith(" It was")


def test_every_bigbench_task_loads(data):
    folders = sorted(p.parent for p in (data / "bigbench").rglob("task.json*"))
    assert len(folders) == 82
    for folder in folders:
        task = load_task("bigbench", folder)
        assert len(task.records("train")) >= 100, folder
        for example in task.examples("train"):
            assert len(example.candidates) >= 2 and 0 <= example.label < len(example.candidates), folder


def test_bigbench_by_name_from_a_collection(data):
    task = load_task("bigbench:arithmetic/1_digit_addition", data / "bigbench")
    assert task.name == "bigbench:arithmetic/1_digit_addition" and len(task.records("train")) == 100
    with pytest.raises(ZofoError, match="sub-tasks.*give one of"):
        load_task("bigbench", data / "bigbench" / "arithmetic")


def test_plain_and_gzip_read_the_same(tmp_path, fixtures):
    plain = fixtures / "winogrande" / "dev.jsonl"
    with open(plain, "rb") as src, gzip.open(tmp_path / "dev.jsonl.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    from_gzip = load_task("winogrande", tmp_path).examples("test")
    assert from_gzip == load_task("winogrande", plain).examples("train")


def test_squad_fixture(fixtures):
    task = load_task("squad", fixtures / "squad")
    test = task.examples("test")
    assert [e.answers for e in test] == [("Paris",), ("France", "France.")]  # impossible question skipped
    assert task.generative and len(task.examples("train")) == 1


def test_drop_fixture(fixtures):
    answers = [e.answers for e in load_task("drop", fixtures / "drop").examples("test")]
    assert answers == [("7",), ("The Bears",), ("3 May 1999",)]


def test_winogrande_fixture(fixtures):
    task = load_task("winogrande", fixtures / "winogrande")
    assert [e.label for e in task.examples("test")] == [0, 1] and len(task.records("train")) == 2


def test_metaicl_fixture(fixtures):
    task = load_task("metaicl:tiny_sst", fixtures / "metaicl")
    assert sorted(task.splits) == ["dev", "test", "train"]
    assert task.examples("train")[0].candidates == (" negative", " positive")
    one = load_task("metaicl", fixtures / "metaicl" / "tiny_sst_16_13_train.jsonl")
    assert one.splits == ["train"]  # siblings of the same (k, seed) only


MALFORMED = [
    ("rte", "rte_bad_json.jsonl", r"rte_bad_json.jsonl:2: bad JSON"),
    ("rte", "rte_missing_field.jsonl", r"rte_missing_field.jsonl:3: missing field 'hypothesis'"),
    ("rte", "rte_unknown_label.jsonl", r"unknown_label.jsonl:2: unknown label 'contradiction'.*entailment"),
    ("multirc", "multirc_missing_answer_text.jsonl", r"answer_text.jsonl:1: missing field 'text'"),
    ("sst2", "sst2_bad_columns.tsv", r"sst2_bad_columns.tsv:3: 3 columns, header has 2"),
    ("bigbench", "bigbench_no_candidates", r"task.json: examples\[1\]: example with no candidates"),
    ("metaicl", "metaicl_no_options.jsonl", r"metaicl_no_options.jsonl:2: example with no candidates"),
    ("squad", "squad_no_answer.json", r"squad_no_answer.json: data\[0\].paragraphs\[0\].qas\[1\]: .*no gold"),
]


@pytest.mark.parametrize(("task", "file", "message"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_input_names_file_and_line(fixtures, task, file, message):
    with pytest.raises(ZofoError, match=message):
        load_task(task, fixtures / "malformed" / file)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ZofoError, match="unknown task 'sst3'.*boolq.*sst2.*bigbench:<task>") as err:
        load_task("sst3")
    assert set(task_names()) >= {"sst2", "rte", "cb", "boolq", "wsc", "wic", "multirc", "copa", "record",
                                 "squad", "drop", "winogrande"}
    assert "\n" not in str(err.value)


def test_unknown_template_lists_the_known_ones(fixtures):
    with pytest.raises(ZofoError, match="no template 'nope'.*mezo, replace"):
        load_task("winogrande", fixtures / "winogrande", template="nope")


def test_missing_data_path_is_reported(tmp_path):
    with pytest.raises(ZofoError, match="does not exist"):
        load_task("rte", tmp_path / "nowhere")
    with pytest.raises(ZofoError, match="no SuperGLUE files"):
        load_task("rte", tmp_path)


RTE_LINE = '{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment", "idx": %d}\n'


def damaged(tmp_path: Path, name: str, damage: str) -> Path:
    """A small valid file ``name`` (RTE lines, an SST-2 tsv or a BIG-bench task.json), damaged: a gzip file cut
    short, plain text under a .gz name, or a Latin-1 byte on line 3."""
    if name.endswith((".tsv", ".tsv.gz")):
        text = "sentence\tlabel\n" + "".join(f"a fine film {i} .\t1\n" for i in range(200))
    elif "task.json" in name:
        examples = [{"input": f"q{i}", "target_scores": {"a": 1, "b": 0}} for i in range(200)]
        text = json.dumps({"name": "t", "examples": examples})
    else:
        text = "".join(RTE_LINE % i for i in range(200))
    data = text.encode()
    if damage == "latin-1":
        at = data.index(b"\n", data.index(b"\n") + 1) + 3  # on line 3
        data = data[:at] + "é".encode("latin-1") + data[at:]
    if name.endswith(".gz"):
        data = gzip.compress(data)[:400] if damage == "cut" else data if damage == "not-gzip" else gzip.compress(data)
    file = tmp_path / name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    return file


@pytest.mark.parametrize(("task", "name", "damage", "message"), [
    ("rte", "rte/val.jsonl.gz", "cut", r"val.jsonl.gz: not a whole gzip file \(.*\) \(copy or download the file"),
    ("rte", "rte/val.jsonl.gz", "not-gzip", r"val.jsonl.gz: not a whole gzip file"),
    ("rte", "rte/val.jsonl", "latin-1", r"val.jsonl:3: not UTF-8 text \(save the file as UTF-8\)$"),
    ("sst2", "sst2/train.tsv.gz", "not-gzip", r"train.tsv.gz: not a whole gzip file"),
    ("sst2", "sst2/train.tsv.gz", "latin-1", r"train.tsv.gz:3: not UTF-8 text"),
    ("bigbench", "bb/task.json.gz", "cut", r"task.json.gz: not a whole gzip file"),
])
def test_a_damaged_file_is_named_not_a_traceback(tmp_path, task, name, damage, message):
    """They raised EOFError, gzip.BadGzipFile and UnicodeDecodeError with a traceback."""
    file = damaged(tmp_path, name, damage)
    with pytest.raises(ZofoError, match=message):
        loaded = load_task(task, file.parent)
        for split in loaded.splits:
            loaded.records(split)
