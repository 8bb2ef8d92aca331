"""The training profile (``model.profile.json``): what the model saw when it was trained.

``modeldeploy export`` writes it beside ``model.onnx``; the server reads it to count inputs
that fall outside it and to score drift (see ``quality``). This module only parses and
validates: every error names the field (``features[2].histogram.edges``) and what is wrong
with it. Unknown keys are ignored, so that a newer exporter can add information; a newer
``format`` version is refused.

::

    {"format": "modeldeploy.profile/v1",
     "model": {"sha256": HEX, "input": NAME, "rows": N},
     "features": [
       {"name", "column", "kind": "numeric", "min", "max", "missing", "quantiles": {...},
        "histogram": {"edges": [k + 1 increasing], "fractions": [k, summing to 1]}},
       {"name", "column", "kind": "categorical", "categories": {VALUE: SHARE}, "missing"}],
     "prediction": {"kind": "classification", "output": NAME, "classes": {LABEL: SHARE}}
                 | {"kind": "regression", "output": NAME, "histogram": {...}}}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .fetch import is_sha256

PROFILE_FORMAT = "modeldeploy.profile/v1"
SUM_TOLERANCE = 0.01
"""Shares may be rounded by the exporter: a sum within this of 1 is accepted."""


class ProfileError(ValueError):
    """The profile cannot be used; the message names the field."""


@dataclass(frozen=True)
class Histogram:
    """Bins ``[edges[i], edges[i+1])`` (the last one closed) and the share of values in each."""

    edges: tuple[float, ...]
    fractions: tuple[float, ...]


@dataclass(frozen=True)
class NumericFeature:
    """A numeric column: its training range and distribution."""

    name: str
    column: int
    min: float
    max: float
    missing: float
    histogram: Histogram
    quantiles: dict[float, float]


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical column: the categories seen in training and their shares."""

    name: str
    column: int
    categories: dict[str, float]
    missing: float


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Prediction:
    """What the model answered on the training sample."""

    kind: Literal["classification", "regression"]
    output: str
    classes: dict[str, float] | None = None
    histogram: Histogram | None = None


@dataclass(frozen=True)
class Profile:
    """A validated training profile."""

    input: str
    features: tuple[Feature, ...]
    sha256: str | None = None
    rows: int | None = None
    prediction: Prediction | None = None


def read_profile(path: Path, *, sha256: str | None = None) -> Profile:
    """Read, verify (when ``sha256`` is given) and parse a profile file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"profile file {path} does not exist") from None
    except OSError as exc:
        raise ProfileError(f"profile file {path} cannot be read: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise ProfileError(
            f"sha256 mismatch for the profile {path}: expected {sha256.lower()}, "
            f"file has {digest}; refusing to use it"
        )
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {path} is not valid JSON: {exc}") from None
    return parse_profile(doc)


def parse_profile(doc: object) -> Profile:
    """Validate a decoded profile document."""
    top = _object(doc, "the profile")
    fmt = top.get("format")
    if fmt != PROFILE_FORMAT:
        if isinstance(fmt, str) and fmt.startswith("modeldeploy.profile/"):
            raise ProfileError(
                f"format: version {fmt.rsplit('/', 1)[1]!r} is not supported; this server "
                f"reads {PROFILE_FORMAT!r}"
            )
        raise ProfileError(f"format: must be {PROFILE_FORMAT!r}, got {fmt!r}")
    model = _object(top.get("model"), "model")
    sha256 = model.get("sha256")
    if sha256 is not None:
        if not is_sha256(sha256):
            raise ProfileError(f"model.sha256: must be 64 hexadecimal characters, got {sha256!r}")
        sha256 = sha256.lower()
    name = model.get("input")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"model.input: must be the name of the model's input, got {name!r}")
    rows = model.get("rows")
    if rows is not None and (type(rows) is not int or rows < 0):
        raise ProfileError(f"model.rows: must be a non-negative integer, got {rows!r}")
    raw_features = top.get("features")
    if not isinstance(raw_features, list) or not raw_features:
        raise ProfileError("features: must be a non-empty array")
    features = tuple(_feature(raw, f"features[{i}]") for i, raw in enumerate(raw_features))
    for attribute in ("name", "column"):
        seen: dict[object, int] = {}
        for index, feature in enumerate(features):
            value = getattr(feature, attribute)
            if value in seen:
                raise ProfileError(
                    f"features[{index}].{attribute}: {value!r} is already used by "
                    f"features[{seen[value]}]"
                )
            seen[value] = index
    prediction = None
    if top.get("prediction") is not None:
        prediction = _prediction(_object(top["prediction"], "prediction"))
    return Profile(name, features, sha256, rows, prediction)


def _feature(raw: object, where: str) -> Feature:
    doc = _object(raw, where)
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}.name: must be a non-empty string, got {name!r}")
    column = doc.get("column")
    if type(column) is not int or column < 0:
        raise ProfileError(f"{where}.column: must be a non-negative integer, got {column!r}")
    missing = _share(doc.get("missing", 0.0), f"{where}.missing")
    kind = doc.get("kind")
    if kind == "numeric":
        low = _number(doc.get("min"), f"{where}.min")
        high = _number(doc.get("max"), f"{where}.max")
        if low > high:
            raise ProfileError(f"{where}.min: {low} is greater than max {high}")
        quantiles = _quantiles(doc.get("quantiles"), f"{where}.quantiles")
        histogram = _histogram(doc.get("histogram"), f"{where}.histogram")
        return NumericFeature(name, column, low, high, missing, histogram, quantiles)
    if kind == "categorical":
        categories = _shares(doc.get("categories"), f"{where}.categories")
        return CategoricalFeature(name, column, categories, missing)
    raise ProfileError(f"{where}.kind: must be 'numeric' or 'categorical', got {kind!r}")


def _prediction(doc: dict[str, Any]) -> Prediction:
    output = doc.get("output")
    if not isinstance(output, str) or not output:
        raise ProfileError(f"prediction.output: must be the name of an output, got {output!r}")
    kind = doc.get("kind")
    if kind == "classification":
        return Prediction(kind, output, classes=_shares(doc.get("classes"), "prediction.classes"))
    if kind == "regression":
        return Prediction(
            kind, output, histogram=_histogram(doc.get("histogram"), "prediction.histogram")
        )
    raise ProfileError(f"prediction.kind: must be 'classification' or 'regression', got {kind!r}")


def _histogram(raw: object, where: str) -> Histogram:
    doc = _object(raw, where)
    edges = doc.get("edges")
    fractions = doc.get("fractions")
    if not isinstance(edges, list) or len(edges) < 2:
        raise ProfileError(f"{where}.edges: must be an array of at least 2 numbers")
    values = tuple(_number(v, f"{where}.edges[{i}]") for i, v in enumerate(edges))
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise ProfileError(
                f"{where}.edges: must be increasing, but edges[{i}] = {values[i]} follows "
                f"{values[i - 1]}"
            )
    if not isinstance(fractions, list) or len(fractions) != len(values) - 1:
        raise ProfileError(
            f"{where}.fractions: must be an array of {len(values) - 1} shares (one per bin "
            f"between the {len(values)} edges)"
        )
    shares = tuple(_share(v, f"{where}.fractions[{i}]") for i, v in enumerate(fractions))
    if abs(sum(shares) - 1.0) > SUM_TOLERANCE:
        raise ProfileError(f"{where}.fractions: must sum to 1, they sum to {sum(shares):.4g}")
    return Histogram(values, shares)


def _shares(raw: object, where: str) -> dict[str, float]:
    doc = _object(raw, where)
    if not doc:
        raise ProfileError(f"{where}: must name at least one value")
    shares = {str(key): _share(value, f"{where}[{key!r}]") for key, value in doc.items()}
    total = sum(shares.values())
    # The shares of a long tail may have been left out, never more than everything.
    if total > 1.0 + SUM_TOLERANCE or total <= 0.0:
        raise ProfileError(
            f"{where}: shares must sum to at most 1 (and more than 0), got {total:.4g}"
        )
    return shares


def _quantiles(raw: object, where: str) -> dict[float, float]:
    if raw is None:
        return {}
    doc = _object(raw, where)
    result: dict[float, float] = {}
    for key, value in doc.items():
        try:
            level = float(key)
        except ValueError:
            level = math.nan
        if not 0.0 <= level <= 1.0:
            raise ProfileError(f"{where}: key {key!r} is not a level between 0 and 1")
        result[level] = _number(value, f"{where}[{key!r}]")
    ordered = sorted(result.items())
    for (low_level, low), (high_level, high) in itertools.pairwise(ordered):
        if high < low:
            raise ProfileError(
                f"{where}: the {high_level:g} quantile ({high}) is below the {low_level:g} "
                f"quantile ({low})"
            )
    return dict(ordered)


def _object(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be a JSON object, got {_kind(raw)}")
    return raw


def _number(raw: object, where: str) -> float:
    if type(raw) not in (int, float) or not math.isfinite(raw):  # type: ignore[arg-type]
        raise ProfileError(f"{where}: must be a finite number, got {raw!r}")
    return float(raw)  # type: ignore[arg-type]


def _share(raw: object, where: str) -> float:
    value = _number(raw, where)
    if not 0.0 <= value <= 1.0:
        raise ProfileError(f"{where}: must be a share between 0 and 1, got {value}")
    return value


def _kind(raw: object) -> str:
    if raw is None:
        return "nothing (missing or null)"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(raw), type(raw).__name__)
