"""A synthetic labeled text stream of any length, deterministic by seed (for ``python -m bench scale``).

Vocabulary: ``vocab`` made-up words of two to four syllables. Background words follow a Zipf law shared by
every class; each class has ``topic_words`` words of its own, also Zipf-weighted. An item of class ``c`` has
a Poisson number of words (mean ``words``, at least 3), each from the class's topic with probability
``topic_share`` and from the background otherwise, so short items can be ambiguous. Class frequencies follow
a Zipf law too (the rare classes are rare). A share ``noise`` of labels is replaced by a uniformly drawn class
(the reviewer answers with the noisy label: humans make mistakes too). From ``drift_at`` (a fraction of the
stream, ``None``: never) on, half of every class's topic words are swapped for words of the next class: what
the models learned before the drift point is partly wrong after it.

Items are generated in chunks (:func:`stream`), so the generator itself holds only the vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from service.offline.datasets import LabeledItem
from tools.base import Item

SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    items: int = 100_000
    classes: int = 8
    vocab: int = 20_000
    topic_words: int = 80
    topic_share: float = 0.35
    words: float = 14.0
    noise: float = 0.02
    drift_at: float | None = 0.6
    seed: int = 0


def _vocabulary(rng: np.random.Generator, n: int) -> list[str]:
    words: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        k = int(rng.integers(2, 5))
        w = "".join(SYLLABLES[i] for i in rng.integers(0, len(SYLLABLES), size=k))
        if w not in words:
            words.add(w)
            out.append(w)
    return out


def _zipf(n: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def stream(spec: StreamSpec, chunk: int = 10_000) -> Iterator[list[LabeledItem]]:
    """The stream's items in order, ``chunk`` at a time."""
    rng = np.random.default_rng(spec.seed)
    vocab = np.asarray(_vocabulary(rng, spec.vocab), dtype=object)
    topics = rng.permutation(spec.vocab)[: spec.classes * spec.topic_words].reshape(spec.classes, spec.topic_words)
    drifted = topics.copy()
    half = spec.topic_words // 2
    drifted[:, :half] = np.roll(topics[:, :half], -1, axis=0)  # half the topic words move to the next class
    p_class, p_bg, p_topic = _zipf(spec.classes, 0.8), _zipf(spec.vocab), _zipf(spec.topic_words, 0.9)
    drift_item = None if spec.drift_at is None else int(spec.drift_at * spec.items)
    labels = [f"class_{c}" for c in range(spec.classes)]
    for start in range(0, spec.items, chunk):
        n = min(chunk, spec.items - start)
        cls = rng.choice(spec.classes, size=n, p=p_class)
        lengths = np.maximum(3, rng.poisson(spec.words, size=n))
        noisy = rng.random(n) < spec.noise
        shown = np.where(noisy, rng.integers(0, spec.classes, size=n), cls)
        total = int(lengths.sum())
        owner = np.repeat(np.arange(n), lengths)  # the item each word belongs to
        col = rng.choice(spec.topic_words, size=total, p=p_topic)
        topic_ids = topics[cls[owner], col]
        if drift_item is not None:
            topic_ids = np.where(start + owner >= drift_item, drifted[cls[owner], col], topic_ids)
        ids = np.where(rng.random(total) < spec.topic_share, topic_ids, rng.choice(spec.vocab, size=total, p=p_bg))
        words = vocab[ids]
        ends = np.cumsum(lengths)
        spans = enumerate(zip(ends.tolist(), lengths.tolist(), strict=True))
        out = [LabeledItem(Item(key=f"s{spec.seed}-{start + j}", text=" ".join(words[e - k:e])),
                           labels[int(shown[j])]) for j, (e, k) in spans]
        yield out


def labels(spec: StreamSpec) -> list[str]:
    return [f"class_{c}" for c in range(spec.classes)]
