"""Build the benchmark model and the request bodies the load generator sends.

Usage: python benchmarks/make_model.py OUTDIR

The model is the anchor kit's: StandardScaler + RandomForest (50 trees, depth 8), 20 float
features, 3 classes, converted with skl2onnx (zipmap off, so the outputs are plain tensors
``label`` INT64 [n] and ``probabilities`` FP32 [n, 3]). Writes ``model.onnx``, ``X.npy``
(1,000 rows) and, for batch 1 and 32, an Open Inference Protocol v2 request as JSON and as the
binary tensor extension (JSON header + raw little-endian FP32 rows), listed in ``bodies.json``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BATCH_SIZES = (1, 32)
INPUT_NAME = "X"


def train_and_convert(out: pathlib.Path) -> np.ndarray:
    """Fit the pipeline, write model.onnx and X.npy; return the feature rows."""
    features, labels = make_classification(
        n_samples=5000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    features = features.astype(np.float32)
    pipe = make_pipeline(
        StandardScaler(), RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0)
    )
    pipe.fit(features, labels)
    onx = to_onnx(
        pipe,
        features[:1],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    np.save(out / "X.npy", features[:1000])
    return features[:1000]


def json_body(rows: np.ndarray) -> bytes:
    """A v2 infer request with the rows inline as a flat JSON array."""
    doc = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def binary_body(rows: np.ndarray) -> tuple[bytes, int]:
    """A v2 infer request in the binary tensor extension; returns (body, header length)."""
    raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        # What tritonclient sends when no outputs are named: every output in binary.
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = train_and_convert(out)
    manifest: dict[str, dict[str, object]] = {}
    for batch in BATCH_SIZES:
        sample = rows[:batch]
        name = f"json-b{batch}"
        (out / f"{name}.json").write_bytes(json_body(sample))
        manifest[name] = {
            "file": f"{name}.json",
            "content_type": "application/json",
            "header_length": None,
            "rows": batch,
            "encoding": "json",
        }
        name = f"binary-b{batch}"
        body, header_length = binary_body(sample)
        (out / f"{name}.bin").write_bytes(body)
        manifest[name] = {
            "file": f"{name}.bin",
            "content_type": "application/octet-stream",
            "header_length": header_length,
            "rows": batch,
            "encoding": "binary",
        }
    (out / "bodies.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"[bench] model and request bodies written to {out}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_model.py OUTDIR")
    main(pathlib.Path(sys.argv[1]))
