"""Label matchers as Alertmanager writes them: reading, writing back, matching, refusing."""

from __future__ import annotations

import pytest

from workers.ingest.sources.matchers import MatcherError, all_match, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "operator", "value"),
    [
        ('severity=~"critical|page"', "severity", "=~", "critical|page"),
        ('severity="critical"', "severity", "=", "critical"),
        ('team!=""', "team", "!=", ""),
        ('env!~"dev|test"', "env", "!~", "dev|test"),
        ("severity=critical", "severity", "=", "critical"),  # unquoted, as amtool allows
        ("team=", "team", "=", ""),
        ('  team = "a b"  ', "team", "=", "a b"),
        ('_private_1="x"', "_private_1", "=", "x"),
        ('a="x\\"y"', "a", "=", 'x"y'),
        ('a="x\\\\y"', "a", "=", "x\\y"),
        ('a="line1\\nline2"', "a", "=", "line1\nline2"),
        ('a="é=~!"', "a", "=", "é=~!"),
        ('a="tab\there"', "a", "=", "tab\there"),
    ],
)
def test_parse_reads_name_operator_and_unescaped_value(
    text: str, name: str, operator: str, value: str
) -> None:
    """Blanks around the parts are dropped; \\" \\\\ and \\n are unescaped in a quoted value."""
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.operator, matcher.value) == (name, operator, value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('instance=~"host\\d+"', "host\\d+"),
        ('instance=~"a\\.b"', "a\\.b"),
        ('a="\\t"', "\\t"),
    ],
)
def test_any_other_escape_keeps_its_backslash_as_alertmanager_does(text: str, value: str) -> None:
    """\\d and \\. in a regular expression keep their meaning (Alertmanager's parser agrees)."""
    assert parse_matcher(text).value == value


def test_a_regular_expressions_escape_matches_what_it_says() -> None:
    """host\\d+ takes host12 and not hostd; a\\.b takes a.b and not axb."""
    digits = parse_matcher('instance=~"host\\d+"')
    assert digits.matches({"instance": "host12"})
    assert not digits.matches({"instance": "hostdd"})
    dot = parse_matcher('instance=~"a\\.b"')
    assert dot.matches({"instance": "a.b"})
    assert not dot.matches({"instance": "axb"})


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('severity=~"critical|page"', 'severity=~"critical|page"'),
        ("severity=critical", 'severity="critical"'),
        ('  team != "" ', 'team!=""'),
        ('a="x\\"y"', 'a="x\\"y"'),
        ('a="x\\\\y"', 'a="x\\\\y"'),
        ('a="l1\\nl2"', 'a="l1\\nl2"'),
        ('a=~"host\\d+"', 'a=~"host\\\\d+"'),
    ],
)
def test_str_writes_the_matcher_quoted_and_reads_back_the_same(text: str, written: str) -> None:
    """str() is the canonical form: quoted, escaped, and parsed again to the same matcher."""
    matcher = parse_matcher(text)
    assert str(matcher) == written
    again = parse_matcher(str(matcher))
    assert (again.name, again.operator, again.value) == (
        matcher.name,
        matcher.operator,
        matcher.value,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "severity",
        '="critical"',
        '1severity="x"',
        'sev-erity="x"',
        'severity=="x"',
        'severity~="x"',
        'severity<>"x"',
        'severity="unterminated',
        'severity="x"trailing',
        "severity=two words",
        '{severity="x"}',
        'severity="x",team="y"',
        'severity="a"b"',
    ],
)
def test_what_is_not_a_matcher_is_refused_showing_it_and_the_form(text: str) -> None:
    """The message quotes the text and shows how a matcher is written."""
    with pytest.raises(MatcherError) as caught:
        parse_matcher(text)
    assert str(caught.value) == (
        f"{text!r} is not a matcher: write label, operator (= != =~ !~) and a quoted value, "
        'e.g. severity=~"critical|page"'
    )


@pytest.mark.parametrize("text", ['severity=~"("', 'severity!~"[a-"', 'a=~"*"'])
def test_an_invalid_regular_expression_is_refused_saying_so(text: str) -> None:
    """=~ and !~ compile their value; a bad one names the matcher and re's reason."""
    with pytest.raises(MatcherError) as caught:
        parse_matcher(text)
    assert str(caught.value).startswith(f"{text!r}: the regular expression is invalid: ")


def test_equality_operators_do_not_compile_their_value() -> None:
    """= and != compare text: "(" is a value, not a broken pattern."""
    matcher = parse_matcher('a="("')
    assert matcher.pattern is None
    assert matcher.matches({"a": "("})


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ('a="x"', {"a": "x"}, True),
        ('a="x"', {"a": "X"}, False),
        ('a="x"', {}, False),
        ('a=""', {}, True),
        ('a=""', {"a": ""}, True),
        ('a!="x"', {}, True),
        ('a!=""', {"a": "x"}, True),
        ('a!=""', {}, False),
        ('a=~"x|y"', {"a": "y"}, True),
        ('a=~"x"', {"a": "xx"}, False),  # the whole value, as Prometheus anchors it
        ('a=~"x"', {"a": "ax"}, False),
        ('a=~".*"', {}, True),
        ('a=~".+"', {}, False),
        ('a!~"x|y"', {"a": "z"}, True),
        ('a!~"x|y"', {"a": "x"}, False),
        ('a!~".+"', {}, True),
    ],
)
def test_matches_on_labels_with_a_missing_label_empty(
    text: str, labels: dict[str, str], matches: bool
) -> None:
    """The four operators, anchored regular expressions, and "" for a label not there."""
    assert parse_matcher(text).matches(labels) is matches


def test_all_match_needs_every_matcher_and_none_takes_everything() -> None:
    """No matcher: every alert; several: all of them."""
    matchers = (parse_matcher('severity=~"critical|page"'), parse_matcher('team!=""'))
    assert all_match((), {})
    assert all_match(matchers, {"severity": "page", "team": "ops"})
    assert not all_match(matchers, {"severity": "page"})
    assert not all_match(matchers, {"severity": "info", "team": "ops"})
