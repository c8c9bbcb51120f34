"""Floating-point outputs written as TF Serving's REST API writes them (WriteDecimal,
util/json_tensor.cc:124-168), so that a client parsing them as doubles gets the numbers TF Serving's
answer gives it.

A float is written with six significant digits (`%g`) when those read back as the same float, else
with as many as it needs (`%.9g` for float32, `%.17g` for float64), and `.0` is added to a number
with neither a point nor an exponent. So float32's 0.1 is `0.1` (not 0.10000000149011612), 9e6 is
`9e+06`, and 0.20508598 is `0.205085978`. The texts go into orjson's output as they are (Fragments).
Non-finite values, which TF Serving writes as `NaN` and `Infinity`, are `null` here: the
tf-serving-compat ledger (section 10) says why.
"""

from __future__ import annotations

import math

import numpy as np
import orjson

_FLOAT32 = (np.float32, 9)  # how the value is read back, and its digits at full precision
_FLOAT64 = (float, 17)


def decimal(value: float, float32: bool = True) -> str:
    """One value's text; `value` is the float32 or float64 as a Python float."""
    if not math.isfinite(value):
        return "null"
    parse, digits = _FLOAT32 if float32 else _FLOAT64
    text = f"{value:g}"
    if parse(text) != value:
        text = f"{value:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def decimals(array: np.ndarray) -> list[orjson.Fragment] | orjson.Fragment:
    """A float32 or float64 array as JSON: a list of its rows, each written whole, or one Fragment for
    a scalar (a list of rows, so that a Predict answer in rows can pick out each)."""
    float32 = array.dtype == np.float32

    def text(part: np.ndarray) -> str:
        if part.ndim == 1:
            return "[" + ",".join([decimal(v, float32) for v in part.tolist()]) + "]"
        return "[" + ",".join([text(inner) for inner in part]) + "]"

    if array.ndim == 0:
        return orjson.Fragment(decimal(array.item(), float32))
    if array.ndim == 1:
        return [orjson.Fragment(decimal(v, float32)) for v in array.tolist()]
    return [orjson.Fragment(text(row)) for row in array]
