"""LiveCodeBench test-case decoding: JSON, compressed private tests, the restricted unpickler."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest
from helpers import lcb_compress

from verl_sod.data.lcb import decode_test_cases, safe_unpickle
from verl_sod.data.lcb import tests_ground_truth as ground_truth_of

CASES = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(json.dumps(CASES), id="json string"),
        pytest.param(CASES, id="list"),
        pytest.param(lcb_compress(CASES), id="compressed"),
        pytest.param(base64.b64encode(zlib.compress(pickle.dumps(CASES))).decode(), id="pickled list"),
    ],
)
def test_decode_test_cases(encoded: object) -> None:
    assert decode_test_cases(encoded) == CASES


def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = base64.b64encode(zlib.compress(pickle.dumps(_Evil(marker)))).decode()
    with pytest.raises(ValueError, match="unpickled safely"):
        decode_test_cases(payload)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("obj", [{1, 2}, frozenset({3}), [1, "a", 2.5, None, True], {"k": (1, 2)}, "text"])
def test_plain_data_unpickles(obj: object, protocol: int) -> None:
    assert safe_unpickle(pickle.dumps(obj, protocol=protocol)) == obj


def test_bytes_unpickle_from_protocol_3() -> None:
    assert safe_unpickle(pickle.dumps(b"raw", protocol=3)) == b"raw"


def test_decompression_is_capped() -> None:
    bomb = base64.b64encode(zlib.compress(pickle.dumps("x" * 1_000_000))).decode()
    with pytest.raises(ValueError, match="exceed"):
        decode_test_cases(bomb, limit=10_000)


@pytest.mark.parametrize("bad", ["", "not base64 !!", 42, base64.b64encode(b"not zlib").decode(), '{"a": 1}'])
def test_undecodable_cases(bad: object) -> None:
    with pytest.raises(ValueError):
        decode_test_cases(bad)


def test_ground_truth_of_cases() -> None:
    functional = [{"input": "[1]\n2", "output": "3", "testtype": "functional"}]
    assert ground_truth_of(functional, "add") == {"inputs": ["[1]\n2"], "outputs": ["3"], "fn_name": "add"}
    assert ground_truth_of(CASES, None) == {"inputs": ["1 2\n"], "outputs": ["3\n"]}
    with pytest.raises(ValueError, match="func_name"):
        ground_truth_of(functional, None)
    with pytest.raises(ValueError, match="mixes"):
        ground_truth_of(CASES + functional, "add")
    with pytest.raises(ValueError, match="no test cases"):
        ground_truth_of([], None)
    with pytest.raises(ValueError, match="string 'output'"):
        ground_truth_of([{"input": "1", "testtype": "stdin"}], None)
