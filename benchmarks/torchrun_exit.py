"""How often a finished 2-rank torchrun launch of `zofo meta-train` exits non-zero on the CPU (gloo).

    PYTHONPATH=src python benchmarks/torchrun_exit.py N [--keep DIR]

Launches `torchrun --nproc-per-node 2 -m zofo.cli.main meta-train` N times on a tiny random Llama and three tiny tasks
(one outer step), and counts the launches whose exit status is not 0; with --keep, the stderr of each such launch
is written to DIR/fail-<i>.txt. Prints one line per launch and the count. The record of what it found (torch 2.13,
2 loaded CPU cores, before and after `zofo.cli.main.entry`): benchmarks/results/cpu-2026-12-06/torchrun-exit/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.meta.test_metatrain import write_split  # noqa: E402
from tests.ranks import free_port  # noqa: E402
from tests.tiny import build_tiny_tokenizer, tiny_model  # noqa: E402


def launch(model: Path, split: Path, out: Path) -> subprocess.CompletedProcess:
    flags = ["--split", str(split), "--model", str(model), "--out", str(out), "--tasks-per-step", "2",
             "--lower-steps", "1", "--upper", "8", "--lower", "12", "--n-dev", "2", "--batch-size", "2",
             "--max-length", "32", "--steps", "1", "--device", "cpu", "--no-progress"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), "-m", "zofo.cli.main", "meta-train", *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--keep", type=Path, help="folder for the stderr of each failed launch")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp())
    model = root / "tiny-llama"
    tokenizer = build_tiny_tokenizer()
    tiny_model("llama", vocab_size=len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    split = write_split(root)
    failed = 0
    for i in range(args.n):
        done = launch(model, split, root / f"run{i}")
        if done.returncode:
            failed += 1
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"fail-{i}.txt").write_text(done.stderr)
        print(i, done.returncode, flush=True)
    print(f"failed {failed} of {args.n}")
    return failed


if __name__ == "__main__":
    main()
