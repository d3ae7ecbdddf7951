"""Combining votes: a weighted log-linear pool fitted on human-labeled items (stacking).

For item ``x`` and label ``y`` the pooled log-probability is

    log p(y | x) = b * log prior(y) + sum_t w_t * [t voted] * log p_t(y | x) - log Z(x)

with non-negative weights fitted by minimising the log loss on the votes recorded *at decision
time* for items that humans later labeled (so the votes are out of sample). This is a multinomial
logistic regression over the tools' log-probabilities with one coefficient per tool, which keeps it
well-posed with 77 labels and a few hundred examples, lets weights < 1 soften over-confident tools,
and drives a useless voter's weight to zero. Each row counts by the labels its deciding models had against the
models the pool is fitted for (:func:`maturity_weights`): the pool describes the models that decide next. Until
enough ground truth exists the weights are a reliability-weighted default. Majority vote is reported beside it as
a baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

LOG_FLOOR = 1e-4


def log_votes(probs: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.log(np.clip(probs, LOG_FLOOR, 1.0))
    return out


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z: np.ndarray = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


@dataclass(frozen=True, slots=True)
class AggregatorModel:
    """An immutable snapshot of the pool's parameters."""

    tools: tuple[str, ...]
    weights: np.ndarray  # (n_tools,)
    prior_weight: float
    log_prior: np.ndarray  # (n_labels,)
    version: int = 0
    fitted_on: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    votes_seen: np.ndarray | None = None  # (n_tools,) votes each weight was fitted on

    def is_measured(self, tool: str, min_votes: int = 30) -> bool:
        """Whether the tool's weight rests on enough of its own votes to judge its value."""
        return self.votes_seen is not None and self.votes_seen[self.tools.index(tool)] >= min_votes

    @classmethod
    def default(cls, tools: tuple[str, ...], n_labels: int, weight: float = 0.5) -> AggregatorModel:
        return cls(tools, np.full(len(tools), weight), 0.0, np.full(n_labels, -np.log(n_labels)))

    def weight_of(self, tool: str) -> float:
        return float(self.weights[self.tools.index(tool)])

    def combine(self, logp: np.ndarray, voted: np.ndarray) -> np.ndarray:
        """Pool ``logp`` (n, T, L) where ``voted`` (n, T) marks real votes; returns (n, L) probs."""
        w = self.weights[None, :] * voted  # (n, T)
        logits = np.einsum("nt,ntl->nl", w, logp) + self.prior_weight * self.log_prior[None, :]
        return softmax_rows(logits)


def maturity_weights(trained_on: Sequence[int | None], now: int) -> np.ndarray:
    """Each row's weight in the pool's fit: a vote cast by models fitted on ``k`` ground-truth rows, for a pool that
    will combine models fitted on ``now``, counts ``(k + 1) / (now + 1)`` (at most 1; ``None``: unknown, 1). The pool
    describes the models that decide next, and a vote of a model with a tenth of their labels tells little about
    them (an import's items, decided before any answer, all come with such votes)."""
    k = np.asarray([now if t is None else t for t in trained_on], dtype=np.float64)
    out: np.ndarray = np.minimum(1.0, (k + 1.0) / (max(now, 0) + 1.0))
    return out


def _nll_and_grad(params: np.ndarray, logp: np.ndarray, voted: np.ndarray, y: np.ndarray,
                  log_prior: np.ndarray, l2: float, sw: np.ndarray) -> tuple[float, np.ndarray]:
    """The weighted mean log loss (``sw``: row weights summing to 1) and its gradient."""
    w, b = params[:-1], params[-1]
    feats = logp * voted[:, :, None]  # (n, T, L)
    logits = np.einsum("t,ntl->nl", w, feats) + b * log_prior[None, :]
    probs = softmax_rows(logits.copy())
    n = y.shape[0]
    rows = np.arange(n)
    lse = np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)) + logits.max(axis=1)
    nll = float(sw @ (lse - logits[rows, y]))
    # d nll / d w_t = mean( E_p[f_t] - f_t[y] )
    exp_f = np.einsum("nl,ntl->nt", probs, feats)
    obs_f = feats[rows, :, y]
    grad_w = sw @ (exp_f - obs_f)
    grad_b = float(sw @ (probs @ log_prior - log_prior[y]))
    nll += 0.5 * l2 * float(w @ w)
    grad_w = grad_w + l2 * w
    return nll, np.concatenate([grad_w, [grad_b]])


def fit_aggregator(
    base: AggregatorModel,
    logp: np.ndarray,
    voted: np.ndarray,
    y: np.ndarray,
    label_counts: np.ndarray,
    *,
    min_examples: int = 30,
    l2: float = 1e-3,
    row_weights: np.ndarray | None = None,
) -> AggregatorModel:
    """Fit weights on decision-time votes of human-labeled items (each row weighted by ``row_weights``, default
    equal); keep ``base`` if too few."""
    n_labels = logp.shape[2]
    log_prior = np.log((label_counts + 1.0) / (label_counts.sum() + n_labels))
    if y.shape[0] < min_examples:
        return AggregatorModel(base.tools, base.weights, base.prior_weight, log_prior, base.version,
                               base.fitted_on, base.metrics, base.votes_seen)
    x0 = np.concatenate([np.maximum(base.weights, 0.05), [max(base.prior_weight, 0.0)]])
    bounds = [(0.0, 10.0)] * len(base.tools) + [(0.0, 5.0)]
    sw = np.ones(y.shape[0]) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    sw = sw / sw.sum()
    res = minimize(_nll_and_grad, x0, args=(logp, voted.astype(np.float64), y, log_prior, l2, sw),
                   jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 100})
    params = res.x
    seen = voted.sum(axis=0)
    # A tool with too few votes keeps its prior weight: no evidence is not evidence of no value.
    weights = np.where(seen >= min_examples, params[:-1], base.weights)
    model = AggregatorModel(base.tools, weights, float(params[-1]), log_prior,
                            base.version + 1, int(y.shape[0]), votes_seen=seen)
    probs = model.combine(logp, voted)
    acc = float(np.mean(probs.argmax(axis=1) == y))
    majority = majority_vote(logp, voted)
    return AggregatorModel(model.tools, model.weights, model.prior_weight, log_prior, model.version,
                           model.fitted_on, {"log_loss": float(res.fun), "accuracy": acc,
                                             "majority_vote_accuracy": float(np.mean(majority == y))}, seen)


def majority_vote(logp: np.ndarray, voted: np.ndarray) -> np.ndarray:
    """Baseline: each voting tool's top label counts once; ties go to the lowest label index."""
    n, _t, n_labels = logp.shape
    tops = logp.argmax(axis=2)  # (n, T)
    counts = np.zeros((n, n_labels))
    rows = np.repeat(np.arange(n), tops.shape[1])
    np.add.at(counts, (rows, tops.ravel()), voted.ravel().astype(np.float64))
    best: np.ndarray = counts.argmax(axis=1)
    return best
