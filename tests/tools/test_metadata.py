"""Numeric metadata encoding: quantile step edges, missing values, warm-start column mapping, and what steps let
a linear classifier learn (a label that holds in a middle range of a value)."""

from __future__ import annotations

import numpy as np

from policies.model import TextClassifierSpec
from tests.tools.helpers import predict
from tools.base import Batch, Item, TrainingSet
from tools.metadata import MetadataEncoding, metadata_values, step_edges
from tools.text_classifier import TextClassifier


def test_step_edges_are_data_values_above_the_minimum() -> None:
    wind = np.repeat(np.arange(10.0, 165.0, 5.0), 3)  # knots in 5-knot steps, like HURDAT2
    edges = step_edges(wind, 8)
    assert 1 <= len(edges) <= 7 and np.all(np.diff(edges) > 0)
    assert set(edges.tolist()) <= set(wind.tolist()) and edges.min() > wind.min()
    assert len(step_edges(np.arange(40.0), 64)) == 39  # more bins than distinct values: every value but the least
    assert len(step_edges(wind, 0)) == len(step_edges(np.full(9, 3.0), 16)) == len(step_edges(np.zeros(0), 4)) == 0


def test_encoding_columns_values_flags_and_steps() -> None:
    raw = np.array([[10.0, 1.0], [35.0, np.nan], [np.nan, 2.0], [64.0, 3.0]])
    enc = MetadataEncoding.fit(raw, bins=4)
    assert [e.tolist() for e in enc.edges] == [[35.0, 64.0], [2.0, 3.0]]
    x = enc.encode(raw)
    assert x.shape == (4, enc.width) == (4, 2 * 2 + 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 2:4], np.isnan(raw))  # missing flags
    np.testing.assert_array_equal(x[:, 4:6], [[0, 0], [1, 0], [0, 0], [1, 1]])  # wind >= 35, wind >= 64
    np.testing.assert_array_equal(x[:, 6:8], [[0, 0], [0, 0], [1, 0], [1, 1]])  # a missing value sets no step
    assert x[2, 0] == 0.0 and x[1, 1] == 0.0  # missing -> standardised 0
    linear = MetadataEncoding.fit(raw)
    assert linear.width == 4 and linear.encode(raw).shape == (4, 4)


def test_rows_in_maps_values_flags_and_shared_edges() -> None:
    old = MetadataEncoding(np.zeros(2), np.ones(2), (np.array([20.0, 35.0]), np.array([5.0])))
    new = MetadataEncoding(np.zeros(2), np.ones(2), (np.array([35.0, 50.0, 64.0]), np.zeros(0)))
    # new columns: v0 v1 f0 f1 | 35 50 64 ; old columns: v0 v1 f0 f1 | 20 35 | 5
    assert new.rows_in(old).tolist() == [0, 1, 2, 3, 5, -1, -1]
    assert old.rows_in(new).tolist() == [0, 1, 2, 3, -1, 4, -1]


def _readings(n: int, seed: int) -> tuple[list[Item], np.ndarray]:
    temps = np.random.default_rng(seed).uniform(-10, 40, n)
    items = [Item(f"m{seed}-{i}", "reading from the sensor", {"temp": float(t)}) for i, t in enumerate(temps)]
    return items, ((temps >= 10) & (temps < 20)).astype(np.int64)  # "mild" only in a middle range


def test_steps_let_a_linear_classifier_learn_a_range() -> None:
    labels = ("other", "mild")
    train, y = _readings(600, 1)
    test, y_test = _readings(400, 2)
    accuracy = {}
    for bins in (0, 16):
        clf = TextClassifier(TextClassifierSpec(name="clf", metadata_features=["temp"], metadata_bins=bins, c=10.0),
                             labels)
        clf.fit(TrainingSet(Batch(train), y, labels))
        clf.fit(TrainingSet(Batch(train[:500]), y[:500], labels))  # a refit warm-starts from shifted edges
        votes = predict(clf, test, labels)
        accuracy[bins] = float((votes.probs.argmax(axis=1) == y_test).mean())
    assert accuracy[16] >= 0.95 and accuracy[0] <= 0.85, accuracy  # linear: ~0.8, always "other"


def test_metadata_values_are_numbers_or_nan() -> None:
    batch = Batch([Item("a", None, {"x": "2.5", "y": True}), Item("b", None, {"x": "n/a", "y": float("inf")})])
    values = metadata_values(batch, ("x", "y", "z"))
    np.testing.assert_array_equal(np.isnan(values), [[False, False, True], [True, True, True]])
    assert values[0, 0] == 2.5 and values[0, 1] == 1.0


def test_time_parts_of_a_metadata_time() -> None:
    batch = Batch([Item("a", None, {"datetime": "1975-06-27T18:30Z"}), Item("b", None, {"t": "2001:02:03 04:06:00"}),
                   Item("c", None, {"datetime": "soon"}), Item("d", None, {"datetime:year": 1999})])
    keys = ("datetime:year", "datetime:month", "datetime:dayofyear", "datetime:hour", "t:weekday", "t:day")
    values = metadata_values(batch, keys)
    np.testing.assert_allclose(values[0, :4], [1975, 6, 178, 18.5])
    np.testing.assert_allclose(values[1, 4:], [5, 3])  # EXIF time; 3 Feb 2001 was a Saturday
    assert np.isnan(values[2]).all()  # not a time: missing
    assert values[3, 0] == 1999  # a real key with the separator in its name wins
