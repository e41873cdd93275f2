"""Exact probing: evaluate the model at theta + s*u without ever modifying theta.

In-place "add eps*u, subtract 2 eps*u, add eps*u" is not reversible in bf16 (every add rounds), so
each probe would random-walk the weights.  Here probed parameters are grouped by the nearest ancestor
of their owner that is an element of an ``nn.ModuleList`` (a decoder layer), else by their owner; a
forward pre-hook on that module swaps every ``param.data`` of the group for theta + s*u, generated in
ONE launch into one flat buffer (``ops.perturbed_copies``: a probe of a 30-layer model is ~32 launches,
not ~270), and a forward hook swaps the original storages back; theta changes only in the real update.
Tied weights (lm_head sharing the embedding) are perturbed by each owner's hooks with the same u (u
depends on the name and seed only).

Prefetch: the order in which a model's groups run is learned from its previous forward (per model and set
of groups).  While group l computes, group l+1's copy is generated on a second CUDA stream, so the
perturbation overlaps the matrix products instead of preceding each layer.  A forward that leaves the
learned order just stops prefetching.  Extra memory: the perturbed copies of two consecutive groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from .directions import Direction, check_direction, tensor_key
from .ops import Backend, device_scalar, perturbed_copies, use_triton
from .streams import side_stream

# model -> {its hooked groups: the order in which its last forward entered them}
_ORDERS: WeakKeyDictionary[nn.Module, dict[tuple[str, ...], list[str]]] = WeakKeyDictionary()


@dataclass
class Probe:
    """What a ``perturbed`` block did: names of parameters that were perturbed at least once."""

    touched: set[str] = field(default_factory=set)


@dataclass
class _Swap:
    name: str
    key: int
    param: nn.Parameter
    original: Tensor | None = None
    depth: int = 0

    @property
    def theta(self) -> Tensor:
        """The unperturbed tensor, whether or not it is swapped out now."""
        return self.original if self.original is not None else self.param.data


@dataclass
class _Ahead:
    """A group's perturbed copies made in advance, and the side-stream event that says they are written."""

    swaps: list[_Swap]
    copies: list[Tensor]
    ready: torch.cuda.Event | None


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


def _owners(model: nn.Module, swaps: dict[int, _Swap]) -> dict[str, tuple[nn.Module, list[_Swap]]]:
    """Hooked modules by name, each with the swaps of its group (tied weights: in several groups)."""
    anchors, modules = _anchors(model), dict(model.named_modules())
    groups: dict[str, list[_Swap]] = {}
    for name, module in modules.items():
        for p in module._parameters.values():
            if p is not None and id(p) in swaps:
                group = groups.setdefault(_anchor(name, anchors), [])
                if all(s is not swaps[id(p)] for s in group):
                    group.append(swaps[id(p)])
    seen = {id(s.param) for g in groups.values() for s in g}
    missing = [s.name for i, s in swaps.items() if i not in seen]
    if missing:
        raise ValueError(f"parameters not owned by any module of the model: {missing[:5]}")
    return {name: (modules[name], group) for name, group in groups.items()}


class _Hooks:
    """Pre-hook: data <- theta + s*u (outermost entry only), then start the next group's copy; post-hook:
    restore.  ``order``: the groups' names in the order the forward is expected to enter them (None: no
    prefetch); ``side``: the stream prefetched copies are generated on (None: at once, on this one)."""

    def __init__(self, seed: int | Tensor, scale: float | Tensor, direction: Direction, backend: Backend,
                 probe: Probe, groups: dict[str, list[_Swap]], order: list[str] | None,
                 side: torch.cuda.Stream | None) -> None:
        self.seed, self.scale, self.direction, self.backend, self.probe = seed, scale, direction, backend, probe
        self.groups, self.order, self.side = groups, order, side
        self.entered: list[str] = []
        self.ahead: dict[str, _Ahead] = {}
        self.on_track = order is not None
        self.used_side = False
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

    def _copies(self, swaps: list[_Swap], side: torch.cuda.Stream | None = None) -> list[Tensor]:
        seed, scale = self._values(swaps[0].theta)
        with torch.no_grad():
            return perturbed_copies([s.theta for s in swaps], [s.key for s in swaps], seed, scale,
                                    self.direction, self.backend, side)

    def enter(self, name: str, swaps: list[_Swap]) -> None:
        k = len(self.entered)
        self.entered.append(name)
        self.on_track = self.on_track and k < len(self.order) and self.order[k] == name
        fresh = [s for s in swaps if s.depth == 0]
        for s in swaps:
            s.depth += 1
        if fresh:
            copies = self._prefetched(name, fresh) or self._copies(fresh)
            for s, c in zip(fresh, copies, strict=True):
                s.original, s.param.data = s.param.data, c
                self.probe.touched.add(s.name)
        if self.on_track and k + 1 < len(self.order):
            self._prefetch(self.order[k + 1])

    @staticmethod
    def leave(swaps: list[_Swap]) -> None:
        for s in swaps:
            s.depth -= 1
            if s.depth == 0 and s.original is not None:
                s.param.data, s.original = s.original, None

    def _prefetch(self, name: str) -> None:
        """Start generating group ``name``'s copies (on the side stream, while the current group computes)."""
        if name in self.ahead or name not in self.groups:
            return
        swaps = self.groups[name]
        copies = self._copies(swaps, self.side)
        ready = None
        if self.side is not None:
            ready, self.used_side = torch.cuda.Event(), True
            ready.record(self.side)
        self.ahead[name] = _Ahead(swaps, copies, ready)

    def _prefetched(self, name: str, fresh: list[_Swap]) -> list[Tensor] | None:
        ahead = self.ahead.pop(name, None)
        if ahead is None:
            return None
        if ahead.ready is not None:
            torch.cuda.current_stream(self.side.device).wait_event(ahead.ready)
        by_swap = {id(s): c for s, c in zip(ahead.swaps, ahead.copies, strict=True)}
        return [by_swap[id(s)] for s in fresh]

    def finish(self) -> None:
        """Drop unused copies; the current stream waits for the side stream (a CUDA graph must rejoin it)."""
        if self.used_side:
            torch.cuda.current_stream(self.side.device).wait_stream(self.side)
        self.ahead.clear()


@contextmanager
def perturbed(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
    strict: bool = False,
    prefetch: bool = True,
) -> Iterator[Probe]:
    """Within the block, ``model``'s forward computes at theta + scale*u(seed) for ``params``.

    theta = the tensors in ``params`` (name -> parameter of ``model``; the name keys u).  Nothing is
    modified: on exit (also on error) every parameter holds its original storage, bit-identical.
    ``seed``/``scale`` may be one-element device tensors (int64 / float32) so that the block can be
    captured in a CUDA graph and replayed with new values.  ``strict``: raise if some parameter was
    never used (e.g. read outside its owner's ``forward``, where it would be seen unperturbed).
    ``prefetch``: make each group's copy while the previous group computes (module docstring); same values.
    """
    check_direction(direction)
    swaps = {id(p): _Swap(name, tensor_key(name), p) for name, p in params.items()}
    owners = _owners(model, swaps)
    groups = {name: owned for name, (_, owned) in owners.items()}
    learned = _ORDERS.setdefault(model, {})
    order = learned.get(tuple(owners)) if prefetch else None
    probe = Probe()
    hooks = _Hooks(seed, scale, direction, backend, probe, groups, order, _side_of(swaps))
    handles = []
    try:
        for name, (module, owned) in owners.items():
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name, o=owned: hooks.enter(n, o)))
            handles.append(
                module.register_forward_hook(lambda m, a, out, o=owned: hooks.leave(o), always_call=True)
            )
        yield probe
        if hooks.entered:
            learned[tuple(owners)] = hooks.entered
    finally:
        for h in handles:
            h.remove()
        hooks.finish()
        for s in swaps.values():
            if s.original is not None:
                s.param.data, s.original, s.depth = s.original, None, 0
    if strict and len(probe.touched) < len(swaps):
        unused = sorted(set(params) - probe.touched)
        raise RuntimeError(f"perturbed: parameters never perturbed during the block: {unused[:5]}")


def _side_of(swaps: dict[int, _Swap]) -> torch.cuda.Stream | None:
    """The side stream of the parameters' device (None off CUDA or for parameters on several devices)."""
    devices = {s.param.device for s in swaps.values()}
    return side_stream(devices.pop()) if len(devices) == 1 else None


def perturbed_loss(
    loss_fn: Callable[[], Tensor],
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    seed: int | Tensor,
    scale: float | Tensor,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
    prefetch: bool = True,
) -> Tensor:
    """``loss_fn()`` at theta + scale*u(seed) for ``params``; scale 0 evaluates at theta itself (no hooks)."""
    if not isinstance(scale, Tensor) and scale == 0:
        return loss_fn()
    with perturbed(model, params, seed, scale, direction, backend, prefetch=prefetch):
        return loss_fn()
