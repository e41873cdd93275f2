"""train.max_rows: a batch taken in pieces of whole examples. The loss and the accumulated gradients are the whole
batch's (float64), an FO and a ZO method take the same steps either way, and the methods whose steps take whole batches
refuse it (as a process, exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.methods.common import EXAMPLES, build
from tests.tiny import build_tiny_tokenizer, tiny_model
from zofo.errors import ZofoError
from zofo.evaluation.scoring import candidate_scores, encode_candidates, example_pieces
from zofo.methods import Settings
from zofo.methods.base import batch_backward, batch_loss
from zofo.run.options import load_config


def forward_rows(model: torch.nn.Module) -> list[int]:
    """The rows of every forward the model runs from now on (a hook on its embedding)."""
    rows: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    return rows


def test_pieces_give_the_whole_batch_loss_and_gradient_in_float64():
    tokenizer = build_tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer)).double()
    batch = encode_candidates(tokenizer, EXAMPLES, 64)  # 8 examples x 2 candidates
    assert [p.input_ids.shape[0] for p in example_pieces(batch, 5)] == [4, 4, 4, 4]
    grads, losses, seen = [], [], forward_rows(model)
    for rows in (None, 5):
        model.zero_grad(set_to_none=True)
        seen.clear()
        losses.append(batch_backward(model, batch, "ce", rows, weight=2.0).item())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert seen == [4, 4, 4, 4]  # the pieces really went through the model one by one
    assert losses[1] == pytest.approx(losses[0], abs=1e-12)
    assert sum(g.abs().sum().item() for g in grads[0]) > 0
    for whole, pieces in zip(*grads, strict=True):
        torch.testing.assert_close(pieces, whole, atol=1e-12, rtol=0)
    with torch.no_grad():  # independent: the mean over examples of each piece's per-example losses
        expected = torch.cat([torch.nn.functional.cross_entropy(candidate_scores(model, p), p.labels,
                                                                reduction="none")
                              for p in example_pieces(batch, 3)]).mean().item()
        assert batch_loss(model, batch, "ce", 3).item() == pytest.approx(expected, abs=1e-12)
        assert batch_loss(model, batch, "ce").item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("method, options", [("fo-peft", {"lr_upper": 1e-2}), ("mezo", {"lr": 1e-2, "eps": 1e-3})])
def test_a_method_in_pieces_takes_the_steps_it_takes_on_whole_batches(method, options):
    """float64: the pieces change the arithmetic's order only, so the runs agree to 1e-9 after 3 steps."""
    runs = [build(method, dtype=torch.float64, cuda_graphs=False, max_rows=rows, **options)[0] for rows in (None, 3)]
    start = {name: p.detach().clone() for name, p in runs[0].trained_group().items()}
    seen = forward_rows(runs[1].model)
    for step in range(3):
        logged = [run.step(step) for run in runs]
        assert float(logged[1]["loss"]) == pytest.approx(float(logged[0]["loss"]), rel=1e-9)
    assert len(seen) > 3 and max(seen) <= 3  # 8 examples x 2 candidates: forwards of one example
    trained = [run.trained_group() for run in runs]
    assert any((p - start[name]).abs().max() > 1e-4 for name, p in trained[0].items())  # training moved them
    for name, param in trained[0].items():
        torch.testing.assert_close(trained[1][name], param, atol=1e-9, rtol=0)


def test_batches_in_pieces_are_never_graphed():
    """Pieces have no fixed shape: with max_rows every method steps eagerly, even where CUDA graphs are asked for."""
    assert Settings().graphed and not Settings(cuda_graphs=False).graphed
    assert not Settings(cuda_graphs=True, max_rows=3).graphed


def test_bilevel_methods_refuse_train_max_rows_naming_the_key():
    with pytest.raises(ZofoError, match="train.max_rows does not apply to method bilevel-zofo") as refused:
        load_config(None, ["train.method=bilevel-zofo", "train.max_rows=8"])
    assert refused.value.key == "train.max_rows" and "fo-peft" in refused.value.fix
    with pytest.raises(ZofoError, match="train.max_rows"):
        load_config(None, ["train.method=mezo", "train.max_rows=0"])


def test_the_command_refuses_it_with_exit_2():
    done = subprocess.run([sys.executable, "-m", "zofo.cli.main", "train", "--method", "bilevel-fo", "--set",
                           "train.max_rows=8"], capture_output=True, text=True)
    assert done.returncode == 2 and "train.max_rows does not apply to method bilevel-fo" in done.stderr
