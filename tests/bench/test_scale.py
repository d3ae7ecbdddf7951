"""The long-stream benchmark's synthetic stream and its order through the replay's shuffle."""

from __future__ import annotations

from collections import Counter

from bench.scale import Window, build_stream, steadier
from bench.synthetic import StreamSpec, stream
from service.offline.replay import shuffled


def _rows(spec: StreamSpec) -> list[tuple[str, str, str]]:
    return [(r.item.key, r.item.text or "", r.label) for chunk in stream(spec, chunk=700) for r in chunk]


def test_the_stream_is_deterministic_by_seed_and_chunk_independent():
    spec = StreamSpec(items=2_000, vocab=3_000, seed=7)
    a = _rows(spec)
    assert a == _rows(spec)
    assert a != _rows(StreamSpec(items=2_000, vocab=3_000, seed=8))
    assert len({k for k, _, _ in a}) == 2_000


def test_classes_are_zipf_and_noise_is_about_the_asked_share():
    spec = StreamSpec(items=6_000, vocab=3_000, noise=0.0, drift_at=None, seed=1)
    counts = Counter(label for _, _, label in _rows(spec))
    assert counts.most_common()[0][0] == "class_0" and counts["class_0"] > 2 * counts["class_7"] > 0


def test_drift_moves_topic_words_to_another_class():
    """After the drift point a class's texts share fewer words with its texts before it."""
    spec = StreamSpec(items=4_000, vocab=3_000, noise=0.0, drift_at=0.5, topic_share=0.9, seed=2)
    rows = _rows(spec)

    def words(part: list[tuple[str, str, str]]) -> set[str]:
        return {w for _, text, label in part if label == "class_0" for w in text.split()}

    before, after = words(rows[:1000]), words(rows[1000:2000])
    late = words(rows[2000:3000])
    assert len(before & after) > len(before & late)


def test_the_replay_shuffle_gives_back_the_generated_order():
    spec = StreamSpec(items=500, vocab=2_000, seed=3)
    generated = [r.item.key for chunk in stream(spec) for r in chunk]
    assert [r.item.key for r in shuffled(build_stream(spec, 5), 5, None)] == generated


def _window(end: int, items_s: float, cpu_ms: float) -> Window:
    return Window(end, items_s, {"tools": cpu_ms}, 0.0, 0.0, 0, 0.0, 0.0, 0.0)


def test_the_steadier_comparison_uses_full_windows_around_the_reference_and_at_the_end():
    same = [_window(50 * (i + 1), 100.0, 1.0) for i in range(10)]
    assert steadier(same, 100) == (1.0, 1.0)
    # the end twice as slow and twice the CPU per item; a partial last window, 10x slower, is left out
    slow_end = same[:7] + [_window(50 * (i + 1), 50.0, 2.0) for i in range(7, 10)] + [_window(510, 10.0, 9.0)]
    rate, cpu = steadier(slow_end, 100)
    assert rate == 0.5 and cpu == 0.5
    # the reference is the three full windows around the first at or past ``ref_end``: 50-150 here, not 200-300
    fast_start = [_window(50, 200.0, 1.0), _window(100, 200.0, 1.0), _window(150, 200.0, 1.0), *same[3:]]
    assert steadier(fast_start, 100)[0] == 0.5
