"""The numpy head (spamfilter/head.py): its retrain equals a torch retrain of the same objective,
it returns the current head when there is nothing to learn, and it learns what it is taught."""

from __future__ import annotations

import numpy as np
import pytest

from spamfilter.head import LEARNT_MARGIN, Anchor, Head, apply_head, head_logits, retrain_head, teach


def _problem(seed: int = 0, size: int = 48, rows: int = 400) -> tuple[Head, Anchor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, size)).astype(np.float32)
    labels = (features[:, 0] + 0.5 * rng.normal(size=rows) > 0.8).astype(np.int64)
    weights = np.where(labels == 1, 2.5, 0.6)
    start = Head(rng.normal(size=(2, size)) * 0.2, np.array([0.2, -0.2]))
    corrections = rng.normal(size=(6, size)).astype(np.float32)
    return start, Anchor(features, labels, weights), corrections, np.array([1, 1, 0, 1, 0, 1])


def test_apply_head_is_the_softmax_of_the_logits() -> None:
    start, anchor, _, _ = _problem()
    logits = head_logits(start, anchor.features).astype(np.float64)
    expected = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    assert np.allclose(apply_head(start, anchor.features), expected, atol=1e-6)


def test_no_corrections_give_back_the_current_head() -> None:
    start, anchor, corrections, labels = _problem()
    same = retrain_head(start, corrections[:0], labels[:0], anchor=anchor)
    assert np.array_equal(same.weight, start.weight) and np.array_equal(same.bias, start.bias)


def test_the_numpy_retrain_equals_a_torch_retrain_of_the_same_objective() -> None:
    import torch  # the reference only (the test extra has it): the retrain itself never needs torch

    functional = torch.nn.functional
    start, anchor, corrections, labels = _problem(seed=3)
    weights = np.full(len(labels), 4.0)
    ours = retrain_head(start, corrections, labels, weights, anchor)

    def t(array: np.ndarray) -> object:
        return torch.tensor(np.asarray(array), dtype=torch.float64)

    w0, b0 = t(start.weight), t(start.bias)
    weight, bias = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    xa, ya, wa = t(anchor.features), torch.tensor(anchor.labels), t(anchor.weights)
    xc, yc, wc = t(corrections), torch.tensor(labels), t(weights)
    with torch.no_grad():
        loss0 = functional.cross_entropy(xa @ w0.T + b0, ya, reduction="none")
        slope0 = torch.softmax(xa @ w0.T + b0, -1) - functional.one_hot(ya, 2).double()
    total = wa.sum() + wc.sum()
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> object:
        optimizer.zero_grad()
        taught = functional.cross_entropy(xc @ weight.T + bias, yc, reduction="none")
        anchored = functional.cross_entropy(xa @ weight.T + bias, ya, reduction="none")
        tangent = (slope0 * (xa @ (weight - w0).T + (bias - b0))).sum(-1)
        drift = ((weight - w0) ** 2).sum() + ((bias - b0) ** 2).sum()
        loss = ((taught * wc).sum() + ((anchored - loss0 - tangent) * wa).sum()) / total + 1e-3 * drift
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        theirs = torch.softmax(xa @ weight.T + bias, -1)[:, 1].numpy()
        theirs_c = torch.softmax(xc @ weight.T + bias, -1)[:, 1].numpy()
    assert np.abs(apply_head(ours, anchor.features) - theirs).max() < 1e-5
    assert np.abs(apply_head(ours, corrections) - theirs_c).max() < 1e-5


def test_teach_learns_every_correction_at_the_threshold() -> None:
    start, anchor, corrections, labels = _problem(seed=5)
    before = apply_head(start, corrections)
    taught = teach(start, corrections, labels, 0.5, anchor)
    after = apply_head(taught.head, corrections)
    assert taught.unlearnt == taught.narrow == 0
    assert ((after >= 0.5) == (labels == 1)).all()
    assert not ((before >= 0.5) == (labels == 1)).all()  # there was something to learn
    # ...with room to spare: the service's batches move a message's int8 features a little
    log_odds = np.log(after) - np.log1p(-after)
    assert (np.where(labels == 1, log_odds, -log_odds) >= LEARNT_MARGIN).all()


def test_a_head_has_the_graph_shape() -> None:
    with pytest.raises(ValueError):
        Head(np.zeros((3, 4)), np.zeros(3))


def test_a_correction_learnt_by_a_hair_is_not_learnt_yet() -> None:
    """A ham correction already scored ham, 0.1 in log-odds below the threshold, under a head
    that thousands of training messages hold in place: one retrain barely moves it, so it is not
    yet learnt (the service's batching moves int8 scores by about that much), and the doublings
    go on until it stands LEARNT_MARGIN below."""
    start = Head(np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32), np.zeros(2, dtype=np.float32))
    side = np.repeat([-1.0, 1.0], 2000)
    anchor = Anchor(np.stack([side, np.zeros_like(side)], axis=1), (side > 0).astype(np.int64))
    correction, ham = np.array([[-0.1, 0.0]]), np.array([0])
    assert 0.47 < apply_head(start, correction)[0] < 0.5  # on its side already, by a hair
    once = teach(start, correction, ham, 0.5, anchor, max_doublings=0)
    assert (once.unlearnt, once.narrow) == (0, 1)  # scored ham, but not yet learnt
    taught = teach(start, correction, ham, 0.5, anchor)
    assert (taught.unlearnt, taught.narrow) == (0, 0) and taught.scale > 1
    p = apply_head(taught.head, correction)[0]
    assert np.log(p / (1 - p)) <= -LEARNT_MARGIN


def test_the_weight_reported_is_the_one_the_head_was_taught_with() -> None:
    """Two corrections with the same features and opposite labels can never both be learnt: the
    doublings run out, and the weight reported is the last one retrained with (2**max_doublings),
    not one doubling more. The head it returns is the retrain at that weight."""
    start = Head(np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32), np.zeros(2, dtype=np.float32))
    side = np.repeat([-1.0, 1.0], 50)
    anchor = Anchor(np.stack([side, np.zeros_like(side)], axis=1), (side > 0).astype(np.int64))
    same = np.array([[0.3, 1.0], [0.3, 1.0]])
    taught = teach(start, same, np.array([0, 1]), 0.5, anchor, max_doublings=3)
    assert taught.unlearnt == 1 and taught.scale == 2**3
    direct = retrain_head(start, same, np.array([0, 1]), np.full(2, 2.0**3), anchor)
    np.testing.assert_allclose(taught.head.weight, direct.weight, atol=1e-6)
    learnt = teach(start, np.array([[0.3, 1.0]]), np.array([0]), 0.5, anchor)
    assert learnt.unlearnt == 0 and learnt.scale >= 1
