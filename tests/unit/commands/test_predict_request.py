"""Open Inference Protocol requests built from data files and the model's metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeploy.commands import CommandError
from modeldeploy.commands.predict import _endpoint, build_request, load_rows, readable_json

METADATA = {
    "name": "iris",
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
}


def test_rows_become_one_batch_tensor_named_and_typed_by_the_metadata() -> None:
    request = build_request([[1, 2, 3], [4, 5, 6.5]], METADATA)
    assert request == {
        "inputs": [
            {"name": "X", "shape": [2, 3], "datatype": "FP32",
             "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]},
        ]
    }  # fmt: skip


def test_a_single_row_is_a_batch_of_one() -> None:
    assert build_request([1, 2, 3], METADATA)["inputs"][0]["shape"] == [1, 3]


def test_integer_and_bytes_inputs_get_their_types() -> None:
    ints = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, 2]}]}
    assert build_request([[1, 2]], ints)["inputs"][0]["data"] == [1, 2]
    text = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]}
    assert build_request([["hello"]], text)["inputs"][0]["data"] == ["hello"]


def test_a_whole_request_is_sent_as_it_is() -> None:
    whole = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    assert build_request(whole, {}) is whole


def test_a_model_with_several_inputs_needs_a_whole_request() -> None:
    metadata = {"inputs": [{"name": "age"}, {"name": "city"}]}
    with pytest.raises(CommandError, match=r"2 inputs \(age, city\): pass a whole inference"):
        build_request([[1, "x"]], metadata)


def test_values_that_do_not_fit_the_datatype_are_named() -> None:
    with pytest.raises(CommandError, match="does not fit the input's datatype FP32"):
        build_request([["a", "b", "c"]], METADATA)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("rows.json", "[[1, 2, 3]]", [[1, 2, 3]]),
        ("rows.json", '{"instances": [[1, 2, 3]]}', [[1, 2, 3]]),
        ("rows.csv", "a,b,c\n1,2,3.5\n", [[1, 2, 3.5]]),
        ("rows.csv", "1,2,3\n", [[1, 2, 3]]),
        # a missing value in the first row does not make it a header (as for `export`)
        ("rows.csv", "1,,3\n4,5,6\n", [[1, "", 3], [4, 5, 6]]),
    ],
)
def test_data_files(name: str, content: str, expected: Any, tmp_path: Path) -> None:
    (tmp_path / name).write_text(content)
    assert load_rows(tmp_path / name) == expected


def test_npy_data(tmp_path: Path) -> None:
    np.save(tmp_path / "rows.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_rows(tmp_path / "rows.npy") == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("content", "expected"),
    [("not json", "is not JSON"), ('{"rows": []}', 'whole inference request \\("inputs"\\)')],
)
def test_bad_data_files_are_named(content: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(CommandError, match=expected):
        load_rows(tmp_path / "d.json")
    with pytest.raises(CommandError, match="does not exist"):
        load_rows(tmp_path / "absent.json")


def args(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"name": "iris", "model": None, **values})


@pytest.mark.parametrize(
    ("url", "model", "expected"),
    [
        ("http://127.0.0.1:8080", None, ("http://127.0.0.1:8080", "iris")),
        ("http://127.0.0.1:8080/", "other", ("http://127.0.0.1:8080", "other")),
        ("http://h:1/v2/models/served", None, ("http://h:1", "served")),
        ("http://h:1/prefix/v2/models/served/infer", None, ("http://h:1/prefix", "served")),
    ],
)
def test_the_url_names_the_server_and_maybe_the_model(
    url: str, model: str | None, expected: tuple[str, str]
) -> None:
    assert _endpoint(args(url=url, model=model)) == expected


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(CommandError, match="is not an http"):
        _endpoint(args(url="127.0.0.1:8080"))


def test_request_is_json_serializable() -> None:
    json.dumps(build_request(np.ones((2, 3)).tolist(), METADATA))


def test_printed_responses_are_json_with_tensor_data_on_one_line() -> None:
    response = {
        "model_name": "iris",
        "outputs": [{"name": "label", "shape": [2], "data": [0, 2]}, {"nested": [[1], []]}],
        "parameters": {},
    }
    text = readable_json(response)
    assert json.loads(text) == response
    assert '      "data": [0, 2]' in text.splitlines()
