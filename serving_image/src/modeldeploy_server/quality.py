"""Model-aware monitoring in a worker: inputs against the training profile, and predictions.

Per request the profiled input is checked column by column with numpy on the whole
request, never value by value in Python. Under the ``observe`` policy the rows are only
copied into a staging block; the block is checked when it fills (or when Prometheus
scrapes), so the cost per request is one array copy and the counting is amortised over
``STAGE_ROWS`` rows. Under ``reject`` each request is also checked on its own, and one with
a value outside the profile is refused (422) with the feature and the value named.

Each worker keeps, per feature, the bins of its last ``window`` values (a ring of bin
indices); a snapshot carries their histogram, and the supervisor sums the workers'
histograms before scoring drift (``quality_metrics.psi``).

Predictions are counted for every classifier (an integer or string output with one value
per row, such as skl2onnx's ``label``) and put in a histogram for every single-output float
regressor, with or without a profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import ModelLoadError, Unprocessable
from .profile import CategoricalFeature, NumericFeature, Profile
from .tensors import TensorSpec

STAGE_ROWS = 256
"""Rows collected before they are counted together (observe policy)."""
MISSING = -1
"""Bin index of a missing value: counted as missing, left out of the drift window."""


@dataclass(frozen=True)
class QualityOptions:
    """``--quality-policy`` and ``--drift-window``."""

    policy: Literal["observe", "reject"] = "observe"
    window: int = 1000


class _Categories:
    """Maps a column's values to bin indices: a category's position in the profile,
    ``unseen`` (one past the last) for anything else, ``MISSING`` for NaN or ""."""

    def __init__(self, feature: CategoricalFeature, text: bool) -> None:
        self.feature = feature
        labels = list(feature.categories)
        self.unseen = len(labels)
        self.lookup = {label: index for index, label in enumerate(labels)}
        self.text = text
        self.empty_is_category = "" in feature.categories
        if text:
            self.str_keys, self.str_index = _sorted(np.array(labels, dtype=str))
            encoded = np.array([label.encode() for label in labels], dtype=bytes)
            self.bytes_keys, self.bytes_index = _sorted(encoded)
        else:
            try:
                numbers = np.array([float(label) for label in labels], dtype=np.float64)
            except ValueError:
                raise ModelLoadError(
                    f"profile feature '{feature.name}': the input is numeric but the categories "
                    f"{labels[:5]} are not numbers"
                ) from None
            self.num_keys, self.num_index = _sorted(numbers)

    def codes(self, column: np.ndarray) -> np.ndarray:
        if not self.text:
            values = column.astype(np.float64, copy=False)
            codes = _search(self.num_keys, self.num_index, values, self.unseen)
            codes[np.isnan(values)] = MISSING
            return codes
        first = column[0]
        try:
            if isinstance(first, bytes):
                values = column.astype(bytes)
                codes = _search(self.bytes_keys, self.bytes_index, values, self.unseen)
                empty: object = b""
            else:
                values = column.astype(str)
                codes = _search(self.str_keys, self.str_index, values, self.unseen)
                empty = ""
        except (UnicodeError, ValueError, TypeError):  # mixed or odd items: the slow way
            return np.array([self._code(item) for item in column], dtype=np.int32)
        if not self.empty_is_category:
            codes[values == empty] = MISSING
        return codes

    def _code(self, item: object) -> int:
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        if item == "" and not self.empty_is_category:
            return MISSING
        return self.lookup.get(str(item), self.unseen)


def _sorted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    return keys[order], order.astype(np.int32)


def _search(keys: np.ndarray, index: np.ndarray, values: np.ndarray, unseen: int) -> np.ndarray:
    position = np.searchsorted(keys, values)
    np.minimum(position, len(keys) - 1, out=position)
    return np.where(keys[position] == values, index[position], unseen).astype(np.int32)


class InputMonitor:
    """The profiled input of one model: issue counters and the drift window."""

    def __init__(self, profile: Profile, spec: TensorSpec, options: QualityOptions) -> None:
        text = spec.datatype == "BYTES"
        self.input = spec.name
        self.reject = options.policy == "reject"
        self.window = options.window
        self.numeric = [f for f in profile.features if isinstance(f, NumericFeature)]
        categorical = [f for f in profile.features if isinstance(f, CategoricalFeature)]
        if text and self.numeric:
            raise ModelLoadError(
                f"profile feature '{self.numeric[0].name}' is numeric but input '{spec.name}' "
                "holds strings (BYTES)"
            )
        self.categories = [_Categories(f, text) for f in categorical]
        self.names = [f.name for f in self.numeric] + [f.name for f in categorical]
        self.columns = [f.column for f in self.numeric] + [f.column for f in categorical]
        self.max_column = max(self.columns)
        numeric_columns = [f.column for f in self.numeric]
        self.numeric_index = np.array(numeric_columns, dtype=np.intp)
        self.numeric_in_order = numeric_columns == list(range(len(numeric_columns)))
        self.low = np.array([f.min for f in self.numeric], dtype=np.float64)
        self.high = np.array([f.max for f in self.numeric], dtype=np.float64)
        self._bounds: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}
        # Bins of equal width (what the exporter writes) are found by arithmetic on the whole
        # block; a feature with other edges by a binary search of its column.
        edges = [np.array(f.histogram.edges, dtype=np.float64) for f in self.numeric]
        self.origin = np.array([e[0] for e in edges])
        self.scale = np.array([(len(e) - 1) / (e[-1] - e[0]) for e in edges])
        last = {len(e) - 2 for e in edges}
        # One number when every feature has as many bins (clip is faster with a scalar).
        self.last_bin: float | np.ndarray = (
            float(last.pop()) if len(last) == 1 else np.array([len(e) - 2 for e in edges], float)
        )
        self.irregular = [
            (j, e[1:-1])
            for j, e in enumerate(edges)
            if not np.allclose(np.diff(e), (e[-1] - e[0]) / (len(e) - 1), rtol=1e-6, atol=0)
        ]
        self.unseen = np.array([c.unseen for c in self.categories], dtype=np.int32)
        # Expected shares per bin; a categorical feature's last bin (unseen) expects none.
        self.expected = [list(f.histogram.fractions) for f in self.numeric]
        for feature in categorical:
            total = sum(feature.categories.values())
            self.expected.append([share / total for share in feature.categories.values()] + [0.0])
        self.bins = np.array([len(e) for e in self.expected], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.bins)[:-1])).astype(np.int32)
        n_numeric, n_categorical = len(self.numeric), len(self.categories)
        self.rows = 0
        self.missing = np.zeros(len(self.names), dtype=np.int64)
        self.out_of_range = np.zeros(n_numeric, dtype=np.int64)
        self.unseen_values = np.zeros(n_categorical, dtype=np.int64)
        self.stage_numeric = np.empty((STAGE_ROWS, n_numeric), dtype=np.float64)
        self._scratch = np.empty((STAGE_ROWS, n_numeric), dtype=np.float64)
        self.stage_codes = np.empty((STAGE_ROWS, n_categorical), dtype=np.int32)
        self.staged = 0
        self.ring = np.empty((self.window, len(self.names)), dtype=np.int32)
        self.ring_position = 0
        self.ring_filled = 0

    # -- per request --------------------------------------------------------------------
    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Count a request's values; under ``reject`` refuse one outside the profile."""
        x = inputs.get(self.input)
        if x is None or x.ndim != 2 or x.shape[1] <= self.max_column or x.shape[0] == 0:
            if self.reject and x is not None and x.size:
                raise Unprocessable(
                    f"input '{self.input}' has shape {list(x.shape)}; the training profile "
                    f"describes columns up to {self.max_column}"
                )
            return  # only a model with a dynamic column count gets here: it decides
        numeric = codes = None
        if self.numeric:
            in_order = self.numeric_in_order and x.shape[1] == len(self.numeric)
            numeric = x if in_order else x[:, self.numeric_index]
        if self.categories:
            codes = np.empty((x.shape[0], len(self.categories)), dtype=np.int32)
            for j, category in enumerate(self.categories):
                codes[:, j] = category.codes(x[:, category.feature.column])
        self._stage(numeric, codes, x.shape[0])
        if self.reject and not self._inside(numeric, codes):
            self._refuse_outliers(x, numeric, codes)

    def _inside(self, numeric: np.ndarray | None, codes: np.ndarray | None) -> bool:
        """Whether every value is in the profile (the quick test; NaN is not inside)."""
        if numeric is not None:
            low, high = self._bounds.get(numeric.dtype) or self._bounds_for(numeric.dtype)
            if not (np.greater_equal(numeric, low).all() and np.less_equal(numeric, high).all()):
                return False
        return codes is None or bool((codes >= 0).all() and (codes < self.unseen).all())

    def _bounds_for(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """min and max in the request's own float32 when it is one: comparing without
        converting every value costs less. Rounded inwards, so that for any float32 value
        ``x >= low32`` exactly when ``x >= min``."""
        if dtype != np.float32:
            return self.low, self.high
        low = self.low.astype(np.float32)
        high = self.high.astype(np.float32)
        below, above = low < self.low, high > self.high
        low[below] = np.nextafter(low[below], np.float32(np.inf))
        high[above] = np.nextafter(high[above], np.float32(-np.inf))
        self._bounds[dtype] = (low, high)
        return low, high

    def _refuse_outliers(
        self, x: np.ndarray, numeric: np.ndarray | None, codes: np.ndarray | None
    ) -> None:
        found: list[tuple[int, int, str]] = []  # (row, feature index, description)
        count = 0
        if numeric is not None:
            with np.errstate(invalid="ignore"):
                bad = ~((numeric >= self.low) & (numeric <= self.high))  # NaN is bad too
            if bad.any():
                where = np.argwhere(bad)
                count += len(where)
                row, j = (int(v) for v in where[0])
                value, feature = float(numeric[row, j]), self.numeric[j]
                if value != value:
                    what = "is missing (NaN)"
                else:
                    what = (
                        f"is {value:g}, outside the training range "
                        f"[{feature.min:g}, {feature.max:g}]"
                    )
                found.append((row, j, what))
        if codes is not None:
            bad = (codes == MISSING) | (codes == self.unseen)
            if bad.any():
                where = np.argwhere(bad)
                count += len(where)
                row, j = (int(v) for v in where[0])
                category = self.categories[j]
                item = x[row, category.feature.column]
                if codes[row, j] == MISSING:
                    what = f"is missing ({'an empty string' if category.text else 'NaN'})"
                else:
                    seen = ", ".join(repr(c) for c in list(category.feature.categories)[:10])
                    if not category.text:
                        shown = f"{float(item):g}"
                    elif isinstance(item, bytes):
                        shown = repr(item.decode("utf-8", "replace"))
                    else:
                        shown = repr(str(item))
                    what = f"is {shown}, a category not seen in training (seen: {seen})"
                found.append((row, len(self.numeric) + j, what))
        if not found:
            return
        row, index, what = min(found)
        more = f"; {count - 1} more value(s) are outside the profile" if count > 1 else ""
        raise Unprocessable(
            f"input '{self.input}' is outside the model's training profile (quality policy "
            f"reject): feature '{self.names[index]}' (column {self.columns[index]}) in row {row} "
            f"{what}{more}"
        )

    # -- counting, amortised over staged rows ---------------------------------------------
    def _stage(self, numeric: np.ndarray | None, codes: np.ndarray | None, rows: int) -> None:
        if self.staged + rows > STAGE_ROWS:
            self.flush()
        if rows > STAGE_ROWS:
            if numeric is not None:
                numeric = numeric.astype(np.float64, copy=False)
                if rows > len(self._scratch):
                    self._scratch = np.empty((rows, len(self.numeric)), dtype=np.float64)
            self._account(numeric, codes, rows)
            return
        start, end = self.staged, self.staged + rows
        if numeric is not None:
            self.stage_numeric[start:end] = numeric
        if codes is not None:
            self.stage_codes[start:end] = codes
        self.staged = end

    def flush(self) -> None:
        """Count the staged rows."""
        rows, self.staged = self.staged, 0
        if rows:
            numeric = self.stage_numeric[:rows] if self.numeric else None
            codes = self.stage_codes[:rows] if self.categories else None
            self._account(numeric, codes, rows)

    def _account(self, numeric: np.ndarray | None, codes: np.ndarray | None, rows: int) -> None:
        self.rows += rows
        bins = []
        n_numeric = len(self.numeric)
        if numeric is not None:
            # Counting is skipped when nothing is wrong, which is the common case.
            missing = np.isnan(numeric)
            any_missing = missing.any()
            if any_missing:
                self.missing[:n_numeric] += np.count_nonzero(missing, axis=0)
            with np.errstate(invalid="ignore"):  # NaN compares false and casts to anything
                outside = (numeric < self.low) | (numeric > self.high)
                if outside.any():
                    self.out_of_range += np.count_nonzero(outside, axis=0)
                # The bin by arithmetic, in place: clipped to the bins first (below the first
                # edge counts in the first bin, above the last in the last), so that the cast's
                # truncation is the floor.
                position = np.subtract(numeric, self.origin, out=self._scratch[:rows])
                np.multiply(position, self.scale, out=position)
                np.clip(position, 0.0, self.last_bin, out=position)
                numeric_bins = position.astype(np.int32)
            for j, inner in self.irregular:
                numeric_bins[:, j] = np.searchsorted(inner, numeric[:, j], side="right")
            if any_missing:
                numeric_bins[missing] = MISSING
            bins.append(numeric_bins)
        if codes is not None:
            self.missing[n_numeric:] += (codes == MISSING).sum(axis=0)
            self.unseen_values += (codes == self.unseen).sum(axis=0)
            bins.append(codes)
        self._remember(bins[0] if len(bins) == 1 else np.concatenate(bins, axis=1))

    def _remember(self, bins: np.ndarray) -> None:
        size, rows = self.window, len(bins)
        if rows >= size:
            self.ring[:] = bins[-size:]
            self.ring_position, self.ring_filled = 0, size
            return
        start = self.ring_position
        first = min(rows, size - start)
        self.ring[start : start + first] = bins[:first]
        self.ring[: rows - first] = bins[first:]
        self.ring_position = (start + rows) % size
        self.ring_filled = min(size, self.ring_filled + rows)

    # -- scrape ---------------------------------------------------------------------------
    def window_counts(self) -> list[list[int]]:
        """Per feature, how many of the last ``window`` values fell in each bin."""
        data = self.ring[: self.ring_filled]
        valid = data >= 0
        flat = (data + self.offsets)[valid]
        counts = np.bincount(flat, minlength=int(self.bins.sum()))
        return [
            counts[offset : offset + size].tolist()
            for offset, size in zip(self.offsets.tolist(), self.bins.tolist(), strict=True)
        ]

    def snapshot(self) -> dict[str, Any]:
        """Plain data: counters and window histograms."""
        self.flush()
        n_numeric = len(self.numeric)
        issues: list[tuple[str, str, int]] = []
        for j, name in enumerate(self.names):
            if j < n_numeric:
                issues.append((name, "out_of_range", int(self.out_of_range[j])))
            else:
                issues.append((name, "unseen_category", int(self.unseen_values[j - n_numeric])))
            issues.append((name, "missing", int(self.missing[j])))
        window = self.window_counts()
        return {
            "features": list(self.names),
            "values": self.rows,
            "issues": issues,
            "window": [
                (name, counts, expected)
                for name, counts, expected in zip(self.names, window, self.expected, strict=True)
            ],
            "window_size": self.window,
        }
