"""Zeroth-order engine: seeded directions, exact probing, SPSA estimators, update rules.

A ZO optimiser is a sentence of four small pieces (MeZO = gaussian x two-sided x ZOSGD x constant)::

    from zofo import zo

    params = dict(model.named_parameters())                 # theta: name -> Parameter
    rule, state, lr_at = zo.ZOSGD(), None, zo.constant(1e-6)
    state = rule.init(params)
    for step in range(steps):
        seeds = [zo.step_seed(run_seed, step, i) for i in range(q)]     # log these
        est = zo.estimate(lambda: loss(model, batch), model, params, seeds, eps=1e-3)
        if est.skipped: log(...)                                         # non-finite loss
        state = rule.apply(params, est, lr_at(step), state)

Everything random is a pure function of (seed, tensor name, element index) -- see ``directions`` --
so a run is replayable from its seeds and projected gradients, on any device and any sharding.
On CUDA, ``GraphedProbes`` replays a probe as one CUDA graph per input shape (``probe_estimate`` takes it
in place of ``estimate``'s loss function). For bf16/fp16 weights the update rules move along the direction
the probes realised (``Probed``), and ``chain`` merges several steps' estimates into one update (one
stochastic rounding for all of them: ``update_every`` in the methods).  Only torch is imported here;
Triton kernels load lazily on CUDA.
"""

from .directions import (
    DIRECTIONS,
    Direction,
    direction_like,
    direction_slice,
    philox_seed,
    rounding_bits,
    step_seed,
    tensor_key,
)
from .estimators import (
    AnyEstimate,
    DeviceEstimate,
    ZOEstimate,
    accumulate,
    chain,
    estimate,
    probe_estimate,
    queue_probes,
)
from .graphs import GraphedProbes
from .kernels.ops import (
    Backend,
    Probed,
    combination,
    perturbed_copy,
    probed_direction,
    round_to,
    sgd_update_,
    triton_available,
)
from .perturb import Probe, perturbed, perturbed_loss
from .rounding import stochastic_round
from .schedules import Schedule, constant, cosine, linear
from .trajectory import Trajectory, as_record, from_record, replay
from .updates import ZOSGD, UpdateState, ZOAdam, ZOMomentum, ZOUpdate

__all__ = [
    "DIRECTIONS",
    "Backend",
    "GraphedProbes",
    "Direction",
    "Probe",
    "Probed",
    "Schedule",
    "Trajectory",
    "UpdateState",
    "ZOAdam",
    "AnyEstimate",
    "DeviceEstimate",
    "ZOEstimate",
    "ZOMomentum",
    "ZOSGD",
    "ZOUpdate",
    "accumulate",
    "as_record",
    "chain",
    "combination",
    "constant",
    "cosine",
    "direction_like",
    "direction_slice",
    "estimate",
    "from_record",
    "linear",
    "perturbed",
    "perturbed_loss",
    "perturbed_copy",
    "philox_seed",
    "probe_estimate",
    "queue_probes",
    "replay",
    "probed_direction",
    "round_to",
    "rounding_bits",
    "sgd_update_",
    "step_seed",
    "stochastic_round",
    "tensor_key",
    "triton_available",
]
