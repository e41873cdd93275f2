"""A task = raw records in canonical fields + named prompt templates that turn them into Examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zofo.errors import ZofoError
from zofo.registry import Registry
from zofo.tasks.example import Example, Record

Render = Callable[[Record], Example]
Pools = dict[str, list[Record]]
"""Raw splits by role: "train" (sample train/dev from it), "test" (held out), optionally "dev"."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its templates (the first is the default), how to read local data, a hub id.

    `read(path)` turns a local file or folder in the dataset's official format into Pools of
    canonical records; `hub` reads the same from the Hugging Face hub when no path is given.
    """

    name: str
    templates: dict[str, Render]
    read: Callable[[Path], Pools]
    generative: bool = False
    hub: Callable[[], Pools] | None = None
    protocol: str = ""
    metrics: tuple[str, ...] = ()  # reported besides the default ones (accuracy; f1 / exact_match), e.g. macro_f1
    metric: str = ""               # the dev metric that picks the best checkpoint ("": accuracy, or f1)


TASKS: Registry[TaskSpec] = Registry("task")


@dataclass
class Task:
    """A loaded task: raw pools plus the chosen template. `examples(split)` renders a pool."""

    name: str
    generative: bool
    template: str
    render: Render
    pools: Pools
    protocol: str = ""
    templates: tuple[str, ...] = field(default=())
    metrics: tuple[str, ...] = ()
    preferred: str = ""

    @property
    def metric(self) -> str:
        """The dev metric that picks the best checkpoint: the task's preferred one, else f1 or accuracy."""
        return self.preferred or ("f1" if self.generative else "accuracy")

    @property
    def splits(self) -> list[str]:
        """Names of the raw pools this task has (non-empty only)."""
        return [name for name, records in self.pools.items() if records]

    def records(self, split: str) -> list[Record]:
        """The raw records of one pool ("train", "dev" or "test"); [] for a pool the data lacks."""
        if split not in ("train", "dev", "test"):
            raise ZofoError(f"unknown split {split!r}", "choose train, dev or test")
        return self.pools.get(split, [])

    def examples(self, split: str) -> list[Example]:
        """Render every record of one pool with the task's template."""
        return [self.render(record) for record in self.records(split)]


def build_task(spec: TaskSpec, pools: Pools, template: str | None = None) -> Task:
    """Bind pools to a template chosen by name (default: the spec's first)."""
    name = template or next(iter(spec.templates))
    if name not in spec.templates:
        raise ZofoError(f"task {spec.name!r} has no template {name!r}",
                        f"choose one of: {', '.join(spec.templates)}")
    return Task(spec.name, spec.generative, name, spec.templates[name], pools, spec.protocol,
                tuple(spec.templates), spec.metrics, spec.metric)
