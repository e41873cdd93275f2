"""ZO-SignSGD on the backbone (Liu et al., 2019, "signSGD via zeroth-order oracle"): MeZO's step with each
projected gradient replaced by its sign.

    c_i    <- (L(theta + eps u_i) - L(theta - eps u_i)) / (2 eps)      (u_i regenerated from the seeds)
    theta  <- theta - lr * (1/q) sum_i sign(c_i) u_i

The step no longer scales with c, whose distribution has a heavy tail (a probe pair that straddles a sharp
feature of the loss gives a huge c), only with the learning rate: robust to the loss's scale, at the price of
ignoring how large the slope is. The seed trajectory records sign(c_i) as the coefficient it applied, so
`zofo replay` rebuilds the backbone as it does for MeZO.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from zofo.methods.mezo import ZerothOrder
from zofo.registry import METHODS
from zofo.zo.estimators import AnyEstimate, DeviceEstimate
from zofo.zo.optimizer import ZOOptimizer


def signed(estimate: AnyEstimate) -> AnyEstimate:
    """The estimate with every projected gradient c_i replaced by sign(c_i) (0 stays 0: a skipped step)."""
    if isinstance(estimate, DeviceEstimate):
        return replace(estimate, grads=torch.sign(estimate.projected_grads))
    return replace(estimate, projected_grads=[math.copysign(1.0, c) if c else 0.0 for c in estimate.projected_grads])


class SignZO(ZOOptimizer):
    """The ZO optimizer whose update follows sign(c) instead of c."""

    def apply(self, estimate: AnyEstimate, step: int) -> dict:
        return super().apply(signed(estimate), step)


@METHODS.register("zo-sign")
class ZOSign(ZerothOrder):
    """ZO-SignSGD on every backbone weight."""

    trains_backbone = True
    Optimizer = SignZO
