"""Exact probing: evaluate the model at theta + s*u without ever modifying theta.

In-place "add eps*u, subtract 2 eps*u, add eps*u" is not reversible in bf16 (every add rounds), so
each probe would random-walk the weights.  Here probed parameters are grouped by the nearest ancestor
of their owner that is an element of an ``nn.ModuleList`` (a decoder layer), else by their owner; a
forward pre-hook on that module swaps every ``param.data`` of the group for theta + s*u, generated in
ONE launch into one flat buffer (``ops.perturbed_copies``: a probe of a 30-layer model is ~32 launches,
not ~270), and a forward hook swaps the original storages back; theta changes only in the real update.
Extra memory: the perturbed copy of one layer at a time.  A tied weight (lm_head sharing the embedding)
is perturbed once per forward, by the first of its owners to run, and keeps its copy until every one of its
owners has run: the others read the same values (u depends on the name and seed only); where an owner never
runs (a loss that applies the tied head by hand), the copy stays to the block's end.  The copy is gone
before the loss is computed, where a forward's peak usually is; kept to the block's end it had raised the
OPT-1.3B probe's peak by 4% (benchmarks/results/gpu-2026-12-01/zo-step-run25).

A backbone sharded by FSDP2 (`fully_shard`) is probed the same way: its pre-forward hook, registered before ours,
all-gathers a layer and registers the whole (unsharded) parameter on the module, so the hook swaps the data of the
parameter the module holds when it runs (``_Swap.where``), not of the sharded one in ``params``, and perturbs it
with offset 0: every rank evaluates exactly the theta + s*u of an unsharded run (the perturbation work is not
divided among the ranks; the update, `updates.ZOSGD`, is: each rank moves its own rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .directions import Direction, check_direction, tensor_key
from .kernels.ops import Backend, device_scalar, perturbed_copies, use_triton


@dataclass
class Probe:
    """What a ``perturbed`` block did: names of parameters that were perturbed at least once."""

    touched: set[str] = field(default_factory=set)


@dataclass
class _Swap:
    name: str
    key: int
    param: nn.Parameter
    where: tuple[nn.Module, str] | None = None  # a module that holds it and its attribute name there
    live: nn.Parameter | None = None  # the parameter that module held when the copy was made (swapped)
    original: Tensor | None = None
    depth: int = 0
    owners: int = 1  # hooked modules that read it (2: a tied weight); its copy is kept until all have run
    ran: set[int] = field(default_factory=set)  # ids of the owners that have run since its copy was made


def _anchors(model: nn.Module) -> set[str]:
    """Names of the modules that are elements of some ``nn.ModuleList`` (decoder layers)."""
    return {
        f"{name}.{k}" if name else k
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList)
        for k in m._modules
    }


def _anchor(name: str, anchors: set[str]) -> str:
    """The nearest ancestor of module ``name`` (itself included) in ``anchors``, else ``name``."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in anchors:
            return ".".join(parts[:i])
    return name


def _owners(model: nn.Module, swaps: dict[int, _Swap]) -> list[tuple[nn.Module, list[_Swap]]]:
    """Hooked modules, each with the swaps of its group (tied weights: in several groups)."""
    anchors, modules = _anchors(model), dict(model.named_modules())
    groups: dict[str, list[_Swap]] = {}
    for name, module in modules.items():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in swaps:
                swaps[id(p)].where = swaps[id(p)].where or (module, attr)
                group = groups.setdefault(_anchor(name, anchors), [])
                if all(s is not swaps[id(p)] for s in group):
                    group.append(swaps[id(p)])
    seen = {id(s.param) for g in groups.values() for s in g}
    missing = [s.name for i, s in swaps.items() if i not in seen]
    if missing:
        raise ValueError(f"parameters not owned by any module of the model: {missing[:5]}")
    return [(modules[name], group) for name, group in groups.items()]


class _Hooks:
    """Pre-hook: data <- theta + s*u (outermost entry only); post-hook: restore."""

    def __init__(
        self, seed: int | Tensor, scale: float | Tensor, direction: Direction, backend: Backend, probe: Probe
    ) -> None:
        self.seed, self.scale, self.direction, self.backend, self.probe = (
            seed,
            scale,
            direction,
            backend,
            probe,
        )
        self._scalars: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _values(self, t: Tensor) -> tuple[int | Tensor, float | Tensor]:
        if not use_triton(t, self.backend) or isinstance(self.seed, Tensor):
            return self.seed, self.scale
        if t.device not in self._scalars:  # one host->device copy per probe and device, not per tensor
            self._scalars[t.device] = (
                device_scalar(self.seed, torch.int64, t.device),
                device_scalar(self.scale, torch.float32, t.device),
            )
        return self._scalars[t.device]

    def enter(self, swaps: list[_Swap]) -> None:
        fresh = [s for s in swaps if s.original is None]
        for s in swaps:
            s.depth += 1
        if not fresh:
            return
        for s in fresh:  # the parameter as its module holds it now (FSDP2: the whole one, just gathered)
            s.live = s.where[0]._parameters[s.where[1]] if s.where else s.param
        seed, scale = self._values(fresh[0].live.data)
        with torch.no_grad():
            copies = perturbed_copies(
                [s.live.data for s in fresh],
                [s.key for s in fresh],
                seed,
                scale,
                self.direction,
                self.backend,
            )
        for s, c in zip(fresh, copies, strict=True):
            s.original, s.live.data = s.live.data, c
            self.probe.touched.add(s.name)

    @staticmethod
    def leave(swaps: list[_Swap], owner: nn.Module) -> None:
        """``owner`` has run: restore the swaps whose every owner has run since their copy was made (an owner
        that never runs, e.g. an lm_head whose weight the loss reads directly, keeps the copy to the block's
        end, so every read in the block sees theta + s*u)."""
        for s in swaps:
            s.depth -= 1
            if s.depth == 0:
                s.ran.add(id(owner))
                if s.original is not None and len(s.ran) >= s.owners:
                    s.live.data, s.original = s.original, None
                    s.ran.clear()


@contextmanager
def perturbed(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
    strict: bool = False,
) -> Iterator[Probe]:
    """Within the block, ``model``'s forward computes at theta + scale*u(seed) for ``params``.

    theta = the tensors in ``params`` (name -> parameter of ``model``; the name keys u).  Nothing is
    modified: on exit (also on error) every parameter holds its original storage, bit-identical.
    ``seed``/``scale`` may be one-element device tensors (int64 / float32) so that the block can be
    captured in a CUDA graph and replayed with new values.  ``strict``: raise if some parameter was
    never used (e.g. read outside its owner's ``forward``, where it would be seen unperturbed).
    """
    check_direction(direction)
    swaps = {id(p): _Swap(name, tensor_key(name), p) for name, p in params.items()}
    probe = Probe()
    hooks = _Hooks(seed, scale, direction, backend, probe)
    handles = []
    try:
        owners = _owners(model, swaps)
        uses = Counter(id(s) for _, owned in owners for s in owned)
        for s in swaps.values():
            s.owners = uses[id(s)]
        for module, owned in owners:
            handles.append(module.register_forward_pre_hook(lambda m, a, o=owned: hooks.enter(o)))
            handles.append(
                module.register_forward_hook(lambda m, a, out, o=owned: hooks.leave(o, m), always_call=True)
            )
        yield probe
    finally:
        for h in handles:
            h.remove()
        for s in swaps.values():
            if s.original is not None:
                s.live.data, s.original, s.depth = s.original, None, 0
    if strict and len(probe.touched) < len(swaps):
        unused = sorted(set(params) - probe.touched)
        raise RuntimeError(f"perturbed: parameters never perturbed during the block: {unused[:5]}")


def perturbed_loss(
    loss_fn: Callable[[], Tensor],
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
) -> Tensor:
    """``loss_fn()`` at theta + scale*u(seed) for ``params``; scale 0 evaluates at theta itself (no hooks)."""
    if not isinstance(scale, Tensor) and scale == 0:
        return loss_fn()
    with perturbed(model, params, seed, scale, direction, backend):
        return loss_fn()
