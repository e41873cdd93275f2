"""`update_every`: ZO-SGD's updates of k steps applied together (one rounding), exactly resumable."""

from __future__ import annotations

import pytest
import torch

from tests.methods.common import build, deployed_loss, snapshot, zo_of
from zofo import zo
from zofo.errors import ZofoError

OPTIONS = dict(lr=1e-2, update_every=4)


def test_theta_moves_only_every_k_steps():
    trainer, _ = build("mezo", **OPTIONS)
    start = snapshot(zo_of(trainer).params)
    for step in range(3):
        trainer.step(step)
    assert all(torch.equal(v, start[n]) for n, v in snapshot(zo_of(trainer).params).items())
    trainer.step(3)
    assert any(not torch.equal(v, start[n]) for n, v in snapshot(zo_of(trainer).params).items())
    assert zo_of(trainer).pending == []


def test_four_deferred_steps_equal_one_step_of_four_directions():
    """All k probes are taken at the same theta, so k deferred steps at lr are one step of q = k directions at
    k * lr (which averages them).  Each deferred step draws its own (reshuffled) batch, so the losses differ
    by float32 summation order, which the 1 / (2 eps) of the estimate turns into ~1e-6 in theta; the
    updates themselves move theta by ~1e-1."""
    deferred, _ = build("mezo", **OPTIONS)
    for step in range(4):
        deferred.step(step)
    single, _ = build("mezo", lr=4e-2, q=4)
    estimates = [zo_of(deferred).seeds(step)[0] for step in range(4)]
    zo_of(single).seeds = lambda step: estimates  # the same four directions, probed at theta_0
    single.step(0)
    a, b = snapshot(zo_of(deferred).params), snapshot(zo_of(single).params)
    assert all(torch.allclose(a[n], b[n], rtol=0, atol=1e-5) for n in a)
    start, _ = build("mezo")
    assert max((a[n] - v).abs().max() for n, v in snapshot(zo_of(start).params).items()) > 1e-2


def test_evaluation_sees_the_pending_updates():
    trainer, encode = build("mezo", **OPTIONS)
    trainer.step(0)
    before = snapshot(zo_of(trainer).params)
    deployed_loss(trainer, encode)
    assert zo_of(trainer).pending == []
    assert any(not torch.equal(v, before[n]) for n, v in snapshot(zo_of(trainer).params).items())


def straight_and_resumed(make, saved=lambda trainer: None):
    """Two trainers from `make()`: one run 6 steps straight; one run 2 steps, its state and weights put into a
    fresh trainer (`saved` sees the first before), which then runs steps 2-5."""
    straight = make()
    for step in range(6):
        straight.step(step)
    first = make()
    for step in range(2):
        first.step(step)
    saved(first)
    state, weights = first.state_dict(), snapshot(first.trainable())
    second = make()
    with torch.no_grad():
        for name, p in second.trainable().items():
            p.copy_(weights[name])
    second.load_state_dict(state)
    second.batches.load_state_dict(first.batches.state_dict())
    for step in range(2, 6):
        second.step(step)
    return straight, second


@pytest.mark.parametrize("method, peft", [("mezo", None), ("bilevel-zofo", "lora")])
def test_pending_updates_survive_a_checkpoint(method, peft):
    extra = dict(lr_upper=3e-2, lr_lower=3e-2, lower_steps=2) if method == "bilevel-zofo" else {}
    straight, second = straight_and_resumed(lambda: build(method, peft or "lora", **OPTIONS, **extra)[0])
    a, b = snapshot(straight.trainable()), snapshot(second.trainable())
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_pending_device_estimates_are_checkpointed_as_the_update_uses_them():
    """A queued estimate whose probes have several loss terms: the checkpoint keeps the c_i the deferred update
    chains (the device's sum of the terms), not a host re-summation of them, so the resumed run applies the same
    update as the uninterrupted one."""
    def queued(step):  # terms whose plain sum (0.0) and exact sum (1.0) differ
        values = torch.tensor([[1e16, 1.0, -1e16], [0.25, 0.0, 0.0]], dtype=torch.float64) * (step + 1)
        return zo.DeviceEstimate([zo.step_seed(0, step)], values, "gaussian", eps=1e-3, two_sided=True)

    straight, first = build("mezo", **OPTIONS)[0], build("mezo", **OPTIONS)[0]
    for step in range(4):
        zo_of(straight).apply(queued(step), step)
    for step in range(2):
        zo_of(first).apply(queued(step), step)
    state = zo_of(first).state_dict()
    assert state["pending"][0]["projected_grads"] == queued(0).projected_grads.tolist() == [-125.0]
    second = build("mezo", **OPTIONS)[0]  # the weights have not moved yet: every=4 defers the first four
    zo_of(second).load_state_dict(state)
    for step in range(2, 4):
        zo_of(second).apply(queued(step), step)
    a, b = snapshot(zo_of(straight).params), snapshot(zo_of(second).params)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert zo_of(straight).trajectory.records() == zo_of(second).trajectory.records()


def test_bf16_training_with_deferred_updates_lowers_the_loss():
    trainer, encode = build("mezo", dtype=torch.bfloat16, lr=1e-2, update_every=4)
    before = deployed_loss(trainer, encode)
    for step in range(24):
        trainer.step(step)
    assert deployed_loss(trainer, encode) < 0.99 * before


@pytest.mark.parametrize("dtype, rule, every", [(torch.bfloat16, "sgd", 16), (torch.float32, "sgd", 1),
                                               (torch.bfloat16, "adam", 1)])
def test_default_defers_only_low_precision_sgd(dtype, rule, every):
    trainer, _ = build("mezo", dtype=dtype, lr=1e-2, rule=rule)
    assert zo_of(trainer).every == every


@pytest.mark.parametrize("bad, rule", [(-1, "sgd"), (2, "adam"), (2, "momentum")])
def test_bad_update_every_is_refused_with_the_fix(bad, rule):
    with pytest.raises(ZofoError, match=r"update_every.*\((use 0 \(auto\)|set zo.update_every=1)"):
        build("mezo", lr=1e-2, update_every=bad, rule=rule)


def queued(dtype=torch.float32, on_device: bool = True, **options):
    """A MeZO trainer on the path CUDA takes (fixed-shape probes, queued), probed eagerly on CPU; on_device=False
    resolves every estimate on the host instead (the path of momentum, Adam and weight decay)."""
    trainer, encode = build("mezo", dtype=dtype, **options)
    trainer.probes = trainer.graphed_probes(zo_of(trainer).params, capture=False)
    zo_of(trainer).on_device = on_device
    return trainer, encode


@pytest.mark.parametrize("dtype, every", [(torch.float32, 1), (torch.bfloat16, 1), (torch.bfloat16, 4)])
def test_queued_steps_equal_host_resolved_steps_bit_for_bit(dtype, every):
    """The c_i kept on the device, chained on the device and applied from there move theta exactly as the
    host path does; the logged values agree once read."""
    device, _ = queued(dtype, True, lr=1e-2, update_every=every)
    host, _ = queued(dtype, False, lr=1e-2, update_every=every)
    for step in range(8):
        a, b = device.step(step), host.step(step)
        assert isinstance(a["loss"], torch.Tensor) and not isinstance(b["loss"], torch.Tensor)
        assert a["loss"].item() == pytest.approx(b["loss"], rel=1e-12)
        assert a["projected_grad"].item() == pytest.approx(b["projected_grad"], rel=1e-12)
        assert a["skipped"].item() == 0 and "skipped" not in b
    device.flush(), host.flush()
    a, b = snapshot(zo_of(device).params), snapshot(zo_of(host).params)
    start, _ = build("mezo", dtype=dtype)
    assert any(not torch.equal(a[n], v) for n, v in snapshot(zo_of(start).params).items())
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_queued_pending_updates_survive_a_checkpoint():
    def saved(trainer):
        assert all(isinstance(e, zo.DeviceEstimate) for e, _ in zo_of(trainer).pending)

    straight, second = straight_and_resumed(lambda: queued(lr=1e-2, update_every=4)[0], saved)
    straight.flush(), second.flush()
    a, b = snapshot(straight.trainable()), snapshot(second.trainable())
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_queued_non_finite_step_changes_nothing_and_is_counted(tmp_path):
    """A probe loss that is not finite gives zero coefficients on the device (theta untouched, also through a
    deferred chain) and the loop counts the step as skipped when it reads the flags."""
    from zofo.run.logs import PeakMemory, RunLogger
    from zofo.run.loop import LoopSettings, LoopState, train_loop

    trainer, _ = queued(lr=1e-2, update_every=2)
    probes = trainer.probes
    trainer.probes = lambda inputs, seed, scale: probes(inputs, seed, scale) * float("nan")
    trainer.probes.capture = False
    start = snapshot(zo_of(trainer).params)
    state = train_loop(trainer, lambda: {"accuracy": 0.5}, tmp_path, LoopSettings(steps=4, log_every=2, progress=False),
                       RunLogger(tmp_path), PeakMemory(torch.device("cpu")), LoopState())
    assert state.skipped_steps == 4
    assert all(torch.equal(v, start[n]) for n, v in snapshot(zo_of(trainer).params).items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("every", [1, 2])
def test_a_graphed_mezo_step_never_waits_for_the_host(every):
    """After the first step (which captures the graphs), a MeZO training step on CUDA reads nothing back:
    batch upload, probes, deferral and the fused update run under torch's sync debug mode set to "error"."""
    trainer, _ = build("mezo", dtype=torch.bfloat16, device="cuda", lr=1e-2, update_every=every)
    assert trainer.probes is not None and zo_of(trainer).on_device
    trainer.step(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        logs = [trainer.step(step) for step in range(1, 5)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.probes.capture
    assert all(float(m["skipped"]) == 0 for m in logs)


ZO_ROWS = [("mezo", None), ("zo-peft", "lora"), ("bilevel-zofo", "lora")]
BILEVEL = dict(lr_upper=3e-2, lr_lower=3e-2, lower_steps=1)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (torch.equal calls -0.0 and 0.0 equal)."""
    return t.view({4: torch.int32, 2: torch.int16}[t.element_size()])


def fixed_shape_probes(trainer) -> None:
    """Put a ZO method on its CUDA path, probed eagerly on CPU: fixed-shape probes, estimates kept queued."""
    if hasattr(trainer, "penalty"):  # Bilevel ZOFO: F's three forwards over fixed-shape B_f, B_g
        trainer.graphed = True  # the steps' inputs are fixed-shape batches; nothing is captured on CPU
        trainer.probes = zo.GraphedProbes(trainer.model, trainer.groups.backbone, trainer.penalty,
                                          trainer.settings.zo.direction, capture=False)
    else:
        trainer.probes = trainer.graphed_probes(zo_of(trainer).params, capture=False)
    zo_of(trainer).on_device = True


@pytest.mark.parametrize("method, peft", ZO_ROWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("on_device", [False, True])
def test_zero_lr_deferred_updates_leave_theta_bit_identical_and_replay_as_no_ops(method, peft, dtype, on_device):
    """lr 0 with `update_every` 4: a full block (step 3) and a partial one (flushed by the evaluation) chain lrs
    that sum to 0; theta keeps every bit, and the trajectory records both updates at lr 0, which replay as
    no-ops. on_device: the CUDA path's queued estimates, chained on the device (probed eagerly here)."""
    from zofo.zo.optimizer import rule_of

    make = lambda: build(method, peft or "lora", dtype=dtype, lr=0.0, update_every=4,  # noqa: E731
                         **(BILEVEL if method == "bilevel-zofo" else {}))
    trainer, encode = make()
    if on_device:
        fixed_shape_probes(trainer)
    start = snapshot(zo_of(trainer).params)
    for step in range(6):
        trainer.step(step)
    assert all(isinstance(e, zo.DeviceEstimate) == on_device for e, _ in zo_of(trainer).pending)
    deployed_loss(trainer, encode)  # flushes the two pending steps
    assert zo_of(trainer).pending == []
    assert all(torch.equal(bits(v), bits(start[n])) for n, v in snapshot(zo_of(trainer).params).items())
    records = zo_of(trainer).trajectory.records()
    assert [r["lr"] for r in records] == [0.0, 0.0] and [len(r["seeds"]) for r in records] == [4, 2]
    base = zo_of(make()[0]).params
    zo.replay(base, zo_of(trainer).trajectory, rule_of(zo_of(trainer).trajectory.rule))
    assert all(torch.equal(base[n], v) for n, v in start.items())


@pytest.mark.parametrize("rule, every", [("sgd", 4), ("momentum", 1), ("adam", 1)])
def test_a_schedule_reaching_zero_stops_theta_and_replays_bit_for_bit(rule, every):
    """A linear schedule over 4 steps, run for 8: steps 4-7 have lr 0 (a deferred block of zeros for ZO-SGD); theta
    moves in steps 0-3 only, and replaying the trajectory rebuilds it bit for bit."""
    from zofo.zo.optimizer import rule_of

    make = lambda: build("mezo", dtype=torch.bfloat16, lr=1e-2, schedule="linear", steps=4,  # noqa: E731
                         rule=rule, update_every=every)
    trainer, encode = make()
    start = snapshot(zo_of(trainer).params)
    logs = [trainer.step(step) for step in range(4)]
    deployed_loss(trainer, encode)
    moved = snapshot(zo_of(trainer).params)
    assert any(not torch.equal(moved[n], v) for n, v in start.items())
    logs += [trainer.step(step) for step in range(4, 8)]
    deployed_loss(trainer, encode)
    assert [log["lr"] for log in logs[4:]] == [0.0] * 4 and all(log["lr"] > 0 for log in logs[:4])
    assert all(torch.equal(moved[n], v) for n, v in snapshot(zo_of(trainer).params).items())
    records = zo_of(trainer).trajectory.records()
    assert [r["lr"] for r in records][-(4 // every):] == [0.0] * (4 // every)
    base = zo_of(make()[0]).params
    zo.replay(base, zo_of(trainer).trajectory, rule_of(zo_of(trainer).trajectory.rule))
    assert all(torch.equal(base[n], v) for n, v in moved.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method, peft", ZO_ROWS)
@pytest.mark.parametrize("rule, every", [("sgd", 4), ("sgd", 0), ("momentum", 1), ("adam", 1)])
def test_zero_lr_on_cuda_leaves_theta_bit_identical(method, peft, rule, every):
    """The issue's crash: bf16 on CUDA, graphed probes, estimates chained on the device (`update_every` 4, or the
    default 16 with a partial block flushed by the evaluation), at lr 0; and the stateful rules."""
    trainer, encode = build(method, peft or "lora", dtype=torch.bfloat16, device="cuda", lr=0.0,
                            rule=rule, update_every=every, **(BILEVEL if method == "bilevel-zofo" else {}))
    assert trainer.probes is not None
    start = snapshot(zo_of(trainer).params)
    for step in range(6):
        trainer.step(step)
    deployed_loss(trainer, encode)
    assert all(torch.equal(bits(v), bits(start[n])) for n, v in snapshot(zo_of(trainer).params).items())
    assert {r["lr"] for r in zo_of(trainer).trajectory.records()} == {0.0}
