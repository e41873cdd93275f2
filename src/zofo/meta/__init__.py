"""Meta-learning over many tasks: task pools and split files, per-task PEFT blocks kept off the device, and
meta-testing of a backbone on held-out tasks. Above `run/` (it runs ordinary runs), below `api`.

    split = read_split("configs/meta/bigbench_split.yaml")           # refuses a bad split with file:line
    data = meta_train_data(split)                                    # per task: 256 upper / 512 lower examples
    blocks = TaskBlocks(tasks, adapter_params, optimizers)           # swap_in(task) / swap_out(task)
    result = meta_train(MetaTrainConfig(split="configs/meta/bigbench_split.yaml", out="runs/meta"))  # Bilevel ZOFO
    report = meta_test(split.meta_test, "smollm2-135m", MetaTestProtocol(), Path("runs/meta-test"))

docs/META.md states the default split's rule and the meta-test protocol.

Its names load on first use (torch with them), so that the command line reads the meta-test protocol's defaults
without torch.
"""

from typing import TYPE_CHECKING

from zofo.lazy import lazy_names

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use
    from zofo.meta.blocks import TaskBlocks
    from zofo.meta.metarun import meta_train
    from zofo.meta.metatest import meta_test
    from zofo.meta.options import MetaTrainConfig
    from zofo.meta.pool import TaskRef, bigbench_root, resolve
    from zofo.meta.protocol import MetaTestProtocol
    from zofo.meta.split import Split, TaskData, meta_train_data, read_split
    from zofo.meta.units import MetaTestInterrupted

_WHERE = {"TaskBlocks": "blocks", "MetaTrainConfig": "options", "meta_train": "metarun", "meta_test": "metatest",
          "TaskRef": "pool", "bigbench_root": "pool", "resolve": "pool", "MetaTestProtocol": "protocol",
          "Split": "split", "TaskData": "split", "meta_train_data": "split", "read_split": "split",
          "MetaTestInterrupted": "units"}
__all__ = ["MetaTestInterrupted", "MetaTestProtocol", "MetaTrainConfig", "Split", "TaskBlocks", "TaskData",
           "TaskRef", "bigbench_root", "meta_test", "meta_train", "meta_train_data", "read_split", "resolve"]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
