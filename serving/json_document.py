"""A JSON request body read as TF Serving's RapidJSON reads it (util/json_tensor.cc, ParseJson): the
parse ends with the first value, numbers are held as RapidJSON holds them, and a body it refuses is
refused in its words with the offset, for clients that match on them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
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
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _rapidjson_error(err: json.JSONDecodeError) -> tuple[str, int]:
    """RapidJSON's words for the error and the offset it gives (reader.h at v1.1.0, which TF Serving
    pins): where its number and string rules see the error otherwise than Python's parser."""
    after = err.doc[err.pos : err.pos + 2]
    if err.msg == "Expecting ',' delimiter" and err.pos and err.doc[err.pos - 1].isdigit():
        number = _NUMBER_END.search(err.doc, 0, err.pos)[0]  # type: ignore[index]  # matches always
        if after[:1] == "." and not set(number) & set(".eE"):  # `1.` or `1.e5` (reader.h:1246-1247)
            return "Miss fraction part in number.", err.pos + 1
        if after[:1] in ("e", "E") and not set(number) & set("eE"):  # `1e`, `1.5e+` (reader.h:1301-1323)
            return "Miss exponent in number.", err.pos + 1 + (after[1:] in ("+", "-"))
    if err.msg == "Expecting value" and after[:1] in _LITERALS:  # RapidJSON has taken what matched
        literal, rest = _LITERALS[after[:1]], err.doc[err.pos : err.pos + 8]
        return "Invalid value.", err.pos + len(os.path.commonprefix([literal, rest]))
    if err.msg == "Expecting value" and after[:1] == "-":  # a minus and no digit (reader.h:1201-1202)
        return "Invalid value.", err.pos + 1
    if err.msg == "Invalid control character at":  # a raw control character in a string (reader.h:891-895)
        if after[:1] == "\0":
            return "Missing a closing quotation mark in string.", err.pos
        return "Invalid escape character in string.", err.pos
    return _rapidjson_text(err), err.pos


_NUMBER_END = re.compile(r"[-+0-9.eE]*$")
# The literals RapidJSON reads a character at a time, stopping at the first that does not match (null,
# true, false: reader.h:704-740; NaN and Infinity with kParseNanAndInfFlag, in ParseNumber).
_LITERALS = {"n": "null", "t": "true", "f": "false", "N": "NaN", "I": "Infinity"}


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
    body = _without_byte_order_mark(body)
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
        words, at = _rapidjson_error(err)
        offset = len(text[:at].encode("utf-8", "surrogateescape"))  # RapidJSON counts bytes
        raise invalid_argument(f"JSON Parse error: {words} at offset: {offset}") from None
    except _NumberTooBig as err:
        offset = _offset_of(err.number, text)
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
        ) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    if not_utf8 is not None and end > at_char:
        raise invalid_argument(f"JSON Parse error: the body is not UTF-8 at offset: {not_utf8}")
    if (half := _unpaired_surrogate(text, end)) is not None:
        offset = len(text[:half].encode("utf-8", "surrogateescape"))
        raise invalid_argument(
            f"JSON Parse error: The surrogate pair in string is invalid. at offset: {offset}"
        )
    return document


def _without_byte_order_mark(body: bytes) -> bytes:
    """`body` with a UTF-8 byte order mark at its start blanked out, as RapidJSON's UTF-8 input stream
    skips it (include/rapidjson/encodedstream.h, EncodedInputStream<UTF8<>, MemoryStream>: each of its
    three bytes in turn, when it comes): a file saved as "UTF-8 with BOM" and sent with curl -d @file.
    Blanks, not nothing, keep the offsets in errors counted from the body's start, as RapidJSON's are."""
    skipped = 0
    for mark in b"\xef\xbb\xbf":
        if body[skipped : skipped + 1] == bytes([mark]):
            skipped += 1
    return b" " * skipped + body[skipped:] if skipped else body


_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _unpaired_surrogate(text: str, end: int) -> int | None:
    """Where the first `\\u` escape of half a UTF-16 surrogate pair without its other half begins, in a
    document already parsed; None if there is none. Python's parser takes such a half as a character
    that UTF-8 cannot hold, and it would fail every step after. RapidJSON refuses a first half without
    its second (reader.h:871-878); a second half alone it takes as three bytes that are not UTF-8, and
    we refuse that too (docs/tf-serving-compat.md, section 10)."""
    if not _SURROGATE_ESCAPE.search(text, 0, end):
        return None
    first_half, first_end = None, -1
    for escape in _ESCAPE.finditer(text, 0, end):  # escapes are read in pairs: `\\\\ud800` is none
        code = int(escape[1], 16) if escape[1] else 0
        if first_half is not None:
            if escape.start() != first_end or not 0xDC00 <= code <= 0xDFFF:
                return first_half
            first_half = None
        elif 0xD800 <= code <= 0xDBFF:
            first_half, first_end = escape.start(), escape.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return escape.start()
    return first_half


def _json_integer(text: str) -> int | float:
    """A JSON integer as RapidJSON holds it: exactly when 64 bits hold it, else as a double (Python's
    own int() of a 5,000-digit number would raise, and a 500-digit one is no tensor value)."""
    if len(text) <= 21 and -(2**63) <= (value := int(text)) < 2**64:
        return value
    return _json_double(text)


class _NumberTooBig(ValueError):
    """A number no double holds, which RapidJSON refuses where the number starts (reader.h:1235,1318)."""

    def __init__(self, number: str) -> None:
        super().__init__(number)
        self.number = number


def _json_double(text: str) -> float:
    """A JSON number as a double, refused when a double cannot hold it, as RapidJSON refuses it."""
    number = float(text)
    if math.isinf(number):
        raise _NumberTooBig(text)
    return number


# A JSON document's strings and numbers, in order: the numbers outside strings are the document's.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?', re.DOTALL)


def _offset_of(number: str, text: str) -> int:
    """The byte offset of the first number in the document written as `number`."""
    found = next(token for token in _TOKENS.finditer(text) if token[0] == number)
    return len(text[: found.start()].encode("utf-8", "surrogateescape"))


# NaN, Infinity and -Infinity are numbers, as RapidJSON reads them for TF Serving
# (kParseNanAndInfFlag, util/json_tensor.cc:484): a model input holding one is refused where inputs
# are checked (serving/servable.py), and under a key no one reads it is no error.
_DECODER = json.JSONDecoder(parse_int=_json_integer, parse_float=_json_double)
