"""The float32 L-BFGS logistic regression reaches scikit-learn's optimum (multinomial and binary)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from tools.softmax import fit_softmax, softmax_rows


def problem(k: int, n: int = 400, d: int = 60, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = sp.random(n, d, density=0.1, format="csr", dtype=np.float32, random_state=seed)
    true = rng.normal(size=(d, k)) * 3
    probs = softmax_rows(np.asarray(x @ true, dtype=np.float64))
    y = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1).clip(0, k - 1)
    return x, y


def probabilities(fit: object, x: sp.csr_matrix) -> np.ndarray:
    return softmax_rows(np.asarray(x @ fit.coef + fit.intercept, dtype=np.float32))  # type: ignore[attr-defined]


def test_multinomial_matches_sklearn() -> None:
    x, y = problem(3)
    ours = fit_softmax(x, y, 3, c=2.0, tol=1e-9, max_iter=1000)
    ref = LogisticRegression(C=2.0, tol=1e-10, max_iter=5000).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(probabilities(ours, x), ref.predict_proba(x), atol=2e-3)
    assert ours.coef.shape == (60, 3) and ours.coef.dtype == np.float32


def test_two_classes_equal_the_two_class_softmax() -> None:
    x, y = problem(2, seed=1)
    ours = fit_softmax(x, y, 2, c=2.0, tol=1e-9, max_iter=1000)
    # a 2-class softmax penalises both columns: the binomial equivalent has C doubled
    ref = LogisticRegression(C=4.0, tol=1e-10, max_iter=5000).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(probabilities(ours, x), ref.predict_proba(x), atol=2e-3)
    np.testing.assert_allclose(ours.coef[:, 0], -ours.coef[:, 1])


def test_warm_start_converges_in_fewer_iterations() -> None:
    x, y = problem(4, n=600, seed=2)
    cold = fit_softmax(x, y, 4, c=10.0, tol=1e-6)
    warm = fit_softmax(x, y, 4, c=10.0, tol=1e-6, coef0=cold.coef, intercept0=cold.intercept)
    assert warm.iterations < cold.iterations / 3 and warm.loss <= cold.loss + 1e-6


def test_dense_input_reaches_the_same_optimum_as_sparse() -> None:
    # embeddings arrive dense: the fit keeps them dense (BLAS products) and must land where the sparse path does
    for k in (2, 4):
        x, y = problem(k)
        dense = x.toarray()
        sparse_fit = fit_softmax(x, y, k, c=2.0, tol=1e-9, max_iter=1000)
        dense_fit = fit_softmax(dense, y, k, c=2.0, tol=1e-9, max_iter=1000)
        np.testing.assert_allclose(probabilities(dense_fit, dense), probabilities(sparse_fit, x), atol=1e-3)
        if k > 2:  # scikit-learn's two-class problem penalises differently (see the two-class test above)
            ref = LogisticRegression(C=2.0, tol=1e-10, max_iter=5000).fit(dense.astype(np.float64), y)
            np.testing.assert_allclose(probabilities(dense_fit, dense), ref.predict_proba(dense), atol=2e-3)


def test_a_warm_start_after_a_new_class_needs_patience_to_converge() -> None:
    """A retrain that meets a class for the first time starts far from the optimum, and L-BFGS's first steps (little
    curvature yet) can improve the objective by less than ``tol`` before it falls fast. Stopping at the first small
    step left seeds here up to 13% above the optimum; with ``patience=2`` (what the text classifier asks after a
    new class) every seed ends within 1%."""
    from tools.features import l2_normalize

    hasty, patient = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n, d, k = 2400, 3000, 20
        x = l2_normalize(sp.random(n, d, density=0.01, format="csr", random_state=seed, dtype=np.float32))
        y = np.argmax(x @ (rng.standard_normal((d, k)) * 3) + rng.gumbel(size=(n, k)), axis=1)
        order = np.concatenate([np.flatnonzero(y != 0)[:2000], np.flatnonzero(y == 0)])  # class 0 arrives last
        x, y = x[order], y[order]
        first = int((y != 0).sum())
        old = fit_softmax(x[:first], y[:first] - 1, k - 1, c=10.0, tol=1e-3)
        coef0 = np.zeros((d, k), dtype=np.float32)
        coef0[:, 1:] = old.coef
        intercept0 = np.concatenate([[0.0], old.intercept]).astype(np.float32)
        best = fit_softmax(x, y, k, c=10.0, tol=1e-7, max_iter=500).loss
        warm = {"coef0": coef0, "intercept0": intercept0, "tol": 1e-3}
        hasty.append(fit_softmax(x, y, k, c=10.0, **warm).loss / best)  # type: ignore[arg-type]
        patient.append(fit_softmax(x, y, k, c=10.0, patience=2, **warm).loss / best)  # type: ignore[arg-type]
    assert max(hasty) > 1.08, hasty  # the stall, as it was
    assert max(patient) <= 1.01, patient
