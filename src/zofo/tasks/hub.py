"""Hugging Face hub datasets as a source; `datasets` is imported only when a hub id is actually used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zofo.errors import ZofoError
from zofo.tasks.example import Record

Normalize = Callable[[dict[str, Any], str], list[Record]]
HUB_SPLITS = {"train": "train", "test": "validation"}


def load_rows(hub_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """Rows of one split of a hub dataset (needs the network or a populated HF cache)."""
    try:
        import datasets
    except ImportError:
        raise ZofoError("loading from the hub needs the `datasets` package",
                        "pip install 'zofo[hub]', or give --data with a local copy") from None
    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as err:  # network, missing config, ...: one line for the user
        raise ZofoError(f"cannot load {hub_id} ({config}) split {split} from the hub: {err}".splitlines()[0],
                        "check the network, or give --data with a local copy") from None


def hub_reader(hub_id: str, config: str | None, normalize: Normalize,
               splits: dict[str, str] = HUB_SPLITS) -> Callable[[], dict[str, list[Record]]]:
    """A pools loader: hub split -> pool ("train" -> train, "validation" -> test by default).

    Rows whose label is -1 (the hub's marker for an unlabelled test row) are skipped.
    """

    def read() -> dict[str, list[Record]]:
        pools: dict[str, list[Record]] = {}
        for pool, split in splits.items():
            rows = load_rows(hub_id, config, split)
            pools[pool] = [record for i, row in enumerate(rows) if row.get("label") != -1
                           for record in normalize(row, f"{hub_id}[{split}][{i}]")]
        return pools

    return read
