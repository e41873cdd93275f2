"""The per-element work of the ZO engine: Philox counters (`philox`), the fused Triton kernels (`triton`, loaded
only on CUDA) and the dispatch between them and their torch fallback (`ops`), which gives the same numbers on CPU."""
