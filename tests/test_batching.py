"""``runtime.batched_logits``, the one batching path: order kept, batches bounded, and with
``trim`` rows of very different lengths kept apart (padding is computed like real tokens)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from spamfilter.runtime import batched_logits

PAD = 50256


def fake_model(seen: list[np.ndarray]):
    """Logits that depend only on a row's real tokens (as under the causal mask with last-token
    pooling): the sum and count of its non-pad ids; every batch it was given is recorded."""

    def logits(ids: np.ndarray) -> np.ndarray:
        seen.append(ids)
        real = ids != PAD
        return np.stack([(ids * real).sum(axis=1), real.sum(axis=1)], axis=1).astype(np.float64)

    return logits


rows_strategy = st.lists(st.lists(st.integers(0, 50000), min_size=1, max_size=150), min_size=1, max_size=60)


@given(rows=rows_strategy, batch_size=st.integers(1, 16), trim=st.booleans())
def test_order_bounds_and_padding(rows: list[list[int]], batch_size: int, trim: bool) -> None:
    seen: list[np.ndarray] = []
    max_length = 120
    out = batched_logits(
        rows, fake_model(seen), batch_size=batch_size, max_length=max_length, pad_token_id=PAD, trim=trim
    )
    for row, got in zip(rows, out, strict=True):  # every row's own answer, in input order
        kept = row[:max_length]
        assert got.tolist() == [float(sum(kept)), float(len(kept))]
    assert sum(len(batch) for batch in seen) == len(rows)
    for batch in seen:
        assert 1 <= len(batch) <= batch_size
        if not trim:
            assert batch.shape[1] == max_length
        else:
            lengths = (batch != PAD).sum(axis=1)
            assert batch.shape[1] == lengths.max()  # padded only to its longest row
            assert lengths.max() <= max(1.25 * lengths.min(), lengths.min() + 8)


def test_a_mixed_micro_batch_is_split_by_length() -> None:
    seen: list[np.ndarray] = []
    rows = [[1] * 10, [1] * 100, [1] * 11, [1] * 98]
    batched_logits(rows, fake_model(seen), batch_size=8, max_length=120, pad_token_id=PAD, trim=True)
    assert sorted(batch.shape for batch in seen) == [(2, 11), (2, 100)]
