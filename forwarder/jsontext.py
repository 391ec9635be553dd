"""JSON text as producers send it, parsed with hostile input in mind; text made safe to show.

Every producer path that takes JSON text (``publish`` lines, a raw entry's ``event`` field,
the ingest endpoint's body) parses it here, so that the same bytes fail with the same
reason everywhere, and only ever with ``JsonTextError``: bytes that are not UTF-8, nesting
past the parser's recursion limit, ``NaN``/``Infinity`` (not JSON), numbers no event can
hold (``1e400`` would become infinity, a 5,000-digit integer trips Python's digit limit).
``printable`` escapes what an error echoes back of such input before anyone shows it. Pure.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, NoReturn

MAX_INTEGER_DIGITS: Final = 40
"""Longest integer literal accepted; a nanosecond timestamp has 19 digits."""

_SHOWN_CHARS: Final = 24


class JsonTextError(ValueError):
    """Text that is not JSON an event can come from; ``reason`` says why, without position.

    ``line`` and ``column`` (1-based) say where, when the parser knows.
    """

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(reason + where)


def printable(text: str) -> str:
    """``text`` with every unprintable character escaped (``\\x1b``, ``\\ud800``, ``\\n``).

    What an error echoes back of its input is shown in terminals, logs and JSON: no control
    sequence, and no lone surrogate (which no UTF-8 encoder accepts), gets through.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def utf8(data: bytes) -> str:
    """``data`` decoded as UTF-8, or ``JsonTextError`` naming the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise JsonTextError(
            f"it is not UTF-8 text ({exc.reason}: byte 0x{bad} at offset {exc.start})"
        ) from None


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise ValueError(f"a number of {digits} digits is out of range")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {_shown(text)} is out of range")
    return value


# One decoder for every call: json.loads with hooks would build a new one each time.
_DECODER: Final = json.JSONDecoder(parse_constant=_constant, parse_int=_integer, parse_float=_real)


def parse(text: str | bytes) -> Any:
    """The value of JSON ``text``; bytes may be UTF-8, -16 or -32 (RFC 8259).

    Raises ``JsonTextError`` (and nothing else) when the text is not JSON an event can
    come from.
    """
    if isinstance(text, bytes):
        encoding = json.detect_encoding(text)
        if encoding.startswith("utf-8"):
            text = utf8(text.removeprefix(b"\xef\xbb\xbf"))
        else:
            try:
                text = text.decode(encoding)
            except UnicodeDecodeError as exc:
                raise JsonTextError(
                    f"it is not {encoding.upper()} text ({exc.reason} at offset {exc.start})"
                ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise JsonTextError(exc.msg, exc.lineno, exc.colno) from None
    except RecursionError:
        raise JsonTextError("it is nested too deeply") from None
    except ValueError as exc:  # raised by the hooks above
        raise JsonTextError(str(exc)) from None
