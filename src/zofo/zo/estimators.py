"""SPSA estimators of the directional derivatives c_i = <grad L(theta), u_i>.

two-sided (default):  c_i = (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)   error O(eps^2)
one-sided:            c_i = (L(theta + eps u_i) - L(theta)) / eps               error O(eps), but
                      q + 1 forwards per step instead of 2q (L(theta) evaluated once per step).

With E[u u^T] = I, E[c u] = grad L + O(eps^2): sum_i c_i u_i / q is an unbiased (to O(eps^2)) estimate
of the gradient that is never materialised -- only the scalars c_i and the seeds are kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from .directions import Direction
from .kernels.ops import Backend, Probed
from .perturb import perturbed_loss


@dataclass(frozen=True)
class ZOEstimate:
    """The whole result of a ZO step's probing, enough to apply (or replay) the update.

    seeds: one per direction; projected_grads: c_i per seed; losses: the objective at each probe in
    evaluation order (two-sided: L+_1, L-_1, L+_2, ...; one-sided: L0, L+_1, ...); terms: the loss
    terms per probe when ``loss_fn`` returns a vector (objective = their sum); skipped: a loss was not
    finite, so projected_grads are zeros and updates leave theta alone; eps, two_sided: how the probes
    were taken (what an update needs to follow the directions they realised, ``probed``).
    """

    seeds: list[int]
    projected_grads: list[float]
    losses: list[float]
    direction: Direction = "gaussian"
    terms: list[list[float]] = field(default_factory=list)
    skipped: bool = False
    eps: float = 0.0
    two_sided: bool = True

    @property
    def probed(self) -> Probed | None:
        """The probes' geometry for ``ops.Probed`` updates (None when eps is unknown)."""
        return Probed(self.eps, self.two_sided) if self.eps > 0 else None

    @property
    def q(self) -> int:
        """Number of directions."""
        return len(self.seeds)

    @property
    def loss(self) -> float:
        """Mean objective over the probes (an O(eps^2) estimate of L(theta) when two-sided)."""
        return sum(self.losses) / len(self.losses) if self.losses else float("nan")


def _evaluate(loss_fn: Callable[[], Tensor]) -> Tensor:
    with torch.no_grad():
        loss = loss_fn().detach()
        return loss.to(torch.promote_types(loss.dtype, torch.float32)).reshape(-1)


def estimate(
    loss_fn: Callable[[], Tensor],
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    seeds: Sequence[int],
    eps: float,
    two_sided: bool = True,
    direction: Direction = "gaussian",
    backend: Backend = "auto",
) -> ZOEstimate:
    """Probe ``loss_fn`` at theta +- eps u(seed) for each seed; returns the projected gradients.

    ``loss_fn()`` is evaluated under the perturbation (no grad); it returns a scalar or a vector of
    loss terms (e.g. f, g_p, g_z), whose sum is the objective.  All losses are fetched with one
    device sync at the end.  A non-finite objective gives ``skipped=True`` instead of raising.
    """

    def loss_at(seed: int, scale: float) -> Tensor:
        return perturbed_loss(loss_fn, model, params, seed, scale, direction, backend)

    return probe_estimate(loss_at, seeds, eps, two_sided, direction)


def probe_estimate(
    loss_at: Callable[[int, float], Tensor],
    seeds: Sequence[int],
    eps: float,
    two_sided: bool = True,
    direction: Direction = "gaussian",
) -> ZOEstimate:
    """`estimate` over any prober: ``loss_at(seed, scale)`` is the loss at theta + scale u(seed)
    (scale 0: at theta), e.g. a `GraphedProbes` replay."""
    return queue_probes(loss_at, seeds, eps, two_sided, direction).resolve()


@dataclass(frozen=True)
class DeviceEstimate:
    """A ZO estimate not yet read back: the probes are queued on the device and their losses stay there, so an
    update can be queued behind them without the host waiting (`ZOSGD.apply` takes either kind).

    values: [probes, terms] float64, in `ZOEstimate.losses` order. `resolve()` reads them with one sync and
    returns exactly what `probe_estimate` returns; `projected_grads` computes the c_i on the device with the
    same float64 operations (zeros if a loss is not finite), equal to the resolved ones for scalar losses.
    """

    seeds: list[int]
    values: Tensor
    direction: Direction = "gaussian"
    eps: float = 0.0
    two_sided: bool = True
    grads: Tensor | None = None   # set by `chain`: c_i already combined (no longer a function of values)

    @property
    def q(self) -> int:
        return len(self.seeds)

    @property
    def probed(self) -> Probed | None:
        return Probed(self.eps, self.two_sided) if self.eps > 0 else None

    @property
    def losses(self) -> Tensor:
        """[probes] float64: each probe's objective (the sum of its terms)."""
        return self.values.sum(1)

    @property
    def finite(self) -> Tensor:
        """bool scalar on the device: every probe's loss is finite (else the step is skipped)."""
        return torch.isfinite(self.losses).all()

    @property
    def projected_grads(self) -> Tensor:
        """[q] float64 c_i, computed where the losses are; zeros when any loss is not finite."""
        if self.grads is not None:
            return self.grads
        losses = self.losses
        if self.two_sided:
            grads = (losses[0::2] - losses[1::2]) / (2 * self.eps)
        else:
            grads = (losses[1:] - losses[0]) / self.eps
        return torch.where(self.finite, grads, torch.zeros_like(grads))

    def resolve(self) -> ZOEstimate:
        """The host `ZOEstimate` (one device sync): losses summed with fsum, c_i in float64 on the host."""
        if self.grads is not None:
            raise ValueError("a chained DeviceEstimate has no per-probe form; resolve its parts before chain")
        terms = self.values.cpu().tolist()
        losses = [math.fsum(t) for t in terms]
        n = len(self.seeds)
        if self.two_sided:
            grads = [(losses[2 * i] - losses[2 * i + 1]) / (2 * self.eps) for i in range(n)]
        else:
            grads = [(losses[i + 1] - losses[0]) / self.eps for i in range(n)]
        skipped = not all(math.isfinite(v) for v in losses)
        if skipped:
            grads = [0.0] * n
        return ZOEstimate(list(self.seeds), grads, losses, self.direction, terms if len(terms[0]) > 1 else [],
                          skipped, self.eps, self.two_sided)


def queue_probes(
    loss_at: Callable[[int, float], Tensor],
    seeds: Sequence[int],
    eps: float,
    two_sided: bool = True,
    direction: Direction = "gaussian",
) -> DeviceEstimate:
    """Queue the probes of `probe_estimate` without reading anything back (no host sync)."""
    outs: list[Tensor] = [] if two_sided else [_evaluate(lambda: loss_at(seeds[0], 0.0))]
    for seed in seeds:
        for sign in (1.0, -1.0) if two_sided else (1.0,):
            outs.append(_evaluate(lambda s=seed, x=sign * eps: loss_at(s, x)))
    return DeviceEstimate(list(seeds), torch.stack([o.double() for o in outs]), direction, eps, two_sided)


AnyEstimate = ZOEstimate | DeviceEstimate


def chain(estimates: Sequence[AnyEstimate], lrs: Sequence[float]) -> tuple[AnyEstimate, float]:
    """One (estimate, lr) whose ZO-SGD update applies each estimate with its own lr, in a single pass.

    For deferred updates (all probed at the same theta): seeds are concatenated and each c rescaled so that
    lr * c' / q' = lr_e * c / q_e, with lr = sum of lrs (so weight decay is applied to first order too).
    Under a constant lr the c are unchanged.  When every lr is 0 (lr 0, or a schedule that has reached 0) the
    c are weighted as under a constant lr, so they are kept as probed, and lr = 0 makes the update a no-op
    (the shares lr_e / lr are undefined there).  Skipped host estimates must be left out by the caller (a
    skipped `DeviceEstimate`'s c are zeros already).  If any estimate is a `DeviceEstimate`, so is the result,
    with the same float64 operations done on the device (no host sync).
    """
    total, q = math.fsum(lrs), sum(e.q for e in estimates)
    shares = [lr / total for lr in lrs] if total else [1 / len(lrs)] * len(lrs)
    first = estimates[0]
    if any(e.direction != first.direction or e.probed != first.probed for e in estimates):
        raise ValueError("chain: all estimates must share direction, eps and sidedness")
    seeds = [s for e in estimates for s in e.seeds]
    on_device = [e for e in estimates if isinstance(e, DeviceEstimate)]
    if on_device:
        device = on_device[0].values.device
        parts = [torch.as_tensor(e.projected_grads, dtype=torch.float64, device=device) * share * (q / e.q)
                 for e, share in zip(estimates, shares, strict=True)]
        values = torch.cat([torch.as_tensor(e.losses, dtype=torch.float64, device=device).reshape(-1, 1)
                            for e in estimates])
        return DeviceEstimate(seeds, values, first.direction, first.eps, first.two_sided, torch.cat(parts)), total
    grads = [c * share * (q / e.q) for e, share in zip(estimates, shares, strict=True) for c in e.projected_grads]
    losses = [v for e in estimates for v in e.losses]
    return replace(first, seeds=seeds, projected_grads=grads, losses=losses, terms=[]), total


def accumulate(estimates: Sequence[ZOEstimate], scale: float = 1.0) -> ZOEstimate:
    """Gradient accumulation over batches probed with the same seeds: c_i = scale * sum_b c_{b,i}.

    Use ``scale = 1 / len(estimates)`` for the mean over batches.  Skipped if any part is skipped.
    """
    first = estimates[0]
    if any(e.seeds != first.seeds or e.direction != first.direction or e.probed != first.probed for e in estimates):
        raise ValueError("accumulate: all estimates must share seeds, direction, eps and sidedness")
    skipped = any(e.skipped for e in estimates)
    grads = (
        [0.0] * first.q
        if skipped
        else [scale * math.fsum(g) for g in zip(*(e.projected_grads for e in estimates), strict=True)]
    )
    losses = [v for e in estimates for v in e.losses]
    return replace(first, projected_grads=grads, losses=losses, terms=[], skipped=skipped)
