"""Label matchers as Alertmanager writes them: ``severity=~"critical|page"``. Pure.

They choose which alerts of a notification are incidents. The four operators are
Prometheus': ``=``, ``!=``, ``=~``, ``!~``; a regular expression matches the whole value
(Prometheus anchors it); a label the alert lacks has the empty value, so ``team!=""``
means "has a team". Every matcher must match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

_MATCHER: Final = re.compile(
    r"""\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^"\s]*)\s*"""
)
_ESCAPES: Final = {'\\"': '"', "\\\\": "\\", "\\n": "\n"}


class MatcherError(ValueError):
    """A matcher cannot be read; the message shows it and says why."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One ``name op value`` condition on an alert's labels."""

    name: str
    operator: str
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.pattern is not None:
            found = self.pattern.fullmatch(actual) is not None
            return found if self.operator == "=~" else not found
        return (actual == self.value) == (self.operator == "=")

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.operator}"{escaped}"'


def _unquoted(text: str) -> str:
    # As Alertmanager reads them: \" \\ \n are escapes; any other backslash stays, so that
    # a regular expression's escapes (\d, \.) mean what they say.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\.", lambda m: _ESCAPES.get(m.group(0), m.group(0)), text[1:-1])
    return text


def parse_matcher(text: str) -> Matcher:
    """``severity=~"critical|page"`` as a ``Matcher``; ``MatcherError`` says what is wrong."""
    found = _MATCHER.fullmatch(text)
    if found is None:
        raise MatcherError(
            f"{text!r} is not a matcher: write label, operator (= != =~ !~) and a quoted "
            'value, e.g. severity=~"critical|page"'
        )
    name, operator, value = found["name"], found["op"], _unquoted(found["value"])
    pattern = None
    if operator in {"=~", "!~"}:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise MatcherError(f"{text!r}: the regular expression is invalid: {exc}") from None
    return Matcher(name, operator, value, pattern)


def all_match(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches ``labels`` (no matcher: every alert)."""
    return all(matcher.matches(labels) for matcher in matchers)
