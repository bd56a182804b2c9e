"""The classification head in numpy: apply it to pooled features, and retrain it on corrections.

No torch here: ``spamfilter learn``, the service's retrain and an online replay update the head
with this module in the base install.

The model's head is ``Linear(C, 2)``: ``logits = features @ weight.T + bias`` and P(spam) is the
softmax's second column, which depends only on the difference of the two rows. A retrain moves
that difference by ``delta`` (C weights and a bias) and splits the move evenly between the rows
(the split that moves the head least), so the head keeps its (2, C) shape and its ONNX layout.

Library API (used by :mod:`spamfilter.learn`, :mod:`spamfilter.user_heads` and the replay):

- ``Head(weight, bias)``: ``weight`` float32 (2, C), ``bias`` float32 (2,).
- ``apply_head(head, features) -> P(spam)``: float64 (N,) from float (N, C) pooled features.
- ``head_logits(head, features) -> (N, 2)`` float32, what the ONNX graph's ``logits`` would be.
- ``Anchor(features, labels, weights)``: the messages the current head was trained on.
- ``retrain_head(start, features, labels, weights=None, anchor=None) -> Head``: ``start`` moved
  as little as the corrections (``features``, ``labels`` 1 spam / 0 ham, per-row ``weights``)
  need, measured on ``anchor`` (see below); deterministic, seconds for 768 dims.
- ``teach(start, features, labels, threshold, anchor=None, owners=None) -> Taught``: retrain with
  the corrections' weight doubling until each is scored on its side of ``threshold`` (or the cap).

Why the anchor. The head in a model directory was trained jointly with the last block, stopped
early on the validation loss. On its own training messages' features it is not the optimum of a
logistic regression: those features are nearly separable (the trunk learnt them), so refitting
the head on them drives it toward a far larger, over-confident solution whatever the corrections
say. That refit, not the corrections, is what changed held-out verdicts. So the training messages
do not enter as a loss to minimise but as a distance to stay within: the Bregman divergence of
their weighted log-loss from the current head (their loss minus its tangent at the current head).
It is zero at the current head and grows as the head moves in directions that would change the
training messages' scores; with no corrections the retrain returns the current head exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

L2_TO_START = 1e-3  # keeps the problem strictly convex where the anchor has no curvature
MAX_DOUBLINGS = 12  # a correction's weight doubles until it is learnt, at most 2**12 times
# How far on its side of the threshold a correction must score to count as learnt, in log-odds.
# The int8 model scales its activations per onnxruntime call, so a message's features move a
# little with the rows beside it and the padding of the call (up to 0.07 log-odds batched by 8
# against alone, on the mail model of benchmarks/RESULTS.md section 27): the features a head is
# taught on are not exactly those the service will score, and a correction learnt by a hair was
# scored against its class again when six users' corrections were computed together.
LEARNT_MARGIN = 0.25
_NEWTON_STEPS = 50


@dataclass(frozen=True)
class Head:
    """``Linear(C, 2)``: ``weight`` (2, C) and ``bias`` (2,), float32 as in the ONNX graph."""

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        bias = np.ascontiguousarray(self.bias, dtype=np.float32).reshape(-1)
        if weight.ndim != 2 or weight.shape[0] != 2 or bias.shape != (2,):
            raise ValueError(f"a head is (2, C) weights and 2 biases, not {weight.shape} and {bias.shape}")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)

    @property
    def size(self) -> int:
        """C: the length of the feature vectors it reads."""
        return int(self.weight.shape[1])

    def nbytes(self) -> int:
        return int(self.weight.nbytes + self.bias.nbytes)


@dataclass(frozen=True)
class Anchor:
    """The messages the current head was trained on (their pooled features), with a weight each
    (the recipe's class weights): what a retrain must not disturb more than the corrections need."""

    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class Taught:
    head: Head
    scale: float  # how many times a training message of its class each correction finally weighed
    unlearnt: int  # corrections still scored against their class at the threshold
    narrow: int = 0  # corrections on their side of it, but by less than LEARNT_MARGIN


def head_logits(head: Head, features: np.ndarray) -> np.ndarray:
    """(N, 2) float32: the logits the graph computes from these pooled features."""
    return (np.asarray(features, dtype=np.float32) @ head.weight.T + head.bias).astype(np.float32)


def apply_head(head: Head, features: np.ndarray) -> np.ndarray:
    """P(spam) per row, float64 (N,), as ``softmax(logits)[:, 1]``."""
    return _sigmoid(_margin(head, features))


def _margin(head: Head, features: np.ndarray) -> np.ndarray:
    """logit(spam) - logit(ham), float64."""
    x = np.asarray(features, dtype=np.float64)
    w = head.weight.astype(np.float64)
    b = head.bias.astype(np.float64)
    return x @ (w[1] - w[0]) + (b[1] - b[0])


def _log_odds(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p) - np.log1p(-p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def retrain_head(
    start: Head,
    features: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    anchor: Anchor | None = None,
    l2: float = L2_TO_START,
) -> Head:
    """``start`` retrained on corrections: minimises, over the move ``delta`` of the logit
    difference, ``(sum_c w_c * logloss_c + D_anchor) / total_weight + l2/2 * |delta|^2`` where
    ``D_anchor`` is the Bregman divergence of the anchor's weighted log-loss from ``start``.
    Newton's method with a backtracking line search on this convex problem (float64)."""
    x_new = _with_ones(features)
    y_new = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(y_new) != len(x_new):
        raise ValueError(f"{len(x_new)} feature rows but {len(y_new)} labels")
    w_new = np.ones(len(y_new)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if anchor is not None and len(anchor.labels):
        x_old = _with_ones(anchor.features)
        w_old = (
            np.ones(len(x_old)) if anchor.weights is None else np.asarray(anchor.weights, dtype=np.float64)
        )
    else:
        x_old, w_old = np.zeros((0, x_new.shape[1])), np.zeros(0)
    if x_new.shape[1] != start.size + 1 or x_old.shape[1] != start.size + 1:
        raise ValueError(f"features of {x_new.shape[1] - 1} dims for a head reading {start.size}")
    total = float(w_new.sum() + w_old.sum()) or 1.0
    difference = np.concatenate(
        [start.weight[1].astype(np.float64) - start.weight[0], [float(start.bias[1]) - float(start.bias[0])]]
    )
    base_new, base_old = x_new @ difference, x_old @ difference
    p_old0 = _sigmoid(base_old)  # the anchor's scores under the start head: its tangent point

    def objective(delta: np.ndarray) -> float:
        z_new, z_old = base_new + x_new @ delta, base_old + x_old @ delta
        new = float(w_new @ (_softplus(z_new) - y_new * z_new))
        # Bregman divergence of softplus from the start: f(z) - f(z0) - f'(z0)(z - z0); the label
        # term is linear and cancels.
        old = float(w_old @ (_softplus(z_old) - _softplus(base_old) - p_old0 * (z_old - base_old)))
        return (new + old) / total + 0.5 * l2 * float(delta @ delta)

    delta = np.zeros(x_new.shape[1])
    value = objective(delta)
    for _ in range(_NEWTON_STEPS):
        p_new = _sigmoid(base_new + x_new @ delta)
        p_old = _sigmoid(base_old + x_old @ delta)
        gradient = (x_new.T @ (w_new * (p_new - y_new)) + x_old.T @ (w_old * (p_old - p_old0))) / total
        gradient += l2 * delta
        curvature_new, curvature_old = w_new * p_new * (1 - p_new), w_old * p_old * (1 - p_old)
        hessian = ((x_new.T * curvature_new) @ x_new + (x_old.T * curvature_old) @ x_old) / total
        hessian[np.diag_indices_from(hessian)] += l2
        step = np.linalg.solve(hessian, -gradient)
        decrease = float(gradient @ step)  # negative: the Hessian is positive definite
        if -decrease < 1e-20:
            break
        size = 1.0
        while size > 1e-10:
            candidate = objective(delta + size * step)
            if candidate <= value + 1e-4 * size * decrease:
                break
            size /= 2
        else:
            break
        delta, value = delta + size * step, candidate
    return _moved(start, delta)


def _with_ones(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, C), not {x.shape}")
    return np.hstack([x, np.ones((len(x), 1))])


def _moved(start: Head, delta: np.ndarray) -> Head:
    """``start`` with its logit difference moved by ``delta``, half on each row."""
    half = delta / 2
    weight = start.weight.astype(np.float64)
    bias = start.bias.astype(np.float64)
    weight[1] += half[:-1]
    weight[0] -= half[:-1]
    bias[1] += half[-1]
    bias[0] -= half[-1]
    return Head(weight.astype(np.float32), bias.astype(np.float32))


def teach(
    start: Head,
    features: np.ndarray,
    labels: np.ndarray,
    threshold: float | Callable[[Head], float],
    anchor: Anchor | None = None,
    owners: np.ndarray | None = None,
    base_weights: np.ndarray | None = None,
    max_doublings: int = MAX_DOUBLINGS,
    discounts: np.ndarray | None = None,
) -> Taught:
    """Retrain on corrections until each is learnt: every correction first weighs ``base_weights``
    (default 1: a training message of its class where the anchor's weights are the class weights),
    and while some are still scored against their class at ``threshold``, or on their side by less
    than ``LEARNT_MARGIN`` in log-odds, all weights double, at most ``max_doublings`` times.
    ``owners`` maps rows (windows, or the positions read in them) to messages, whose score is their
    highest row's (as the filter scores a long message); a message's weight is shared among its
    rows, so that a long ham, taught at every position the model reads, weighs what a short one
    does. Without ``owners`` each row is a message. ``discounts``: per message, the log-odds the
    filter takes off its highest row for the windows it read (``windows.combine``), so that a
    correction counts as learnt only where the filter will score it so."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rows = len(labels)
    owners = np.arange(rows) if owners is None else np.asarray(owners, dtype=np.int64)
    base = np.ones(rows) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    base = base / np.bincount(owners)[owners] if rows else base
    messages = int(owners.max()) + 1 if rows else 0
    message_labels = np.zeros(messages, dtype=np.int64)
    message_labels[owners] = labels
    scale, head, unlearnt, narrow = 0.5, start, 0, 0
    for _ in range(max_doublings + 1):
        scale *= 2  # doubled before each retrain after the first, so `scale` is the one the head had
        head = retrain_head(start, features, labels, base * scale, anchor)
        cut = threshold(head) if callable(threshold) else float(threshold)
        margins = np.full(messages, -np.inf)  # log-odds above the threshold, each message's highest row
        np.maximum.at(margins, owners, _margin(head, features) - _log_odds(cut))
        if discounts is not None:
            margins -= np.asarray(discounts, dtype=np.float64)[:messages]
        spam, flagged = message_labels == 1, margins >= 0  # flagged: P(spam) >= the threshold
        unlearnt = int((flagged != spam).sum())
        towards = np.where(spam, margins, -margins)  # how far on the correction's side
        narrow = int(((flagged == spam) & (towards < LEARNT_MARGIN)).sum())
        if unlearnt + narrow == 0:
            break
    return Taught(head, scale, unlearnt, narrow)
