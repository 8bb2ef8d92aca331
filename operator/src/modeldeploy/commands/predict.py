"""``modeldeploy predict NAME --data FILE``: one Open Inference Protocol (v2) request.

The input tensor's name, datatype and shape come from the model's metadata
(``GET /v2/models/{model}``); the rows come from a JSON, .npy or .csv file. The server is
reached at ``--url``, or at the ModelDeployment's status.url (the in-cluster Service: from
inside the cluster, or through ``kubectl port-forward``). Only the standard library speaks HTTP.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from modeldeploy.commands import CommandError, cluster
from modeldeploy.commands.csvrows import data_rows

__all__ = ["add_arguments", "build_request", "load_rows", "run"]

INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
FLOAT_TYPES = {"FP16", "FP32", "FP64"}
MODEL_PATH = re.compile(r"/v2/models/([^/]+)(/.*)?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        help="the ModelDeployment; with --url, the served model name (/v2/models/NAME)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help='rows to send: JSON (a list of rows, one row, {"instances": rows}, or a whole '
        'inference request with "inputs"), .npy, or .csv (a header line is skipped)',
    )
    parser.add_argument(
        "--url",
        default=None,
        help="the server's base URL (e.g. http://127.0.0.1:8080 after kubectl port-forward); "
        "without it, the ModelDeployment's status.url (reachable from inside the cluster)",
    )
    parser.add_argument(
        "--model", default=None, help="served model name, when it differs from NAME"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    cluster.add_cluster_arguments(parser)


def load_rows(path: Path) -> Any:
    """The rows of ``path``: a nested list, or a whole request (a dict with "inputs")."""
    if not path.is_file():
        raise CommandError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            import numpy as np

            array = np.load(path, allow_pickle=False)
            return array.tolist()
        text = path.read_text()
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read {path}: {error}") from None
    if suffix == ".csv":
        return _csv_rows(path, text)
    try:
        data = json.loads(text)
    except ValueError as error:
        raise CommandError(f"{path} is not JSON: {error}") from None
    if isinstance(data, dict):
        if "inputs" in data:
            return data
        if "instances" in data:
            return data["instances"]
        raise CommandError(
            f'{path}: a JSON object must be a whole inference request ("inputs") or hold '
            '"instances"'
        )
    return data


def _csv_rows(path: Path, text: str) -> list[list[Any]]:
    rows = data_rows(text)
    if not rows:
        raise CommandError(f"{path} has no data rows")
    return [[_cell(cell) for cell in row] for row in rows]


def _cell(cell: str) -> Any:
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return cell


def _shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [item for element in value for item in _flatten(element)]
    return [value]


def build_request(rows: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """An inference request for a single-input model, shaped by the model's metadata."""
    if isinstance(rows, dict):
        return rows
    inputs = metadata.get("inputs") or []
    if len(inputs) != 1:
        names = ", ".join(str(i.get("name")) for i in inputs)
        raise CommandError(
            f"the model has {len(inputs)} inputs ({names}): pass a whole inference request "
            'as JSON (--data request.json with "inputs")'
        )
    tensor = inputs[0]
    if not isinstance(rows, list) or not rows:
        raise CommandError("the data holds no rows")
    declared = list(tensor.get("shape") or [])
    shape = _shape(rows)
    if len(shape) == len(declared) - 1:  # a single row: make it a batch of one
        rows, shape = [rows], [1, *shape]
    datatype = str(tensor.get("datatype", "FP32"))
    data = _flatten(rows)
    try:
        if datatype in FLOAT_TYPES:
            data = [float(v) for v in data]
        elif datatype in INTEGER_TYPES:
            data = [int(v) for v in data]
        elif datatype == "BOOL":
            data = [bool(v) for v in data]
        elif datatype == "BYTES":
            data = [str(v) for v in data]
    except (TypeError, ValueError) as error:
        raise CommandError(
            f"the data does not fit the input's datatype {datatype}: {error}"
        ) from None
    request = {"name": tensor["name"], "shape": shape, "datatype": datatype, "data": data}
    return {"inputs": [request]}


def _http(method: str, url: str, body: Any, timeout: float) -> Any:
    payload = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=payload, method=method)
    request.add_header("Accept", "application/json")
    if payload is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            message = str(json.loads(text).get("error", text))
        except (ValueError, AttributeError):
            message = text.strip() or error.reason
        raise CommandError(f"{method} {url} answered {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"cannot reach {url}: {reason}") from None
    except ValueError:
        raise CommandError(f"{method} {url} did not answer JSON") from None


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    """(base URL, served model name)."""
    if args.url:
        base, model = args.url.rstrip("/"), args.model or args.name
    else:
        kube, namespace = cluster.target(args)
        obj = cluster.get_deployment(kube, namespace, args.name)
        url = (obj.get("status") or {}).get("url")
        if not url:
            raise CommandError(
                f"ModelDeployment {args.name!r} has no status.url yet (is the operator running, "
                "the model Ready?); or pass --url"
            )
        served = ((obj.get("spec") or {}).get("model") or {}).get("name") or args.name
        base, model = str(url).rstrip("/"), args.model or served
    parsed = urllib.parse.urlsplit(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CommandError(f"{base!r} is not an http(s) URL")
    found = MODEL_PATH.search(parsed.path)
    if found:  # a URL that already names the model: .../v2/models/NAME
        base = base[: len(base) - len(found.group(0))]
        model = args.model or found.group(1)
    return base, model


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = load_rows(args.data)
    base, model = _endpoint(args)
    model_url = f"{base}/v2/models/{urllib.parse.quote(model, safe='')}"
    metadata = {} if isinstance(rows, dict) else _http("GET", model_url, None, args.timeout)
    request = build_request(rows, metadata)
    response = _http("POST", f"{model_url}/infer", request, args.timeout)
    print(readable_json(response), file=out)
    return 0


def readable_json(value: Any, indent: str = "") -> str:
    """JSON indented like ``json.dumps(indent=2)``, but lists of numbers or strings (tensor
    data, shapes) on one line each, so a response fits on a screen."""
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {readable_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [f"{inner}{readable_json(v, inner)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value)
