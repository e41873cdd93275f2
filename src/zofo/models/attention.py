"""Mask-free causal attention for zofo's own forwards, also while a CUDA graph is captured.

Given no attention mask and no cache, transformers looks at the positions on the host to rule out packed
sequences before it lets SDPA run with ``is_causal``. During stream capture it cannot read them, so it builds a
dense mask and passes it to every layer instead; on an H200 SDPA then takes twice as long (docs/RESULTS.md
section 11). zofo's fixed-shape forwards (`static_batches.static_scores`) know what that check would find: each
row is one right-padded sequence from position 0, no cache. Inside `unpacked_causal()`, SDPA's mask function
answers None for such a call (SDPA's ``is_causal``), as the eager check would; every other call, and every
call outside the context, goes to transformers' own function unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator

_UNPACKED = contextvars.ContextVar("zofo_unpacked_causal", default=False)
_ORIGINAL: dict[str, Callable] = {}


def _plain_causal_prefill(kwargs: dict) -> bool:
    """No mask, no cache offset, queries = keys, no sliding window: causal alone is the whole mask."""
    if "cache_position" in kwargs:  # transformers before q_offset: the queries' positions, 0.. within the context
        queries = kwargs["cache_position"].shape[-1]
    else:
        queries = kwargs.get("q_length") if kwargs.get("q_offset") == 0 else None
    return (kwargs.get("attention_mask") is None and kwargs.get("kv_offset", 0) == 0 and queries is not None
            and queries == kwargs.get("kv_length") and kwargs.get("local_attention_size") is None)


def _sdpa_mask(*args, **kwargs):
    if _UNPACKED.get() and not args and _plain_causal_prefill(kwargs):
        return None
    return _ORIGINAL["sdpa"](*args, **kwargs)


@functools.cache
def _install() -> None:
    """Put `_sdpa_mask` in front of transformers' SDPA mask function, once (nothing where there is none)."""
    try:
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:  # transformers without masking_utils: nothing to do
        return
    mapping = AttentionMaskInterface._global_mapping
    if "sdpa" in mapping:
        _ORIGINAL["sdpa"] = mapping["sdpa"]
        AttentionMaskInterface.register("sdpa", _sdpa_mask)


@contextlib.contextmanager
def unpacked_causal() -> Iterator[None]:
    """Within: forwards without a mask are single right-padded sequences from position 0 (caller's promise)."""
    _install()
    token = _UNPACKED.set(True)
    try:
        yield
    finally:
        _UNPACKED.reset(token)
