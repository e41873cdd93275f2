"""Split files: every refusal (file:line and reason), the entry forms, per-task sizes, and the shipped default split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from zofo.errors import ZofoError
from zofo.meta.pool import bigbench_folders, bigbench_root, resolve
from zofo.meta.split import meta_train_data, read_split

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPLIT = REPO / "configs" / "meta" / "bigbench_split.yaml"
SHARED_SST2 = REPO.parent / "shared" / "data" / "sst2"  # only named: a refused repeat loads nothing


def write_task(folder: Path, n: int, word: str = "good") -> Path:
    """A BIG-bench task.json of n two-option examples."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = [{"input": f"{word} {i}", "target_scores": {"yes": i % 2, "no": 1 - i % 2}} for i in range(n)]
    (folder / "task.json").write_text(json.dumps({"name": folder.name, "examples": examples}))
    return folder


@pytest.fixture
def root(tmp_path):
    """A BIG-bench root: tasks a (30 examples), b (900), and a group g with sub-tasks x and y."""
    base = tmp_path / "bb"
    write_task(base / "a", 30)
    write_task(base / "b", 900)
    write_task(base / "g" / "x", 40)
    write_task(base / "g" / "y", 40)
    return base


def split_file(tmp_path, text: str) -> Path:
    path = tmp_path / "split.yaml"
    path.write_text(text)
    return path


def test_entry_forms_resolve_to_the_same_tasks(root, tmp_path):
    path = split_file(tmp_path, f"bigbench_root: {root}\nmeta_train:\n  - bigbench:a\n  - {root / 'g'}\n"
                                f"meta_test:\n  - {{task: bigbench, data: {root / 'b'}}}\n")
    split = read_split(path)
    assert [r.name for r in split.meta_train] == ["a", "g/x", "g/y"]
    assert [r.name for r in split.meta_test] == ["b"]
    assert all(r.where == f"{path}:4" for r in split.meta_train[1:])  # a group's sub-tasks share its line
    assert len(split.task(split.meta_test[0]).records("train")) == 900


@pytest.mark.parametrize("text, line, reason", [
    ("meta_train:\n  - bigbench:a\n  - bigbench:b\nmeta_test:\n  - ROOT/a\n", 5,
     r"task a is in both meta_train \(.*split.yaml:2\) and meta_test \(a meta-test task must be unseen"),
    ("meta_train:\n  - bigbench:a\n  - {task: bigbench, data: ROOT/a}\nmeta_test:\n  - bigbench:b\n", 3,
     r"task a is listed twice in meta_train \(first at .*split.yaml:2\) \(remove the repeat\)"),
    ("meta_train:\n  - bigbench:g\nmeta_test:\n  - bigbench:g/y\n", 4, r"task g/y is in both meta_train"),
    ("meta_train: []\nmeta_test:\n  - bigbench:b\n", 1, r"meta_train is empty \(list at least one task"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n", 3, r"meta_test is empty"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - bigbench:nope\n", 4,
     r"bigbench:nope: no folder nope under the BIG-bench root .*bb \(check the name"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - bigbench:broken\n", 4,
     r"task broken does not load: .*no examples \(a task.json needs"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - {task: sst2, data: /no/such/dir}\n", 4,
     r"task sst2 \(dir\) does not load: data path /no/such/dir does not exist"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - not-a-task\n", 4,
     r"'not-a-task' is neither a task name nor an existing path"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - {task: bigbench:b, datum: x}\n", 4, r"unknown key 'datum'"),
    ("meta_train:\n  - bigbench:a\nmeta_tests:\n  - bigbench:b\n", 3, r"unknown key 'meta_tests'"),
    ("meta_train:\n  - bigbench:a\nmeta_test: bigbench:b\n", 3, r"meta_test must be a list of tasks"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - [x\n", 5, r"not valid YAML"),
    ("meta_train:\n  - bigbench:a\nmeta_test:\n  - bigbench:b\nmeta_train:\n  - bigbench:c\n", 5,
     r"key 'meta_train' is given twice in one mapping \(first on line 1\)"),
    ("meta_train:\n  - {task: bigbench:a, task: bigbench:c}\nmeta_test:\n  - bigbench:b\n", 2,
     r"key 'task' is given twice"),
    # the same data under another template, and a MetaICL split file against its folder with the task's name
    ("meta_train:\n  - {task: sst2, data: SST2}\nmeta_test:\n  - {task: sst2, data: SST2, template: mezo}\n", 4,
     r"task sst2 \(sst2\) \[mezo\] is in both meta_train \(.*split.yaml:2\) and meta_test"),
    ("meta_train:\n  - MICL/tiny_sst_16_100_train.jsonl\nmeta_test:\n  - {task: metaicl:tiny_sst, data: MICL}\n", 4,
     r"task metaicl:tiny_sst \(metaicl\) is in both meta_train"),
    ("meta_train:\n  - bigbench:a\n  - OTHER/p/x\n  - OTHER/q/x\nmeta_test:\n  - bigbench:b\n", 4,
     r"two different tasks in meta_train are named x \(the first at .*split.yaml:3\) \(give each task a distinct"),
])
def test_a_bad_split_is_refused_with_its_line_and_reason(root, tmp_path, text, line, reason):
    (root / "broken").mkdir()
    (root / "broken" / "task.json").write_text(json.dumps({"examples": []}))
    write_task(tmp_path / "other" / "p" / "x", 20)
    write_task(tmp_path / "other" / "q" / "x", 20)
    for word, where in [("ROOT", root), ("OTHER", tmp_path / "other"), ("SST2", SHARED_SST2),
                        ("MICL", REPO / "tests" / "fixtures" / "metaicl")]:
        text = text.replace(word, str(where))
    path = split_file(tmp_path, text)
    with pytest.raises(ZofoError, match=reason) as caught:
        read_split(path, root=root)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(caught.value)


def test_a_missing_list_and_a_missing_file_are_refused(root, tmp_path):
    with pytest.raises(ZofoError, match=r"split.yaml: no meta_test list \(add 'meta_test:'"):
        read_split(split_file(tmp_path, "meta_train:\n  - bigbench:a\n"), root=root)
    with pytest.raises(ZofoError, match="split file .*nope.yaml does not exist"):
        read_split(tmp_path / "nope.yaml")


def test_the_root_comes_from_the_argument_then_the_environment_then_the_file_then_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv("ZOFO_BIGBENCH", raising=False)
    monkeypatch.setenv("ZOFO_SHARED_DATA", str(tmp_path / "data"))
    assert bigbench_root(None, None) == tmp_path / "data" / "bigbench"  # where `zofo train` finds bigbench:NAME
    monkeypatch.delenv("ZOFO_SHARED_DATA")
    beside_the_checkout = Path(__file__).resolve().parents[3] / "shared" / "data" / "bigbench"
    assert bigbench_root(None, None) == beside_the_checkout  # the same from any current folder
    assert bigbench_root(None, "from/file") == Path("from/file")
    monkeypatch.setenv("ZOFO_BIGBENCH", str(tmp_path))
    assert bigbench_root(None, "from/file") == tmp_path
    assert bigbench_root("given", "from/file") == Path("given")


def test_registered_and_metaicl_tasks_are_entries_too(tmp_path):
    fixtures = REPO / "tests" / "fixtures" / "metaicl"
    refs = resolve({"task": "metaicl:tiny_sst", "data": str(fixtures)}, tmp_path, "here")
    assert refs[0].task == "metaicl:tiny_sst" and len(refs[0].load().records("train")) > 0
    (file,) = resolve(str(fixtures / "tiny_sst_16_100_train.jsonl"), tmp_path, "here")
    assert file.task == "metaicl" and len(file.load().records("test")) > 0
    assert resolve("rte", tmp_path, "here")[0].data is None  # a registered name alone reads the hub


def test_per_task_sizes_are_256_512_or_all_of_a_small_task_cut_1_to_2(root, tmp_path):
    path = split_file(tmp_path, "meta_train:\n  - bigbench:a\n  - bigbench:b\nmeta_test:\n  - bigbench:g\n")
    data = {d.name: d for d in meta_train_data(read_split(path, root=root), seed=3)}
    assert (len(data["b"].upper), len(data["b"].lower)) == (256, 512)
    assert (len(data["a"].upper), len(data["a"].lower)) == (10, 20)
    assert not {e.prompt for e in data["b"].upper} & {e.prompt for e in data["b"].lower}
    write_task(root / "tiny", 2)
    tiny = split_file(tmp_path, "meta_train:\n  - bigbench:tiny\nmeta_test:\n  - bigbench:a\n")
    with pytest.raises(ZofoError, match=r"split.yaml:2: task tiny has 2 examples, too few for an upper and a lower"):
        meta_train_data(read_split(tiny, root=root))


def held_out_by_rule(root: Path, target: int = 15) -> set[str]:
    """docs/META.md's rule: families in the order of SHA-256(name), each held out if it fits within `target`."""
    names = (p.name for p in root.iterdir() if p.is_dir())
    families = sorted(names, key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    held, count = set(), 0
    for family in families:
        size = len(bigbench_folders(root / family))
        if count + size <= target:
            held, count = held | {family}, count + size
        if count == target:
            break
    return held


def test_the_default_split_follows_its_rule_and_every_task_loads(shared_data):
    root = shared_data / "bigbench"
    split = read_split(DEFAULT_SPLIT, root=root)  # loads every task of both lists
    train, test = split.meta_train, split.meta_test
    assert (len(train), len(test)) == (67, 15)
    assert len(bigbench_folders(root)) == 82 and not {r.key for r in train} & {r.key for r in test}
    family = {r.name: r.name.split("/")[0] for r in train + test}
    assert not {family[r.name] for r in train} & {family[r.name] for r in test}  # no sibling leaks
    assert {family[r.name] for r in test} == held_out_by_rule(root)
    assert all(len(split.task(r).records("train")) >= 100 for r in train + test)


def test_a_split_file_that_is_not_utf8_names_its_line(tmp_path):
    split = tmp_path / "split.yaml"
    split.write_bytes(b"meta_train:\n  - a\nmeta_test:\n  - b  # \xff\n")
    with pytest.raises(ZofoError, match=rf"^{split}:4: not UTF-8 text"):
        read_split(split)
