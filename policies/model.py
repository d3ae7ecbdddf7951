"""Policy models: what an operator can tune, validated with messages that say what to fix.

A policy is immutable once stored and identified by ``project/version``. Operators change
behaviour only by creating and activating a new version; old versions stay for rollback and
for explaining old labels.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from policies.embedding_specs import ImageEmbeddingSpec as ImageEmbeddingSpec
from policies.embedding_specs import TextEmbeddingSpec as TextEmbeddingSpec
from policies.planner import PlannerSpec as PlannerSpec
from policies.spec_base import ToolSpecBase as ToolSpecBase
from policies.spec_base import _Strict

LABEL_PATTERN = re.compile(r"^[^\s].{0,127}$")


# --- learned tools --------------------------------------------------------------------------------


TIME_PARTS = ("year", "month", "day", "dayofyear", "weekday", "hour")


class TextClassifierSpec(ToolSpecBase):
    """Logistic regression over hashed word and character n-grams, trained on ground truth."""

    kind: Literal["text_classifier"] = "text_classifier"
    n_features: int = Field(default=2**18, ge=2**8, le=2**22)
    char_ngrams: bool = Field(default=True, description="Add character 2-4 grams to word 1-2 grams.")
    c: float = Field(default=10.0, gt=0.0, description="Inverse regularisation strength.")
    min_examples: int = Field(default=8, ge=2, description="Ground-truth items needed before it votes.")
    metadata_features: list[str] = Field(
        default_factory=list,
        description="Numeric metadata keys added as features (e.g. weather); 'key:part' takes a part of the time "
                    f"in metadata key (ISO 8601 or EXIF), part one of {', '.join(TIME_PARTS)} (e.g. datetime:month).",
    )
    metadata_bins: int = Field(
        default=0, ge=0, le=256,
        description="0: metadata features enter linearly. At least 2: each also gets step indicators (x >= edge) "
                    "at up to metadata_bins - 1 quantile edges of its training values, so the model can learn "
                    "thresholds and ranges (e.g. storm type from wind speed).",
    )

    @field_validator("metadata_features")
    @classmethod
    def _time_parts_known(cls, value: list[str]) -> list[str]:
        for key in value:
            source, sep, part = key.rpartition(":")
            if sep and (part not in TIME_PARTS or not source):
                raise ValueError(f"{key!r}: a time feature is 'key:part' with part one of {', '.join(TIME_PARTS)}")
        return value

    @model_validator(mode="after")
    def _bins_need_features(self) -> TextClassifierSpec:
        if self.metadata_bins == 1:
            raise ValueError("metadata_bins must be 0 (values enter linearly) or at least 2 (got 1)")
        if self.metadata_bins and not self.metadata_features:
            raise ValueError(f"metadata_bins is {self.metadata_bins} but metadata_features is empty; list the "
                             "numeric metadata keys to bin, or remove metadata_bins")
        return self


class ImageClassifierSpec(ToolSpecBase):
    """Logistic regression over image features (downscaled pixels + gradient histograms), trained on ground truth."""

    kind: Literal["image_classifier"] = "image_classifier"
    size: int = Field(default=16, ge=4, le=64, description="Images are resized to size x size greyscale pixels.")
    cells: int = Field(default=4, ge=1, le=16, description="Gradient histograms over a cells x cells grid.")
    orientations: int = Field(default=9, ge=2, le=18)
    c: float = Field(default=1.0, gt=0.0, description="Inverse regularisation strength.")
    min_examples: int = Field(default=20, ge=2, description="Ground-truth items needed before it votes.")


class RetrievalSpec(ToolSpecBase):
    """k nearest human-labeled examples; the vote is their similarity-weighted label mix."""

    kind: Literal["retrieval"] = "retrieval"
    k: int = Field(default=10, ge=1, le=200)
    min_similarity: float = Field(default=0.2, ge=0.0, le=1.0)
    embedding: Literal["hashed_tfidf", "minilm"] = "hashed_tfidf"
    n_features: int = Field(default=2**18, ge=2**8, le=2**22)


# --- rules ----------------------------------------------------------------------------------------


class Rule(_Strict):
    """One labeling function: when it matches, it votes ``label`` with ``strength``; else abstains."""

    label: str
    keywords: list[str] = Field(default_factory=list)
    regex: str | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Exact-match conditions on item metadata."
    )
    strength: float = Field(default=0.9, gt=0.0, lt=1.0)

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex does not compile ({exc}); fix the pattern") from None
        return value

    @model_validator(mode="after")
    def _has_condition(self) -> Rule:
        if not (self.keywords or self.regex or self.metadata):
            raise ValueError("a rule needs at least one of keywords, regex or metadata")
        return self


class RulesSpec(ToolSpecBase):
    kind: Literal["rules"] = "rules"
    cost: float = Field(default=0.1, ge=0.0)
    rules: list[Rule] = Field(min_length=1)


class RandomSpec(ToolSpecBase):
    """A voter that votes a uniformly random label: a control the agent must learn to ignore."""

    kind: Literal["random"] = "random"
    strength: float = Field(default=0.9, gt=0.0, lt=1.0)
    seed: int = 0


# --- external API enrichment ---------------------------------------------------------------------

WEATHER_VARIABLES = ("temperature_2m", "precipitation", "weather_code", "wind_speed_10m", "pressure_msl",
                     "relative_humidity_2m", "cloud_cover", "wind_gusts_10m", "surface_pressure")


class WeatherSpec(ToolSpecBase):
    """Open-Meteo weather at the item's place and hour, written into its metadata as ``wx_<variable>``.

    An enrichment tool: the planner runs it before the voters, which read the values through their
    ``metadata_features``; it abstains itself (its evidence lists the values it fetched).
    """

    kind: Literal["weather"] = "weather"
    cost: float = Field(default=0.1, ge=0.0)
    archive_url: str | None = Field(default=None, description="Archive endpoint; default from settings.")
    forecast_url: str | None = Field(default=None, description="Forecast endpoint; default from settings.")
    hourly: list[str] = Field(default_factory=lambda: ["wind_speed_10m", "pressure_msl", "temperature_2m",
                                                       "precipitation", "weather_code"], min_length=1)
    wind_speed_unit: Literal["kmh", "ms", "mph", "kn"] = "kmh"
    lat_key: str = "lat"
    lon_key: str = "lon"
    time_keys: list[str] = Field(default_factory=lambda: ["time", "datetime", "DateTimeOriginal"], min_length=1)
    prefix: str = Field(default="wx_", description="Metadata key prefix of the fetched values.")
    place_decimals: int = Field(default=1, ge=0, le=4, description="Cache and request places rounded to this.")
    archive_lag_days: int = Field(default=5, ge=0, description="Older than this: archive endpoint; else forecast.")
    timeout_seconds: float = Field(default=5.0, gt=0.0, le=120.0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.2, ge=0.0, le=30.0)
    max_concurrency: int = Field(default=8, ge=1, le=256)
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures that open the breaker.")
    breaker_reset_seconds: float = Field(default=30.0, ge=0.0, description="Open time before a trial request.")
    cache_size: int = Field(default=200_000, ge=0, description="Place-hours kept in the cache.")

    @field_validator("hourly")
    @classmethod
    def _known_variables(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in WEATHER_VARIABLES]
        if unknown:
            raise ValueError(f"unknown hourly variable {unknown[0]!r} (known: {', '.join(WEATHER_VARIABLES)})")
        return value


# --- model voters ---------------------------------------------------------------------------------


class LLMSpec(ToolSpecBase):
    """A chat model picks one label; item text is passed as data; instruction-like items are escalated."""

    kind: Literal["llm"] = "llm"
    model: str | None = Field(default=None, description="Model name; default from settings (llm_model).")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint; default from settings.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    strength: float = Field(default=0.8, gt=0.0, lt=1.0, description="Probability put on the label it names.")
    examples_from: str | None = Field(default=None, description="A retrieval tool whose neighbours are few-shot "
                                                                 "examples.")
    examples: int = Field(default=5, ge=0, le=50, description="Most few-shot examples per item.")
    max_chars: int = Field(default=4000, ge=10, description="Item and example text is cut to this length.")
    timeout_seconds: float = Field(default=30.0, gt=0.0, le=600.0)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    price_per_1k_input: float = Field(default=0.0, ge=0.0, description="Price of 1000 input tokens (evidence).")
    price_per_1k_output: float = Field(default=0.0, ge=0.0, description="Price of 1000 output tokens (evidence).")
    json_mode: bool = Field(default=True, description="Ask the endpoint for JSON output (response_format "
                                                      "json_object); turn off for servers that reject it.")


class RemoteModelSpec(ToolSpecBase):
    """A remote model as a voter: a Label Studio ML backend's /predict or a generic JSON endpoint."""

    kind: Literal["remote_model"] = "remote_model"
    url: str = Field(min_length=1, pattern=r"^https?://", description="The endpoint, e.g. http://ml:9090/predict.")
    protocol: Literal["label_studio", "json"] = "label_studio"
    text_key: str = Field(default="text", description="Task data key of the item text (Label Studio).")
    label_config: str | None = Field(default=None, description="Label Studio labeling config sent with tasks.")
    project: str | None = Field(default=None, description="Label Studio project id sent with tasks.")
    strength: float = Field(default=0.8, gt=0.0, lt=1.0, description="Probability of a label given without score.")
    max_batch: int = Field(default=64, ge=1, le=10_000, description="Items per request.")
    timeout_seconds: float = Field(default=10.0, gt=0.0, le=600.0)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.2, ge=0.0, le=30.0)
    max_concurrency: int = Field(default=4, ge=1, le=256)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, ge=0.0)


_ToolSpecs = (TextClassifierSpec | ImageClassifierSpec | RetrievalSpec | RulesSpec | RandomSpec | WeatherSpec
              | LLMSpec | RemoteModelSpec | TextEmbeddingSpec | ImageEmbeddingSpec)
ToolSpec = Annotated[_ToolSpecs, Field(discriminator="kind")]


def _kind_of(spec: type[ToolSpecBase]) -> str:
    (kind,) = get_args(spec.model_fields["kind"].annotation)
    return str(kind)


# Every tool kind, in the union's order: read from the specs' ``kind`` literals, so a new spec adds its kind here.
TOOL_KINDS: tuple[str, ...] = tuple(_kind_of(spec) for spec in get_args(_ToolSpecs))


Certification = Literal["per_batch", "anytime", "betting"]
CERTIFICATION_RULES: tuple[str, ...] = get_args(Certification)  # derived: a new rule is offered everywhere
DEFAULT_CERTIFICATION: Certification = "betting"  # valid for the whole run (DESIGN-NOTES section 14)


class Policy(_Strict):
    """One version of a project's labeling policy."""

    project: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: int = Field(default=1, ge=1)
    description: str = ""
    data_kind: Literal["text", "image", "tabular", "mixed"] = "text"
    labels: list[str]
    always_review: list[str] = Field(default_factory=list)
    critical_labels: list[str] = Field(
        default_factory=list,
        description="Labels whose items must be auto-labeled right at the target rate on their own, not only on "
        "average (an out-of-scope or 'other' class the tools confuse with real ones): the certificate also bounds "
        "the error among auto-labeled items whose true label is one of these. Each needs its own calibration items "
        "above the threshold, so a rare critical label delays the certificate.")
    target_precision: float = Field(description="Auto-label precision the guarantee aims for.")
    confidence: float = Field(default=0.95, description="1 - delta: confidence of the guarantee.")
    tools: list[ToolSpec] = Field(min_length=1)
    budget: float = Field(default=10.0, description="Cost units the agent may spend per item.")
    audit_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    min_calibration: int = Field(default=150, ge=10)
    calibration_window: int = Field(default=4000, ge=50)
    certification: Certification = Field(
        default=DEFAULT_CERTIFICATION,
        description="betting (the default): one test supermartingale per threshold of a fixed grid, valid for the "
        "whole run with a fixed scorer, however often it is read (banking77 39.2% human reviews, sms_spam 14.2%); "
        "anytime: tests at count-scheduled checkpoints with delta spent over the run, valid for the whole run with "
        "a fixed scorer (dearer); per_batch: one fixed-sequence test of the calibration window after every batch, "
        "each test valid alone, not the run (banking77 37.9%, sms_spam 10.8%).")
    overlap: int = Field(default=1, ge=1, le=10)
    max_overlap: int = Field(default=3, ge=1, le=10)
    lease_seconds: int = Field(default=300, ge=5, le=86400)
    retrain_every: int = Field(default=50, ge=1)
    planner: PlannerSpec = Field(default_factory=PlannerSpec)

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, labels: list[str]) -> list[str]:
        if not labels:
            raise ValueError("the label set is empty; list at least two labels")
        if len(labels) < 2:
            raise ValueError("a label set needs at least two labels")
        seen: set[str] = set()
        for label in labels:
            if not isinstance(label, str) or not LABEL_PATTERN.match(label):
                raise ValueError(f"label {label!r} must be 1-128 characters and not start with a space")
            if label in seen:
                raise ValueError(f"label {label!r} is listed twice; labels must be unique")
            seen.add(label)
        return labels

    @field_validator("target_precision")
    @classmethod
    def _target_in_range(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"target_precision must be strictly between 0 and 1 (got {value})")
        return value

    @field_validator("confidence")
    @classmethod
    def _confidence_in_range(cls, value: float) -> float:
        if not 0.5 <= value < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1) (got {value}); 0.95 is usual")
        return value

    @field_validator("budget")
    @classmethod
    def _budget_positive(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"budget must not be negative (got {value}); use 0 to call no tool")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Policy:
        names = [tool.name for tool in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tools: name {dupes[0]!r} is used twice; give each tool a unique name")
        unknown = [lab for lab in self.always_review if lab not in self.labels]
        if unknown:
            raise ValueError(f"always_review: {unknown[0]!r} is not in labels; add it or remove it")
        stray = [lab for lab in self.critical_labels if lab not in self.labels]
        if stray:
            raise ValueError(f"critical_labels: {stray[0]!r} is not in labels; add it or remove it")
        if len(set(self.critical_labels)) != len(self.critical_labels):
            raise ValueError("critical_labels: a label is listed twice")
        for tool in self.tools:
            if isinstance(tool, RulesSpec):
                for rule in tool.rules:
                    if rule.label not in self.labels:
                        raise ValueError(f"tools.{tool.name}: rule label {rule.label!r} is not in labels")
            if isinstance(tool, TextEmbeddingSpec):
                stray = [lab for lab in tool.label_descriptions if lab not in self.labels]
                if stray:
                    raise ValueError(f"tools.{tool.name}: label_descriptions names {stray[0]!r}, not in labels")
            if isinstance(tool, LLMSpec) and tool.examples_from is not None and not any(
                    t.name == tool.examples_from and isinstance(t, RetrievalSpec) for t in self.tools):
                raise ValueError(f"tools.{tool.name}: examples_from {tool.examples_from!r} is not a retrieval tool "
                                 "of this policy")
        planner = self.planner
        if planner.settle_confidence is not None and all(planner.is_cheap(t.cost) for t in self.enabled_tools()):
            raise ValueError("planner.settle_confidence is set, but no tool costs more than planner.cheap_cost: "
                             "nothing would be spared; remove it, or give the dear tool its real cost")
        if self.max_overlap < self.overlap:
            raise ValueError("max_overlap must be >= overlap")
        if not any(tool.enabled for tool in self.tools):
            raise ValueError("tools: every tool is disabled; enable at least one")
        return self

    # ---------------------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"{self.project}/{self.version}"

    @property
    def alpha(self) -> float:
        """Allowed error rate among auto labels."""
        return 1.0 - self.target_precision

    @property
    def settle_level(self) -> float:
        """The cheap pool's confidence that settles an item without dear tools (``planner.settle_confidence``)."""
        level = self.planner.settle_confidence
        return 1.0 if level is None else level  # 1.0: nothing settles (agent.cascade.settles)

    @property
    def delta(self) -> float:
        """Allowed probability that the guarantee fails."""
        return 1.0 - self.confidence

    def enabled_tools(self) -> list[ToolSpecBase]:
        return [tool for tool in self.tools if tool.enabled]

    def with_version(self, version: int) -> Policy:
        return self.model_copy(update={"version": version})
