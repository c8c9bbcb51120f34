"""A JSON request body read as TF Serving's RapidJSON reads it (util/json_tensor.cc, ParseJson): the
parse ends with the first value, numbers are held as RapidJSON holds them, and a body it refuses is
refused in its words with the offset, for clients that match on them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

import orjson

from serving.errors import invalid_argument

_BASE64 = re.compile(r"([A-Za-z0-9+/]*)([=.]*)")
_NO_WHITESPACE = str.maketrans("", "", " \t\n\v\f\r")  # absl::ascii_isspace


def base64_bytes(text: str) -> bytes:
    """A `{"b64": ...}` value decoded as TF Serving decodes it (absl::Base64Unescape, util/json_tensor.cc:
    383-387): ASCII whitespace anywhere is skipped (base64 that breaks its lines), and the padding may
    be left off, but when given it must be right ('=' or '.')."""
    match = _BASE64.fullmatch(text.translate(_NO_WHITESPACE))
    if match is not None:
        data, padding = match.groups()
        missing = -len(data) % 4
        if len(data) % 4 != 1 and len(padding) in (0, missing):
            try:
                return base64.b64decode(data + "=" * missing, validate=True)
            except binascii.Error:
                pass
    raise invalid_argument("Unable to base64 decode")


def _reject_constant(name: str) -> None:
    raise invalid_argument(
        f"JSON Value: {name} is not a finite number; NaN and Infinity cannot be model inputs"
    )


def excerpt(document: Any) -> str:
    """The document as TF Serving quotes it in errors: compact, cut at 256 bytes."""
    return json.dumps(document, separators=(",", ":"))[:256]


# The standard library's parse errors in the words of RapidJSON's GetParseError_En, which TF Serving
# quotes (tensorflow_serving/util/json_tensor.cc), so clients matching on them see the same text.
_RAPIDJSON_TEXTS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _rapidjson_text(err: json.JSONDecodeError) -> str:
    if err.msg == "Expecting ',' delimiter":  # RapidJSON tells an object's from an array's
        inside = _innermost_bracket(err.doc[: err.pos])
        return (
            "Missing a comma or '}' after an object member."
            if inside == "{"
            else ("Missing a comma or ']' after an array element.")
        )
    return _RAPIDJSON_TEXTS.get(err.msg, err.msg)


def _innermost_bracket(text: str) -> str:
    """The last `{` or `[` still open at the end of `text` (strings skipped), "" if none."""
    open_brackets: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            in_string, escaped = (char != '"' or escaped), (char == "\\" and not escaped)
        elif char == '"':
            in_string = True
        elif char in "{[":
            open_brackets.append(char)
        elif char in "}]" and open_brackets:
            open_brackets.pop()
    return open_brackets[-1] if open_brackets else ""


def parse_json(body: bytes) -> Any:
    """The document, parsed by orjson; a body it refuses is parsed again by `json` for the message.
    Like TF Serving's RapidJSON (kParseStopWhenDoneFlag, util/json_tensor.cc), the parse stops at the
    end of the first JSON value: whatever follows it is not read."""
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # the standard library's parser says where and why, in the words these errors use
    text = body.decode("utf-8", "surrogateescape")  # a byte that is not UTF-8 counts only in the document
    try:
        body.decode("utf-8")
        not_utf8, at_char = None, len(text)
    except UnicodeDecodeError as err:
        not_utf8, at_char = err.start, len(body[: err.start].decode("utf-8"))
    try:
        document, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))
    except json.JSONDecodeError as err:
        if not_utf8 is not None and err.pos >= at_char:
            raise invalid_argument(f"JSON Parse error: the body is not UTF-8 at offset: {not_utf8}") from None
        raise invalid_argument(f"JSON Parse error: {_rapidjson_text(err)} at offset: {err.pos}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    if not_utf8 is not None and end > at_char:
        raise invalid_argument(f"JSON Parse error: the body is not UTF-8 at offset: {not_utf8}")
    return document


def _json_integer(text: str) -> int | float:
    """A JSON integer as RapidJSON holds it: exactly when 64 bits hold it, else as a double (Python's
    own int() of a 5,000-digit number would raise, and a 500-digit one is no tensor value)."""
    if len(text) <= 21 and -(2**63) <= (value := int(text)) < 2**64:
        return value
    return _json_double(text)


def _json_double(text: str) -> float:
    """A JSON number as a double, refused when a double cannot hold it, as RapidJSON refuses it."""
    number = float(text)
    if math.isinf(number):
        raise invalid_argument("JSON Parse error: Number too big to be stored in double.")
    return number


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_json_integer, parse_float=_json_double
)
