"""Small ONNX models for tests: scikit-learn + skl2onnx where it fits, onnx.helper otherwise.

Every function writes ``path`` and returns it. Models are deterministic for a given
``seed``; ``sample_rows`` returns inputs that suit the tabular ones.

- ``make_classifier``: RandomForest, input ``X`` FP32 [-1, n_features], outputs ``label``
  INT64 [-1] and ``probabilities`` FP32 [-1, n_classes] (ZipMap off).
- ``make_regressor``: linear regression, input ``X`` FP32 [-1, n], output ``variable`` FP32 [-1, 1].
- ``make_mixed_inputs``: several inputs of different types (``age``/``income`` FP32 [-1, 1],
  ``city`` BYTES [-1, 1]) through a ColumnTransformer and a logistic regression.
- ``make_text_classifier``: one BYTES input ``text`` [-1, 1] (one-hot words), INT64 label.
- ``make_fp16_scaler``: FP16 in, FP16 out (``Y = X * scale``), built with onnx.helper.
- ``make_identity``: one ``in_<type>`` -> ``out_<type>`` pair per Open Inference Protocol
  datatype (all of them by default): round trips of every datatype.
- ``make_slow``: a chain of dense layers whose run time grows with the rows sent.
- ``make_spinner``: ``X`` FP32 [-1, 4] and ``iterations`` INT64 [1] -> ``Y`` FP32 [-1, 1];
  run time grows with ``iterations`` and the payload stays tiny: for tests that need a
  request to be in flight for a while.
- ``make_zipmap_classifier``: a classifier converted with ZipMap on (not servable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

DATATYPE_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def sample_rows(rows: int, n_features: int = 4, seed: int = 0) -> np.ndarray:
    """FP32 rows shaped like the training data of the tabular models."""
    return np.random.default_rng(seed).normal(size=(rows, n_features)).astype(np.float32)


def _write(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def classifier_data(
    n_features: int = 4, n_classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (FP32) and labels :func:`make_classifier` fits its forest on."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=300,
        n_features=n_features,
        n_informative=min(n_features, 3),
        n_redundant=0,
        n_classes=n_classes,
        random_state=seed,
    )
    return X.astype(np.float32), y


def regressor_data(n_features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rows (FP32) and targets :func:`make_regressor` fits its linear regression on."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, n_features)).astype(np.float32)
    return X, X @ rng.normal(size=n_features) + 0.5


def make_classifier(
    path: Path, *, n_features: int = 4, n_classes: int = 3, seed: int = 0, trees: int = 10
) -> Path:
    """A RandomForest classifier (ZipMap off): ``X`` -> ``label``, ``probabilities``."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    X, y = classifier_data(n_features, n_classes, seed)
    model = RandomForestClassifier(n_estimators=trees, max_depth=5, random_state=seed).fit(X, y)
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset=OPSET)
    return _write(onx, path)


def make_zipmap_classifier(path: Path, *, n_features: int = 4, seed: int = 0) -> Path:
    """A classifier converted with ZipMap on: its probabilities are a sequence of maps."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X = sample_rows(60, n_features, seed)
    y = (X[:, 0] > 0).astype(np.int64)
    model = LogisticRegression().fit(X, y)
    return _write(to_onnx(model, X[:1], target_opset=OPSET), path)


def make_regressor(path: Path, *, n_features: int = 4, seed: int = 0) -> Path:
    """A linear regression: ``X`` FP32 [-1, n_features] -> ``variable`` FP32 [-1, 1]."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    X, y = regressor_data(n_features, seed)
    model = LinearRegression().fit(X, y)
    return _write(to_onnx(model, X[:1], target_opset=OPSET), path)


def make_mixed_inputs(path: Path, *, seed: int = 0) -> Path:
    """Several inputs: ``age``, ``income`` (FP32 [-1, 1]) and ``city`` (BYTES [-1, 1])."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(seed)
    n = 200
    age = rng.uniform(18, 80, size=(n, 1)).astype(np.float32)
    income = rng.uniform(10, 200, size=(n, 1)).astype(np.float32)
    city = rng.choice(["paris", "lyon", "nice"], size=(n, 1))
    y = ((age[:, 0] > 40) ^ (city[:, 0] == "nice")).astype(np.int64)
    import pandas as pd

    frame = pd.DataFrame({"age": age[:, 0], "income": income[:, 0], "city": city[:, 0]})
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), ["age", "income"]),
                        ("cities", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, y)
    onx = convert_sklearn(
        pipeline,
        initial_types=[
            ("age", FloatTensorType([None, 1])),
            ("income", FloatTensorType([None, 1])),
            ("city", StringTensorType([None, 1])),
        ],
        options={id(pipeline): {"zipmap": False}},
        target_opset=OPSET,
    )
    return _write(onx, path)


def make_text_classifier(path: Path, *, seed: int = 0) -> Path:
    """One BYTES input ``text`` [-1, 1] (a word, one-hot encoded) -> INT64 ``label``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    words = np.array([["good"], ["great"], ["bad"], ["awful"], ["fine"], ["poor"]] * 5)
    y = np.array([1, 1, 0, 0, 1, 0] * 5)
    pipeline = Pipeline(
        [("onehot", OneHotEncoder(handle_unknown="ignore")), ("model", LogisticRegression())]
    ).fit(words, y)
    onx = convert_sklearn(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={id(pipeline): {"zipmap": False}},
        target_opset=OPSET,
    )
    return _write(onx, path)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def make_fp16_scaler(path: Path, *, n_features: int = 4, scale: float = 2.0) -> Path:
    """FP16 ``X`` [-1, n_features] -> FP16 ``Y = X * scale``."""
    factor = numpy_helper.from_array(np.array(scale, dtype=np.float16), name="scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "scale"], ["Y"])],
        "fp16_scaler",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT16, [None, n_features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, [None, n_features])],
        initializer=[factor],
    )
    return _write(_model(graph), path)


def make_identity(path: Path, datatypes: list[str] | None = None) -> Path:
    """``in_<type>`` [-1, -1] -> ``out_<type>`` for each datatype (default: all 13)."""
    datatypes = datatypes or list(DATATYPE_TO_ONNX)
    nodes, inputs, outputs = [], [], []
    for datatype in datatypes:
        name = datatype.lower()
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        kind = DATATYPE_TO_ONNX[datatype]
        inputs.append(helper.make_tensor_value_info(f"in_{name}", kind, [None, None]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", kind, [None, None]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return _write(_model(graph), path)


def make_slow(path: Path, *, width: int = 256, layers: int = 16, seed: int = 0) -> Path:
    """``X`` FP32 [-1, width] through ``layers`` dense+tanh layers -> ``Y`` FP32 [-1, 1].

    Run time is proportional to the rows sent: send enough rows to keep it busy.
    """
    rng = np.random.default_rng(seed)
    weight = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = []
    current = "X"
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [current, "W"], [f"m{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [f"t{layer}"]))
        current = f"t{layer}"
    nodes.append(helper.make_node("ReduceSum", [current, "axes"], ["Y"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(weight, name="W"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), name="axes"),
        ],
    )
    return _write(_model(graph), path)


def make_spinner(path: Path, *, width: int = 256, seed: int = 0) -> Path:
    """``Y = rowsum(X)`` after ``iterations`` dense+tanh steps on an internal state.

    Inputs ``X`` FP32 [-1, 4] and ``iterations`` INT64 [1]; output ``Y`` FP32 [-1, 1].
    """
    rng = np.random.default_rng(seed)
    weight = (rng.normal(size=(width, width)) / np.sqrt(width)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["state_in", "W"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [width, width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [width, width]),
        ],
    )
    nodes = [
        helper.make_node("Squeeze", ["iterations", "zero_axis"], ["count"]),
        helper.make_node("Loop", ["count", "", "state0"], ["state"], body=body),
        helper.make_node("ReduceSum", ["state"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "nothing"], ["zero"]),
        helper.make_node("ReduceSum", ["X", "one_axis"], ["rowsum"], keepdims=1),
        helper.make_node("Add", ["rowsum", "zero"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "spinner",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4]),
            helper.make_tensor_value_info("iterations", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        initializer=[
            numpy_helper.from_array(weight, name="W"),
            numpy_helper.from_array(np.eye(width, dtype=np.float32), name="state0"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), name="zero_axis"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), name="one_axis"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), name="nothing"),
        ],
    )
    return _write(_model(graph), path)
