"""Compile every fused kernel variant for an H100/H200 (sm_90) without a GPU; prints one line per variant.

Run as a script with TRITON_INTERPRET unset (the interpreter replaces @triton.jit functions at import).
``--tiles KIND=R,W ...`` compiles only the perturbation kernels (per-tensor and grouped) of those kinds at those
tiles instead, to compare their registers and spills (docs/ZO_ENGINE.md, "What one launch per layer costs").
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from zofo.zo import multi as M
from zofo.zo.kernels import triton as K

HOPPER = GPUTarget("cuda", 90, 32)
BF16_ALIGN = K.align(2, 0)  # the alignment hint (elements) a launch on aligned bf16 tensors gets: 16 bytes
PERTURB = {"x_ptr": "*bf16", "out_ptr": "*bf16", "n": "i64", "start": "i64", "key_hi": "i64", "seed_ptr": "*i64",
           "scale_ptr": "*fp32"}
UPDATE = {"x_ptr": "*bf16", "n": "i64", "start": "i64", "key": "i64", "seeds_ptr": "*i64", "coefs_ptr": "*fp32",
          "q": "i32", "decay": "fp32", "eps": "fp32"}
MULTI_PERTURB = {"x_ptr": "*bf16", "out_ptr": "*bf16", "meta_ptr": "*i64", "seed_ptr": "*i64", "scale_ptr": "*fp32"}
MULTI_UPDATE = {"x_ptr": "*bf16", "meta_ptr": "*i64", "seeds_ptr": "*i64", "coefs_ptr": "*fp32", "q": "i32",
                "decay": "fp32", "eps": "fp32"}


def variants():
    for kind, fast, eviction in itertools.product(K.TILE, (True, False), ("", "evict_first")):
        r, warps = K.TILE[kind]
        yield "perturb", K._perturb_kernel, PERTURB, dict(KIND=kind, HAS_X=True, FAST=fast, R=r, ALIGN=BF16_ALIGN,
                                                          EVICTION=eviction), warps
        r, warps = K.GROUP_TILE[kind]
        yield "multi_perturb", M._multi_perturb_kernel, MULTI_PERTURB, dict(NT=16, KIND=kind, FAST=fast, R=r,
                                                                             ALIGN=BF16_ALIGN, EVICTION=eviction), warps
    for kind, probed in itertools.product(K.TILE, (0, 1, 2)):
        r, warps = K.TILE[kind]
        flags = dict(KIND=kind, FAST=True, SR=True, PROBED=probed, R=r, ALIGN=BF16_ALIGN)
        yield "update", K._update_kernel, UPDATE, flags, warps
        yield "multi_update", M._multi_update_kernel, MULTI_UPDATE, dict(NT=16, **flags), warps


def aligned(args: dict[str, str]) -> dict[tuple[int], list]:
    """The bf16 tensors marked 16-byte aligned, as Triton specializes them at launch for torch's allocations."""
    return {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(args.values()) if kind == "*bf16"}


def tile_variants(specs: list[str]):
    """The perturbation kernels, per-tensor and grouped, of each ``KIND=R,W`` in ``specs`` (fast math, no L2 hint)."""
    for spec in specs:
        kind, (r, warps) = K.tile_spec(spec)
        flags = dict(KIND=kind, FAST=True, R=r, ALIGN=BF16_ALIGN, EVICTION="")
        yield "perturb", K._perturb_kernel, PERTURB, dict(HAS_X=True, **flags), warps
        yield "multi_perturb", M._multi_perturb_kernel, MULTI_PERTURB, dict(NT=16, **flags), warps


def resources(cubin: bytes) -> dict[str, int]:
    """Registers a thread and stack bytes (spills) of a compiled kernel, from the cuobjdump that ships with Triton."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", fh.name], capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return {"registers": int(found[1]), "stack": int(found[2])} if found else {}


def global_accesses(ptx: str) -> dict[str, int]:
    """Counts of the PTX global loads / stores outside predication (the unmasked path, which whole super-blocks
    take) by kind: scalar 16-bit, vectors, evict-first hinted; and every global load, predicated or not."""
    lines = [line.strip() for line in ptx.splitlines()]
    ops = [line.split()[0] for line in lines if line.startswith(("ld.global", "st.global"))]
    return {"scalar16": sum(op.endswith(".b16") for op in ops), "vector": sum(".v" in op for op in ops),
            "evict_first": sum("evict_first" in op for op in ops),
            "loads": sum("ld.global" in line.split("//")[0] for line in lines)}


def main(argv: list[str]) -> int:
    chosen = tile_variants(argv[argv.index("--tiles") + 1 :]) if "--tiles" in argv else variants()
    for name, fn, args, constexprs, warps in chosen:
        signature = {**args, **{k: "constexpr" for k in constexprs}}
        source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned(args))
        compiled = triton.compile(source, target=HOPPER, options={"num_warps": warps})
        accesses = " ".join(f"{k} {v}" for k, v in global_accesses(compiled.asm["ptx"]).items())
        used = " ".join(f"{k} {v}" for k, v in resources(compiled.asm["cubin"]).items())
        print(name, constexprs, "warps", warps, accesses, used, "cubin bytes", len(compiled.asm["cubin"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
