"""Meta-training (zofo.meta.metatrain / metarun): the multi-task ZO estimate is the sum of the per-task ones, inactive
blocks stay in host memory, a stopped run resumes bit for bit, and the saved backbone is what meta-test reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.meta.test_split import write_task
from tests.tiny import build_tiny_tokenizer, tiny_model
from zofo import zo
from zofo.evaluation import encode_candidates
from zofo.evaluation.scoring import example_pieces
from zofo.meta.metarun import meta_train
from zofo.meta.metatrain import MetaBilevel, MetaOptions, TaskStreams, sample_tasks
from zofo.meta.options import MetaTrainConfig
from zofo.meta.split import TaskData
from zofo.models.adapters import attach_adapters, peft_config
from zofo.tasks.example import Example

WORDS = ("the film was", "premise is true", "a movie not", "so it is", "answer yes or", "the sentence was")


CANDIDATES = (" yes", " no", " maybe so")


def examples(word: str, n: int, task: int = 0) -> list[Example]:
    """Examples of 2 candidates, and for task % 3 == 1 (2) every second (every) one of 3."""
    return [Example(f"{word} {'good' if i % 3 else 'bad'} :", CANDIDATES[:2 + (task % 3 == 2 or task % 3 * i % 2)],
                    i % 2) for i in range(n)]


def tiny_method(n_tasks: int, options: MetaOptions, dtype=torch.float32, kind: str = "lora",
                device: str = "cpu") -> MetaBilevel:
    """A tiny Llama with the z / p adapters (LoRA r 2, or 3 virtual tokens) and n tasks of 6 upper / 12 lower
    examples each (task i's examples have 2 + i % 3 candidates)."""
    tokenizer = build_tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer)).to(dtype)
    torch.manual_seed(0)
    model, groups = attach_adapters(model, peft_config(kind, r=2, num_virtual_tokens=3), ("z", "p"))
    model.to(device=device, dtype=dtype)
    data = [TaskData(f"task{i}", examples(WORDS[i], 6, i), examples(WORDS[i], 12, i)) for i in range(n_tasks)]
    streams = TaskStreams(data, batch_size=3, seed=0,
                          encode=lambda ex: encode_candidates(tokenizer, ex, 32).to(device))
    return MetaBilevel(model, groups, streams, options)


def test_tasks_are_sampled_without_replacement_as_a_function_of_seed_and_step():
    drawn = [sample_tasks(10, 4, seed=3, step=s) for s in range(20)]
    assert all(len(set(d)) == 4 and all(0 <= i < 10 for i in d) for d in drawn)
    assert drawn == [sample_tasks(10, 4, seed=3, step=s) for s in range(20)]
    assert drawn != [sample_tasks(10, 4, seed=4, step=s) for s in range(20)]


def train_blocks(method: MetaBilevel, tasks: list[str]) -> None:
    """Give each task a trained block (unlike the others) so that the terms differ by task."""
    for task in tasks:
        method.lower_steps(task)
        method.p_step(task, method.task_batch(task))


def test_the_multi_task_estimate_is_the_sum_of_the_per_task_estimates_in_float64():
    method = tiny_method(3, MetaOptions(tasks_per_step=3, lower_steps=1, lam=2.0, lr_upper=0.1,
                                        lr_lower=0.1), dtype=torch.float64)
    tasks = ["task0", "task1", "task2"]
    train_blocks(method, tasks)
    drawn = {task: method.task_batch(task) for task in tasks}
    multi = method.theta_estimate(tasks, drawn, step=5)
    seed, eps = multi.seeds[0], method.options.zo.eps
    assert len(multi.terms) == 2 and len(multi.terms[0]) == 3  # [L+, L-] x one F_i per task
    # independent: each task alone, theta moved by hand to theta +- eps u (float64), F_i by a plain forward
    theta = method.theta
    base = {n: p.detach().clone() for n, p in theta.items()}
    u = {n: zo.direction_like(p, seed, zo.tensor_key(n)).double() for n, p in theta.items()}

    step_size = float(torch.tensor(eps, dtype=torch.float32))  # the engine's perturbation scale is a float32

    def f_at(task: str, sign: float) -> float:
        with torch.no_grad():
            for n, p in theta.items():
                p.copy_(base[n] + sign * step_size * u[n])
            method.blocks.load_values(task)
            value = method.penalty(drawn[task]).item()
            for n, p in theta.items():
                p.copy_(base[n])
        return value

    per_task = [(f_at(t, 1.0) - f_at(t, -1.0)) / (2 * eps) for t in tasks]
    assert multi.projected_grads[0] == pytest.approx(sum(per_task), rel=1e-9, abs=1e-12)
    assert [(p - m) / (2 * eps) for p, m in zip(*multi.terms, strict=True)] == pytest.approx(per_task, rel=1e-9)
    assert len({round(c, 12) for c in per_task}) == 3  # the tasks' terms really differ
    assert all(torch.equal(p, base[n]) for n, p in theta.items())  # probing never wrote theta


def test_inactive_blocks_stay_in_host_memory_and_the_model_does_not_grow_with_tasks():
    options = MetaOptions(tasks_per_step=2, lower_steps=1, lr=1e-3)
    many, few = tiny_method(6, options), tiny_method(2, options)
    for step in range(4):
        many.step(step)
    blocks = many.blocks
    assert blocks.active is None and int(blocks.started.sum()) >= 4  # 4 steps x 2 tasks reached most of the 6
    stored = [*blocks.values.values(), *(s for by_key in blocks.states.values() for s in by_key.values())]
    assert stored and all(t.device.type == "cpu" and t.shape[0] == 6 for t in stored)
    on_model = {p.data_ptr() for p in many.model.parameters()}
    assert not on_model & {t.data_ptr() for t in stored}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(many.model) == count(few.model)
    # the optimizers hold one task's state: one entry per adapter parameter, however many tasks there are
    adapters = len(many.groups.adapter("z")) + len(many.groups.adapter("p"))
    assert len(many.opt_z.state) + len(many.opt_p.state) == adapters
    one_task = sum(p.numel() * p.element_size() for p in blocks.params.values())
    assert blocks.host_bytes() > 6 * one_task  # values and the Adam moments of all six tasks are on the host


def test_every_sampled_task_moves_its_own_block_and_theta_moves_by_the_recorded_update():
    method = tiny_method(3, MetaOptions(tasks_per_step=2, lower_steps=2, lr=1e-2))
    before = {n: p.detach().clone() for n, p in method.theta.items()}
    values = {n: s.clone() for n, s in method.blocks.values.items()}
    metrics = method.step(0)
    sampled = metrics["tasks"].split(",")
    moved = {t for t in method.blocks.tasks
             if any(not torch.equal(s[method.blocks.index[t]], values[n][method.blocks.index[t]])
                    for n, s in method.blocks.values.items())}
    assert moved == set(sampled) and len(sampled) == 2
    replayed = {n: torch.nn.Parameter(before[n].clone()) for n in before}
    zo.replay(replayed, method.seed_trajectory(), zo.ZOSGD())
    assert all(torch.equal(replayed[n], p) for n, p in method.theta.items())
    assert any(not torch.equal(before[n], p) for n, p in method.theta.items())


@pytest.mark.parametrize("kind", ["prefix", "prompt"])
def test_prefix_and_prompt_blocks_train_and_the_deployed_model_is_the_backbone_alone(kind):
    method = tiny_method(3, MetaOptions(tasks_per_step=2, lower_steps=1, lr=1e-2, lr_upper=0.1, lr_lower=0.1),
                         kind=kind)
    values = {n: s.clone() for n, s in method.blocks.values.items()}
    sampled = method.step(0)["tasks"].split(",")
    rows = [method.blocks.index[t] for t in sampled]
    assert all(not torch.equal(s[rows], values[n][rows]) for n, s in method.blocks.values.items())
    plain = tiny_model("llama", vocab_size=len(build_tiny_tokenizer()))
    with torch.no_grad():
        for name, param in plain.named_parameters():
            param.copy_(method.theta[name])
        ids = torch.arange(4, 12).view(1, 8)
        with method.deployed() as deployed:
            torch.testing.assert_close(deployed(input_ids=ids).logits, plain(input_ids=ids).logits)


def write_split(tmp_path: Path, tasks: int = 3) -> Path:
    """Tiny BIG-bench folders (words the tiny tokenizer knows) and a split file over them."""
    for i in range(tasks + 1):
        write_task(tmp_path / "bb" / f"t{i}", 30, WORDS[i])
    text = "meta_train:\n" + "".join(f"  - {tmp_path / 'bb' / f't{i}'}\n" for i in range(tasks))
    text += f"meta_test:\n  - {tmp_path / 'bb' / f't{tasks}'}\n"
    (tmp_path / "split.yaml").write_text(text)
    return tmp_path / "split.yaml"


def small(tmp_path: Path, model: Path, out: str, **changes) -> MetaTrainConfig:
    base = dict(split=str(write_split(tmp_path)), model=str(model), out=str(tmp_path / out), tasks_per_step=2,
                lower_steps=2, upper=6, lower=12, n_dev=3, lr=1e-3, batch_size=2, max_length=32, steps=4,
                log_every=1, device="cpu", progress=False, lam=10.0)
    return MetaTrainConfig(**(base | changes))


def run_state(run: Path) -> dict:
    out = {f"final:{k}": v for k, v in load_file(str(run / "final" / "backbone.safetensors")).items()}
    blocks = load_file(str(run / "checkpoint" / "method_state.safetensors"))
    return out | {f"state:{k}": v for k, v in blocks.items()}


@pytest.mark.parametrize("method", ["bilevel-zofo", "bilevel-fo"])
def test_a_stopped_run_resumes_bit_for_bit(tmp_path, tiny_model_dir, method):
    straight = meta_train(small(tmp_path, tiny_model_dir, "straight", method=method))
    meta_train(small(tmp_path, tiny_model_dir, "resumed", method=method, steps=2))
    again = meta_train(small(tmp_path, tiny_model_dir, "resumed", method=method, steps=4), resume_run=True)
    a, b = run_state(tmp_path / "straight"), run_state(tmp_path / "resumed")
    assert a.keys() == b.keys() and any(k.startswith("state:.blocks.states") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert straight["steps"] == again["steps"] == 4
    if method == "bilevel-zofo":
        trajectories = [json.loads((tmp_path / r / "final" / "trajectory.json").read_text())
                        for r in ("straight", "resumed")]
        assert trajectories[0] == trajectories[1] and len(trajectories[0]["updates"]) == 4
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(base[k], a[f"final:{k}"]) for k in base if f"final:{k}" in a)  # theta did move
    folder = load_file(str(tmp_path / "resumed" / "backbone" / "model.safetensors"))  # rewritten by the resume
    final = load_file(str(tmp_path / "resumed" / "final" / "backbone.safetensors"))
    shared = [k for k in final if k in folder]
    assert shared and all(torch.equal(folder[k], final[k]) for k in shared)


@pytest.mark.parametrize("method", ["fo-peft", "fo-full", "mezo"])
def test_the_baselines_train_on_the_pooled_tasks_and_leave_a_backbone_meta_test_reads(tmp_path, tiny_model_dir,
                                                                                        method):
    from transformers import AutoModelForCausalLM

    from zofo.meta.backbone import resolve_backbone

    cfg = small(tmp_path, tiny_model_dir, "run", method=method, steps=3, lr=1e-2, lr_upper=1e-1)
    result = meta_train(cfg)
    run = tmp_path / "run"
    assert result["steps"] == 3 and result["config"]["train"]["method"] == method
    pooled = json.loads((run / "meta.json").read_text())["tasks"]
    assert len(pooled) == 3
    folder, described = resolve_backbone(str(run), tmp_path / "mt")
    backbone = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert any(not torch.equal(base[n], p) for n, p in backbone.named_parameters() if n in base)
    if method == "fo-peft":  # the merged backbone computes what the base model with the trained LoRA computes
        from peft import PeftModel

        base_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        adapted = PeftModel.from_pretrained(base_model, run / "final" / "adapter").eval()
        ids = torch.arange(4, 20).view(2, 8)
        with torch.no_grad():
            torch.testing.assert_close(backbone(input_ids=ids).logits, adapted(input_ids=ids).logits,
                                       rtol=1e-5, atol=1e-5)


def test_pieces_of_a_batch_give_the_whole_batch_gradient_and_loss_in_float64():
    """`max_rows` bounds the rows of a forward; the accumulated gradient and the mean loss are the batch's."""
    whole = tiny_method(2, MetaOptions(tasks_per_step=2, lower_steps=1), dtype=torch.float64)
    pieces = tiny_method(2, MetaOptions(tasks_per_step=2, lower_steps=1, max_rows=2), dtype=torch.float64)
    batch = whole.task_batch("task0").g  # 3 examples x 2 candidates: pieces of one example each
    assert [p.input_ids.shape[0] for p in example_pieces(batch, 2)] == [2, 2, 2]
    losses = [method.descend("z", batch, weight=3.0) for method in (whole, pieces)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-12)
    grads = [(a.grad, b.grad) for a, b in zip(whole.groups.adapter("z").values(),
                                               pieces.groups.adapter("z").values(), strict=True)]
    assert sum(float(a.abs().sum()) for a, _ in grads) > 0  # LoRA's B moves (A's gradient is 0 while B is 0)
    for a, b in grads:
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)
    with torch.no_grad():
        assert pieces.loss("p", batch).item() == pytest.approx(whole.loss("p", batch).item(), abs=1e-12)


def test_a_run_in_pieces_follows_the_run_in_whole_batches(tmp_path, tiny_model_dir):
    """Batches of 2 examples (4 rows) in pieces of one example: the same run up to float32 rounding (the backbone
    within 1e-6; Adam may round a near-zero gradient of a block the other way, so blocks are held by their median)."""
    runs = [meta_train(small(tmp_path, tiny_model_dir, f"run{rows}", max_rows=rows)) for rows in (None, 3)]
    whole, pieces = (run_state(Path(r["run_dir"])) for r in runs)
    assert whole.keys() == pieces.keys()
    for name, tensor in whole.items():
        if not tensor.is_floating_point():
            continue
        gap = (pieces[name] - tensor).abs()
        if name.startswith("final:"):
            assert gap.max() < 1e-6, name
        else:
            assert gap.median() < 1e-6, name
    assert json.loads((Path(runs[1]["run_dir"]) / "meta.json").read_text())["options"]["max_rows"] == 3


@pytest.mark.parametrize("method, quantile", [("fo-full", 0.5), ("mezo", 1.0)])
def test_a_pooled_baseline_in_pieces_follows_the_baseline_in_whole_batches(tmp_path, tiny_model_dir, method,
                                                                            quantile):
    """--max-rows reaches the pooled baselines (as train.max_rows): batches of 2 examples in pieces of one, the same
    backbone up to float32 rounding of the batch mean (Adam may round a near-zero gradient of fo-full the other way,
    by up to 2 lr: its median is held)."""
    runs = [meta_train(small(tmp_path, tiny_model_dir, f"{method}{rows}", method=method, steps=3, max_rows=rows))
            for rows in (None, 2)]
    assert runs[1]["config"]["train"]["max_rows"] == 2 and runs[0]["config"]["train"]["max_rows"] is None
    whole, pieces = (load_file(str(Path(r["run_dir"]) / "final" / "backbone.safetensors")) for r in runs)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    moved = max((whole[k] - base[k]).abs().max().item() for k in whole if k in base)
    gap = torch.cat([(pieces[k] - whole[k]).abs().flatten() for k in whole]).quantile(quantile).item()
    assert gap < 1e-5 < moved


def test_an_interrupted_meta_train_names_the_command_that_continues_it(tmp_path, tiny_model_dir, monkeypatch):
    import signal

    import zofo.meta.metarun as metarun
    from zofo.run.interrupt import TrainingInterrupted

    def stopped(method, dev, run_dir, *args):
        raise TrainingInterrupted(1, run_dir / "checkpoint", signal.SIGINT)

    monkeypatch.setattr(metarun, "train_loop", stopped)
    with pytest.raises(TrainingInterrupted, match=r"continue with `zofo meta-train --resume .*/run`") as caught:
        meta_train(small(tmp_path, tiny_model_dir, "run"))
    assert caught.value.exit_code == 130 and "zofo train --resume" not in str(caught.value)


def test_a_checkpoint_left_as_old_is_put_back_and_resumed_not_cleared(tmp_path, tiny_model_dir, monkeypatch):
    """A save killed between its two renames leaves RUN/checkpoint.old: --resume must continue from it (steps 3 and
    4 only), not take the run for one stopped before its first checkpoint and train all four again."""
    meta_train(small(tmp_path, tiny_model_dir, "straight"))
    meta_train(small(tmp_path, tiny_model_dir, "resumed", steps=2))
    run = tmp_path / "resumed"
    (run / "checkpoint").replace(run / "checkpoint.old")
    stepped = []
    step = MetaBilevel.step
    monkeypatch.setattr(MetaBilevel, "step", lambda self, k: stepped.append(k) or step(self, k))
    again = meta_train(small(tmp_path, tiny_model_dir, "resumed", steps=4), resume_run=True)
    assert again["steps"] == 4 and len(stepped) == 2 and not (run / "checkpoint.old").exists()
    a, b = run_state(tmp_path / "straight"), run_state(run)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
