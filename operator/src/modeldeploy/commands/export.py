"""``modeldeploy export``: a scikit-learn model to ONNX, checked, profiled, ready to deploy.

Converts with skl2onnx, runs the ONNX model with onnxruntime on the user's sample and compares
with scikit-learn, writes ``model.onnx`` and its training profile ``model.profile.json``, and
prints the report, both sha256 and a ModelDeployment snippet that the API models accept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from modeldeploy.api import API_VERSION, KIND, ModelDeployment
from modeldeploy.commands import CommandError

__all__ = ["add_arguments", "profile_path_for", "run"]

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
DEFAULT_RTOL = 1e-5
PLACEHOLDER_HOST = "https://models.example.com"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="fitted scikit-learn model (.joblib or .pkl)")
    parser.add_argument(
        "--sample",
        type=Path,
        required=True,
        help="rows to check and profile the model on (.npy, .npz or .csv; numeric, "
        "rows by features, a few hundred rows of training data is typical)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("model.onnx"), help="ONNX file to write"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="training profile to write (default: the output with .onnx replaced by .profile.json)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="name of the ModelDeployment in the snippet and of the ONNX graph (default: from "
        "the output file name)",
    )
    parser.add_argument("--version", dest="model_version", default=None, help="spec.model.version")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset of the main domain (default {DEFAULT_OPSET}: onnxruntime >= 1.13)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"absolute tolerance on probabilities and regression outputs (default "
        f"{DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help=f"relative tolerance added to it, for outputs far from 0 (default {DEFAULT_RTOL:g})",
    )
    parser.add_argument(
        "--uri", default=None, help="where model.onnx will be uploaded (spec.model.uri)"
    )
    parser.add_argument(
        "--profile-uri",
        default=None,
        help="where the profile will be uploaded (default: the --uri with .onnx replaced by "
        ".profile.json)",
    )


def profile_path_for(output: Path) -> Path:
    """``model.onnx`` -> ``model.profile.json``, beside it."""
    if output.suffix == ".onnx":
        return output.with_suffix(".profile.json")
    return output.with_name(output.name + ".profile.json")


def _default_name(output: Path) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", output.stem.lower()).strip("-")
    stem = re.sub(r"^[^a-z]+", "", stem)
    return stem[:52].rstrip("-") or "model"


def _profile_uri(model_uri: str) -> str:
    if model_uri.endswith(".onnx"):
        return model_uri[: -len(".onnx")] + ".profile.json"
    return model_uri + ".profile.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from modeldeploy.commands import convert as conversion
    from modeldeploy.commands import profile as profiling

    if args.tolerance < 0 or args.rtol < 0:
        raise CommandError("--tolerance and --rtol must not be negative")
    output: Path = args.output
    profile_path: Path = args.profile or profile_path_for(output)
    if profile_path.resolve() == output.resolve():
        raise CommandError(f"the profile and the model would both be written to {output}")
    name = args.name or _default_name(output)

    model = conversion.load_estimator(args.model)
    sample = conversion.load_sample(args.sample)
    converted = conversion.convert(model, sample.shape[1], name=name, opset=args.opset)
    check = conversion.check_against_sklearn(
        model, converted, sample, tolerance=args.tolerance, rtol=args.rtol
    )
    _print_report(out, args.model, converted, check)
    if not check.passed:
        raise CommandError(
            f"the ONNX model disagrees with scikit-learn on the sample; {output} not written"
        )

    model_sha = sha256_hex(converted.onnx_bytes)
    if converted.task == "classification":
        assert check.onnx_labels is not None
        labels = check.onnx_labels
        # Class names as the served model will print them: cast through the ONNX label type.
        classes = [str(c) for c in _as_label_type(converted.classes, labels)]
        prediction = profiling.classification_profile(converted.outputs[0][0], labels, classes)
    else:
        assert check.onnx_values is not None
        prediction = profiling.regression_profile(converted.outputs[0][0], check.onnx_values)
    names = getattr(model, "feature_names_in_", None)
    try:
        # The figures are of the values the model receives (float32), so a value at the edge
        # of the sample is inside the profile's range when the server compares it.
        profile = profiling.training_profile(
            sample.astype("float32"),
            model_sha256=model_sha,
            input_name=converted.input_name,
            prediction=prediction,
            feature_names=[str(n) for n in names] if names is not None else None,
        )
    except profiling.ProfileError as error:
        raise CommandError(f"cannot profile the sample {args.sample}: {error}") from None
    profile_bytes = (json.dumps(profile, indent=2) + "\n").encode()

    uri = args.uri or f"{PLACEHOLDER_HOST}/{name}/{output.name}"
    profile_sha = sha256_hex(profile_bytes)
    snippet = _snippet(
        name,
        uri=uri,
        sha256=model_sha,
        version=args.model_version,
        profile_uri=args.profile_uri or _profile_uri(uri),
        profile_sha256=profile_sha,
    )
    try:
        _write(output, converted.onnx_bytes)
        _write(profile_path, profile_bytes)
    except OSError as error:
        raise CommandError(f"cannot write {error.filename}: {error.strerror}") from None
    print(f"\nWrote {output}  sha256 {model_sha}", file=out)
    print(f"Wrote {profile_path}  sha256 {profile_sha}", file=out)
    if not args.uri:
        print(
            f"\nUpload both files where the serving pods can fetch them (https, s3 or pvc) and "
            f"replace {PLACEHOLDER_HOST} below (or pass --uri).",
            file=out,
        )
    print("\n# ModelDeployment: kubectl apply -f - <<'EOF'\n" + snippet + "# EOF", file=out)
    return 0


def _as_label_type(classes: list[Any], labels: Any) -> list[Any]:
    import numpy as np

    try:
        return list(np.asarray(classes).astype(labels.dtype).tolist())
    except (TypeError, ValueError):
        return list(classes)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _print_report(out: TextIO, source: Path, conversion: Any, check: Any) -> None:
    from importlib.metadata import version

    def shape(dims: list[Any]) -> str:
        return "[" + ", ".join("None" if d is None or isinstance(d, str) else str(d) for d in dims)

    print(
        f"Converted {conversion.estimator} from {source} (scikit-learn {version('scikit-learn')},"
        f" skl2onnx {version('skl2onnx')}, opset {conversion.opset})",
        file=out,
    )
    print(f"  input   {conversion.input_name}  float32 [None, {conversion.width}]", file=out)
    for name, type_, dims in conversion.outputs:
        element = type_.removeprefix("tensor(").removesuffix(")")
        element = {"float": "float32", "double": "float64"}.get(element, element)
        print(f"  output  {name}  {element} {shape(dims)}]", file=out)
    print(f"Checked on {check.rows} sample rows against scikit-learn:", file=out)
    if check.labels_equal is not None:
        verdict = "OK" if not check.mismatched_rows else "MISMATCH"
        print(f"  labels         {check.labels_equal}/{check.rows} identical  {verdict}", file=out)
        if check.mismatched_rows:
            rows = ", ".join(str(r) for r in check.mismatched_rows[:10])
            more = " ..." if len(check.mismatched_rows) > 10 else ""
            print(f"    differing rows: {rows}{more}", file=out)
    if check.max_abs_error is not None:
        verdict = "OK" if check.within_tolerance else "OUT OF TOLERANCE"
        print(
            f"  {check.scores_name:<13}  max abs error {check.max_abs_error:.3g}, max rel error "
            f"{check.max_rel_error:.3g} (tolerance {check.tolerance:g} + {check.rtol:g} * "
            f"|value|)  {verdict}",
            file=out,
        )
    if check.note:
        print(f"  {check.note}", file=out)


def _snippet(
    name: str,
    *,
    uri: str,
    sha256: str,
    version: str | None,
    profile_uri: str,
    profile_sha256: str,
) -> str:
    """The ModelDeployment YAML, validated by the API models before it is shown."""
    model: dict[str, Any] = {"uri": uri, "sha256": sha256}
    if version:
        model["version"] = version
    model["profile"] = {"uri": profile_uri, "sha256": profile_sha256}
    manifest: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"model": model},
    }
    try:
        ModelDeployment.model_validate(manifest)
    except ValueError as error:
        raise CommandError(f"the ModelDeployment would be invalid: {error}") from None
    return yaml.safe_dump(manifest, sort_keys=False)
