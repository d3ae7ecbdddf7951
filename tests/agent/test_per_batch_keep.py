"""``certification: per_batch``: a scan that certifies nothing keeps the certificate in force unless the window shows
it wrong; a scan that certifies only a higher threshold replaces it unless the window certifies the one in force too
(tested alone); a scan that certifies a lower threshold replaces it."""

from __future__ import annotations

import numpy as np

from agent.calibration import ThresholdResult, choose_threshold, cp_lower, cp_upper
from agent.certificate import PerBatchCertifier


def _window(errors: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items at one confidence (0.95), ``errors`` of them wrong: above a held threshold of 0.9, all of them."""
    ok = np.ones(n, dtype=bool)
    ok[np.random.default_rng(errors).choice(n, size=errors, replace=False)] = False
    return np.full(n, 0.95), ok


def _certifier() -> PerBatchCertifier:
    certifier = PerBatchCertifier(0.02, 0.05, min_size=50, window=1000)
    certifier.certificate = ThresholdResult(0.9, 400, 300, 0, 0.01)
    return certifier


def test_a_scan_that_fails_without_evidence_keeps_the_threshold_in_force() -> None:
    conf, ok = _window(errors=6)  # 3% wrong: the scan cannot certify 2% on 200 items, nor does it show error > 2%
    assert choose_threshold(conf, ok, alpha=0.02, delta=0.05).threshold is None
    assert cp_lower(6, 200, 0.05) <= 0.02
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold == 0.9 and certifier.certificate is result
    assert (result.n_calibration, result.n_above, result.errors_above) == (200, 200, 6)  # counted on this window
    assert certifier.losses == 0 and certifier.kept == 1


def test_evidence_against_the_threshold_in_force_loses_it() -> None:
    conf, ok = _window(errors=30)  # 15% wrong above the threshold in force: its error is above 2% with confidence
    assert cp_lower(30, 200, 0.05) > 0.02
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold is None and certifier.certificate is None
    assert certifier.losses == 1 and certifier.kept == 0


def test_a_scan_that_certifies_lower_replaces_the_threshold_in_force() -> None:
    conf = np.r_[np.full(300, 0.8), np.full(100, 0.5)]
    ok = np.r_[np.ones(300, dtype=bool), np.zeros(100, dtype=bool)]
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold is not None and 0.5 < result.threshold < 0.9 and result.n_above == 300
    assert certifier.certificate is result and certifier.kept == 0 and certifier.losses == 0


def test_a_scan_that_certifies_only_higher_keeps_the_threshold_in_force_without_evidence() -> None:
    conf = np.r_[np.full(300, 0.99), np.full(100, 0.5)]  # nothing between 0.5 and 0.99: the scan stops at 0.99
    ok = np.r_[np.ones(300, dtype=bool), np.zeros(100, dtype=bool)]
    assert (choose_threshold(conf, ok, alpha=0.02, delta=0.05).threshold or 0.0) > 0.9
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold == 0.9 and (result.n_above, result.errors_above) == (300, 0)
    assert certifier.kept == 1 and certifier.losses == 0


def test_a_higher_certificate_replaces_one_the_window_does_not_certify() -> None:
    # Between 0.9 and 0.99: 100 items, 4 wrong. Above 0.9 the error is 1%, not shown above 2%, but not certified
    # at 2% either: the threshold in force stood only for lack of evidence, and 0.99 is certified on this window.
    conf = np.r_[np.full(300, 0.99), np.full(100, 0.92)]
    ok = np.r_[np.ones(300, dtype=bool), np.arange(100) >= 4]
    assert cp_lower(4, 400, 0.05) <= 0.02 < float(cp_upper(4, 400, 0.05))
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold is not None and result.threshold > 0.92
    assert (result.n_above, result.errors_above) == (300, 0)
    assert certifier.certificate is result and certifier.kept == 0 and certifier.losses == 0


def test_a_higher_certificate_replaces_one_the_window_shows_wrong() -> None:
    conf = np.r_[np.full(300, 0.99), np.full(100, 0.92)]  # between 0.9 and 0.99: 100 items, 30 wrong
    ok = np.r_[np.ones(300, dtype=bool), np.arange(100) >= 30]
    assert cp_lower(30, 400, 0.05) > 0.02
    certifier = _certifier()
    result = certifier.update(conf, ok)
    assert result.threshold is not None and result.threshold > 0.92 and result.n_above == 300
    assert certifier.certificate is result and certifier.kept == 0


def test_after_drift_the_first_certificate_comes_from_run_valid_checkpoints() -> None:
    cert = PerBatchCertifier(0.05, 0.05, min_size=50, window=4000)
    conf, ok = np.linspace(1.0, 0.9, 200), np.ones(200, dtype=bool)
    assert cert.update(conf[:65], ok[:65]).threshold is not None  # one scan at delta: 59 error-free items suffice
    cert.reset()  # drift: the certificate is withdrawn
    assert cert.certificate is None and cert.losses == 1
    # The same evidence on the new segment is not enough: the first checkpoint is 72 items, tested at delta / 2.
    assert cert.update(conf[:65], ok[:65]).threshold is None
    first = cert.update(conf[:80], ok[:80])
    assert first.threshold is not None and first.n_calibration == 72 and cert.recovering is None
    later = cert.update(conf[:200], ok[:200])  # from then on, per-batch scans of the window again
    assert later.threshold is not None and later.threshold < first.threshold and later.n_calibration == 200
