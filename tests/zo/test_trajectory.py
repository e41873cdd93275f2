"""Seed trajectories: replaying the recorded updates from the base weights rebuilds the trained ones, bit for bit."""

import pytest
import torch

from tests.zo.zo_models import lm_loss, tiny_llama
from zofo import zo


def train(model, batch, rule, steps, every=1, q=2):
    """A ZO loop that records its updates (deferred ones chained every `every` steps, as ZOTrainer does)."""
    params = dict(model.named_parameters())
    trajectory = zo.Trajectory(list(params), "rademacher", 1e-3, True, {"name": "sgd"})
    state, pending = rule.init(params), []
    for step in range(steps):
        seeds = [zo.step_seed(3, step, i) for i in range(q)]
        est = zo.estimate(lambda: lm_loss(model, batch), model, params, seeds, eps=1e-3, direction="rademacher")
        pending.append((est, 1e-3 * (1 + step % 3)))  # a varying lr: chain must rescale exactly
        if len(pending) == every:
            chained, lr = zo.chain([e for e, _ in pending], [lr for _, lr in pending])
            state = rule.apply(params, chained, lr, state)
            trajectory.record(chained, lr)
            pending = []
    return params, trajectory


@pytest.mark.parametrize(("dtype", "every", "rule"), [
    (torch.float32, 1, zo.ZOSGD()), (torch.bfloat16, 4, zo.ZOSGD()), (torch.float32, 1, zo.ZOAdam()),
    (torch.bfloat16, 1, zo.ZOMomentum())])
def test_replay_from_the_base_weights_is_bit_identical(tmp_path, batch, dtype, every, rule):
    trained, trajectory = train(tiny_llama(dtype), batch, rule, steps=12, every=every)
    trajectory.save(tmp_path / "trajectory.json")
    base = dict(tiny_llama(dtype).named_parameters())
    moved = sum(not torch.equal(base[n], trained[n]) for n in base)
    assert moved >= len(base) * 3 // 4  # (bf16 norm weights at 1.0 may keep every bit) not the base weights twice
    loaded = zo.Trajectory.load(tmp_path / "trajectory.json")  # through JSON: floats must round-trip exactly
    assert len(loaded.updates) == 12 // every
    zo.replay(base, loaded, type(rule)())
    assert all(torch.equal(base[n], trained[n]) for n in base)


def test_replay_refuses_other_parameters_and_a_trajectory_that_does_not_start_at_the_base(batch):
    _, trajectory = train(tiny_llama(), batch, zo.ZOSGD(), steps=2)
    other = dict(tiny_llama(layers=1).named_parameters())
    with pytest.raises(ValueError, match="the parameters differ from the trajectory's"):
        zo.replay(other, trajectory, zo.ZOSGD())
    trajectory.complete = False
    with pytest.raises(ValueError, match="does not start at the base weights"):
        zo.replay(dict(tiny_llama().named_parameters()), trajectory, zo.ZOSGD())
    data = trajectory.to_dict() | {"format": 99}
    with pytest.raises(ValueError, match="trajectory format 99"):
        zo.Trajectory.from_dict(data)


def test_a_device_estimate_is_recorded_with_the_coefficients_the_update_used():
    values = torch.tensor([[2.0], [1.0], [0.5], [0.75]], dtype=torch.float64)
    queued = zo.DeviceEstimate([7, 8], values, "rademacher", eps=0.25, two_sided=True)
    chained, lr = zo.chain([queued, queued], [1e-3, 3e-3])
    trajectory = zo.Trajectory(["w"], "rademacher", 0.25, True, {"name": "sgd"})
    trajectory.record(queued, 1e-3)
    trajectory.record(chained, lr)
    first, second = trajectory.records()
    assert first == {"seeds": [7, 8], "projected_grads": [2.0, -0.5], "lr": 1e-3}  # (2-1)/0.5, (0.5-0.75)/0.5
    assert second["seeds"] == [7, 8, 7, 8] and second["lr"] == pytest.approx(4e-3)
    assert second["projected_grads"] == chained.projected_grads.tolist()


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("every", [1, 3])
def test_updates_from_device_estimates_replay_bit_for_bit(every, device):
    """The GPU path: probes queued (`DeviceEstimate`, chained on the device when deferred; on CUDA each probe a
    graph replay) and applied without a host read; their records, read back as float64, replay through the host
    path on the same device to the same weights."""
    from tests.tiny import tiny_model

    def fresh():
        model = tiny_model("llama", vocab_size=128).to(device, torch.bfloat16)
        return model, dict(model.named_parameters())

    ids = torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0)).to(device)
    model, params = fresh()
    probes = zo.GraphedProbes(model, params, lambda inputs: model(input_ids=inputs["ids"], labels=inputs["ids"],
                                                                   use_cache=False).loss, "gaussian",
                              capture=device == "cuda")
    rule, trajectory, pending = zo.ZOSGD(), zo.Trajectory(list(params), "gaussian", 1e-3, True, {"name": "sgd"}), []
    for step in range(6):
        queued = zo.queue_probes(lambda s, x: probes({"ids": ids}, s, x), [zo.step_seed(1, step)], 1e-3, True,
                                 "gaussian")
        pending.append((queued, 1e-3 * (step + 1)))
        if len(pending) == every:  # as ZOTrainer: a single step's estimate as it is, several chained
            update, lr = pending[0] if every == 1 else zo.chain([e for e, _ in pending], [lr for _, lr in pending])
            rule.apply(params, update, lr, zo.UpdateState())
            trajectory.record(update, lr)
            pending = []
    _, base = fresh()
    assert sum(not torch.equal(base[n], params[n]) for n in base) >= len(base) // 2
    zo.replay(base, zo.Trajectory.from_dict(trajectory.to_dict()), zo.ZOSGD())
    assert all(torch.equal(base[n], params[n]) for n in base)
