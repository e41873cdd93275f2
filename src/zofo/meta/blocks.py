"""Per-task PEFT blocks for meta-training: every task's adapter values (z_i, p_i) and optimizer states, kept off
the accelerator until the task is sampled.

The model holds one set of adapter parameters (e.g. the named peft adapters `z` and `p` of one PeftModel) and
each optimizer one state for them: the active task's. `TaskBlocks` keeps, for every task, a copy of both in host
memory (pinned when CUDA is present, so that copies in and out run at full speed), stacked per tensor as
[n_tasks, *shape] so that 50-200 tasks cost a few large allocations, not thousands of small ones:

    blocks = TaskBlocks(tasks, groups.adapter("z") | groups.adapter("p"), [adam_z, adam_p])
    blocks.swap_in("sst2")       # the task's values and optimizer states into the device tensors, in place
    ...                          # K lower steps, the p step
    blocks.swap_out("sst2")      # back to host memory

Device memory therefore does not grow with the number of tasks. Copies are made into the tensors the model and
optimizers already hold, never by replacing them, so that CUDA graphs captured on them stay valid.

A task's block starts from `initial` (default: the adapters' values when the store is made; LoRA's B is zero,
so every task starts as the plain backbone) and from the optimizer's fresh state: every state tensor zero, which
is Adam's state before its first step (moments and step count zero), exactly as torch creates it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from zofo.errors import ZofoError
from zofo.fo.graphed import init_optimizer_state


def host_empty(like: Tensor, n: int) -> Tensor:
    """A host tensor [n, *like.shape] of like's dtype, pinned when CUDA is present."""
    return torch.empty((n, *like.shape), dtype=like.dtype, device="cpu", pin_memory=torch.cuda.is_available())


class TaskBlocks:
    """Host copies of every task's adapter parameters and optimizer states; one task at a time on the device."""

    def __init__(self, tasks: Sequence[str], params: Mapping[str, nn.Parameter],
                 optimizers: Sequence[torch.optim.Optimizer] = (), initial: Mapping[str, Tensor] | None = None):
        if len(set(tasks)) != len(tasks) or not tasks:
            raise ZofoError("TaskBlocks needs a non-empty list of distinct task names", "check the task pool")
        self.tasks = list(tasks)
        self.index = {task: i for i, task in enumerate(self.tasks)}
        self.params = dict(params)
        self.optimizers = list(optimizers)
        self.values = {name: host_empty(p, len(tasks)) for name, p in self.params.items()}
        start = initial if initial is not None else {n: p.detach() for n, p in self.params.items()}
        for name, stack in self.values.items():
            stack.copy_(start[name].detach().cpu().expand_as(stack))
        self.states: dict[str, dict[str, Tensor]] = {}  # param name -> state key -> host stack, made when first seen
        self.started = torch.zeros(len(tasks), dtype=torch.bool)  # whether a task's optimizer state was stored
        self.active: str | None = None

    def _owned(self) -> list[tuple[str, nn.Parameter, torch.optim.Optimizer]]:
        """(name, parameter, its optimizer) for every stored parameter that an optimizer steps."""
        owner = {id(p): opt for opt in self.optimizers for group in opt.param_groups for p in group["params"]}
        return [(name, p, owner[id(p)]) for name, p in self.params.items() if id(p) in owner]

    def _at(self, task: str) -> int:
        if task not in self.index:
            raise ZofoError(f"no PEFT block for task {task!r}", f"known tasks: {', '.join(self.tasks[:10])}, ...")
        return self.index[task]

    @torch.no_grad()
    def swap_in(self, task: str) -> None:
        """Make `task` the active one: its adapter values and optimizer states into the device tensors."""
        if self.active is not None:
            raise ZofoError(f"task {self.active!r} is still swapped in", "swap_out it before swapping in another")
        i = self._at(task)
        for name, param in self.params.items():
            param.copy_(self.values[name][i], non_blocking=True)
        owned = self._owned()
        if self.started[i]:  # the optimizers' own state tensors must exist to be copied into
            for optimizer in {id(opt): opt for _, _, opt in owned}.values():
                init_optimizer_state(optimizer)
        for name, param, optimizer in owned:
            stored = self.states.get(name, {})  # a state no task has stored yet (p's, before any p step) is fresh
            for key, value in optimizer.state.get(param, {}).items():  # .get: never an empty entry
                if not isinstance(value, Tensor):
                    continue
                if self.started[i] and key in stored:  # (a row this task never stored is zero: fresh too)
                    value.copy_(stored[key][i], non_blocking=True)
                else:  # fresh: what torch creates before the first step (moments and step count zero)
                    value.zero_()
        self.active = task

    @torch.no_grad()
    def load_values(self, task: str) -> None:
        """Copy the task's adapter values (not its optimizer states) into the model's adapter tensors, for a
        forward pass only: meta-training's ZO probes evaluate every sampled task's terms in one perturbation.
        Refused while a task is swapped in (its trained values would be overwritten before being stored)."""
        if self.active is not None:
            raise ZofoError(f"task {self.active!r} is swapped in", "swap it out before loading another's values")
        i = self._at(task)
        for name, param in self.params.items():
            param.copy_(self.values[name][i], non_blocking=True)

    @torch.no_grad()
    def swap_out(self, task: str) -> None:
        """Store the active task's adapter values and optimizer states back in host memory."""
        if self.active != task:
            raise ZofoError(f"task {task!r} is not the one swapped in ({self.active!r})", "swap out the active task")
        i = self._at(task)
        for name, param in self.params.items():
            self.values[name][i].copy_(param)
        stored = False
        for name, param, optimizer in self._owned():
            for key, value in optimizer.state.get(param, {}).items():  # .get: never an empty entry
                if isinstance(value, Tensor):
                    self._stack(name, key, value)[i].copy_(value)
                    stored = True
        self.started[i] = stored or bool(self.started[i])
        self.active = None

    def _stack(self, name: str, key: str, like: Tensor) -> Tensor:
        """The host stack of one optimizer-state tensor, made the first time the state is seen."""
        stacks = self.states.setdefault(name, {})
        if key not in stacks:
            stacks[key] = host_empty(like, len(self.tasks)).zero_()
        return stacks[key]

    def host_bytes(self) -> int:
        """Bytes of host memory the stored blocks take."""
        stacks = [*self.values.values(), *(s for by_key in self.states.values() for s in by_key.values())]
        return sum(s.numel() * s.element_size() for s in stacks)

    def state_dict(self) -> dict:
        """Every task's block, for a checkpoint (host tensors; the active task must be swapped out first)."""
        if self.active is not None:
            raise ZofoError(f"task {self.active!r} is swapped in", "swap it out before saving the blocks")
        return {"tasks": list(self.tasks), "values": dict(self.values), "started": self.started.clone(),
                "states": {name: dict(by_key) for name, by_key in self.states.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore the blocks saved by `state_dict` (same tasks and parameters), bit for bit."""
        if list(state["tasks"]) != self.tasks or set(state["values"]) != set(self.values):
            raise ZofoError("the saved PEFT blocks are of other tasks or other adapter parameters",
                            "resume with the run's own task pool and PEFT settings")
        for name, stack in self.values.items():
            stack.copy_(state["values"][name])
        self.started.copy_(state["started"])
        for name, by_key in state["states"].items():
            for key, saved in by_key.items():
                self._stack(name, key, saved[0]).copy_(saved)
        self.active = None
