"""LiveCodeBench test cases: decoding, including the compressed private tests.

Official rows store ``private_test_cases`` either as a JSON string or as
``base64(zlib(pickle(json_string)))``. Unpickling downloaded bytes can execute arbitrary code, so
:func:`safe_unpickle` uses an unpickler that refuses every global lookup except ``set`` and
``frozenset``: only built-in containers, strings, bytes and numbers can come out of it. The
decompressed size is capped as well (a zlib bomb would otherwise exhaust memory).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from typing import Any

MAX_DECOMPRESSED_BYTES = 1 << 30
_ALLOWED_GLOBALS = {(module, name) for module in ("builtins", "__builtin__") for name in ("set", "frozenset")}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data only; any class or function reference raises UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def safe_unpickle(data: bytes) -> Any:
    """``pickle.loads`` restricted to built-in data types."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:
        raise ValueError(f"decompressed test cases exceed {limit} bytes")
    return out + inflater.flush()


def decode_test_cases(value: Any, limit: int = MAX_DECOMPRESSED_BYTES) -> list[dict[str, Any]]:
    """A list of ``{input, output, testtype}`` from a JSON string, a list, or the compressed form."""
    if isinstance(value, list):
        cases: Any = value
    elif not isinstance(value, str | bytes) or not value:
        raise ValueError(f"test cases must be a non-empty string or list, got {type(value).__name__}")
    else:
        try:
            cases = json.loads(value)
        except ValueError:
            try:
                raw = _inflate(base64.b64decode(value, validate=True), limit)
            except (binascii.Error, zlib.error) as exc:
                raise ValueError(f"test cases are neither JSON nor base64/zlib data: {exc}") from exc
            try:
                payload = safe_unpickle(raw)
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
                raise ValueError(f"compressed test cases could not be unpickled safely: {exc}") from exc
            cases = json.loads(payload) if isinstance(payload, str | bytes) else payload
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError("test cases must decode to a list of objects")
    return cases


def tests_ground_truth(cases: list[dict[str, Any]], fn_name: str | None) -> dict[str, Any]:
    """verl_sod's code ground truth from LiveCodeBench cases (``fn_name`` for functional tests)."""
    if not cases:
        raise ValueError("no test cases")
    types = {str(case.get("testtype", "stdin")) for case in cases}
    if not types <= {"stdin", "functional"}:
        raise ValueError(f"unknown test types {sorted(types - {'stdin', 'functional'})}")
    if len(types) > 1:
        raise ValueError("problem mixes stdin and functional tests")
    functional = types == {"functional"}
    if functional and not fn_name:
        raise ValueError("functional tests but metadata has no func_name")
    for key in ("input", "output"):
        if any(not isinstance(case.get(key), str) for case in cases):
            raise ValueError(f"every test case needs a string '{key}'")
    truth: dict[str, Any] = {
        "inputs": [case["input"] for case in cases],
        "outputs": [case["output"] for case in cases],
    }
    if functional:
        truth["fn_name"] = fn_name
    return truth
