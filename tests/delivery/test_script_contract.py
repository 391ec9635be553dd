"""The Lua scripts and the Python side agree on names: ARGV groups, KEYS, hash fields.

Read from the Lua source, so that a script and its record cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from forwarder import DeploymentEvent, DeploymentPatchByVersion, IncidentEvent
from forwarder.protocol import (
    ATTRIBUTE_PREFIX,
    DELETE_FIELD,
    PATCH_FIELD_PREFIX,
    POSITION_PREFIX,
    GateField,
    LetterField,
    LetterSource,
    RedisKeys,
    StateField,
    StatsField,
)
from workers.delivery.fold import FieldUpdate, IncidentUpdate
from workers.delivery.operations import Step
from workers.delivery.poison import PoisonEntry
from workers.delivery.records import Settlement, Verdict
from workers.delivery.scripts import SCRIPTS, FoldArgs, Script, argv, layout

LUA = resources.files("workers.delivery").joinpath("lua")
UNPACK = re.compile(
    r"local\s+(?P<names>\w+(?:\s*,\s*\w+)*)\s*=\s*unpack\((?P<table>ARGV|KEYS),\s*"
    r"(?P<first>[^,]+),\s*(?P<last>[^)]+)\)"
)
HASH_FIELD_AT: dict[str, slice] = {
    # Where a command's field names are, counting the command as 0 and the key as 1.
    "HGET": slice(2, 3),
    "HEXISTS": slice(2, 3),
    "HSETNX": slice(2, 3),
    "HINCRBY": slice(2, 3),
    "HINCRBYFLOAT": slice(2, 3),
    "HSTRLEN": slice(2, 3),
    "HDEL": slice(2, None),
    "HMGET": slice(2, None),
    "HSET": slice(2, None, 2),
    "HMSET": slice(2, None, 2),
}
HASH_FIELDS: dict[str, frozenset[str]] = {
    "gate_key": frozenset(GateField),
    "stats_key": frozenset(StatsField),
}
NO_HASHES = frozenset({"heartbeat.lua", "forget_consumers.lua"})
"""Scripts that touch no hash (the others must be seen to be checked)."""
ATTRIBUTES = frozenset(
    name
    for model in (IncidentEvent, DeploymentEvent)
    for field_name, info in model.model_fields.items()
    for name in (field_name, info.alias)
    if name
) | {DELETE_FIELD, *(PATCH_FIELD_PREFIX + name for name in DeploymentPatchByVersion.model_fields)}
"""The POSTs' attributes, the DELETE mark and ``patch.<attribute>`` (a PATCH by version
names every attribute a PATCH has)."""


def source(script: Script[Any]) -> str:
    return LUA.joinpath(script.file).read_text()


def unpacks(text: str, table: str) -> list[re.Match[str]]:
    return [m for m in UNPACK.finditer(text) if m["table"] == table]


def names(match: re.Match[str]) -> tuple[str, ...]:
    return tuple(name.strip() for name in match["names"].split(","))


def calls(text: str, opener: str = r"redis\.call\(") -> Iterator[list[str]]:
    """The arguments of every ``redis.call(...)`` (or other ``opener``), as source text split
    at top-level commas."""
    for start in (m.end() for m in re.finditer(opener, text)):
        args, depth, quote, current = [], 0, "", ""
        for char in text[start:]:
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    break
                depth -= 1
            elif char == "," and depth == 0:
                args.append(current.strip())
                current = ""
                continue
            current += char
        args.append(current.strip())
        yield args


def literal(arg: str) -> str | None:
    """The string an argument spells if it is one quoted literal."""
    found = re.fullmatch(r"'([^']*)'", arg)
    return found[1] if found else None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.file)
def test_argv_is_read_in_the_groups_of_its_record(script: Script[Any]) -> None:
    """Each script's ``unpack(ARGV, ...)`` lines name its record's fields, in order and count."""
    text = source(script)
    found = unpacks(text, "ARGV")
    assert [names(m) for m in found] == layout(script.args)
    first, *groups = found
    assert (first["first"].strip(), first["last"].strip()) == ("1", str(len(names(first))))
    for group in groups:
        start = group["first"].strip()
        assert group["last"].replace(" ", "") == f"{start}+{len(names(group)) - 1}"
    assert not re.search(r"ARGV\[\s*\d", text), "read ARGV through unpack, not by position"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.file)
def test_keys_are_the_ones_python_passes(script: Script[Any]) -> None:
    """Each script names its KEYS as ``<RedisKeys attribute>_key``, as ``Script.keys`` lists."""
    text = source(script)
    (found,) = unpacks(text, "KEYS")
    assert names(found) == tuple(f"{name}_key" for name in script.keys)
    assert (found["first"].strip(), found["last"].strip()) == ("1", str(len(script.keys)))
    for name in script.keys:
        assert isinstance(getattr(RedisKeys(), name), str)
    others = re.findall(r"KEYS\[([^\]]*)\]", text)
    if script.incident_keys:
        assert others, "the incident hashes come after the fixed keys"
        assert all(re.fullmatch(rf"{len(script.keys)}\s*\+\s*\w+", o) for o in others), others
    else:
        assert others == []


def test_every_script_file_is_described() -> None:
    """Every Lua script in the package has a ``Script`` (and so a record and its keys)."""
    files = {p.name for p in LUA.iterdir() if p.name.endswith(".lua") and p.name[0] != "_"}
    assert files == {script.file for script in SCRIPTS}


def field_is_named(key: str, arg: str) -> bool:
    """Whether a field argument of a hash command on ``key`` is a name protocol defines."""
    name = literal(arg)
    if key in HASH_FIELDS:
        return name in HASH_FIELDS[key]
    if name is not None:  # an incident's hash: bookkeeping, or an attribute the models know
        return name in set(StateField) or any(
            name.startswith(prefix) and name[len(prefix) :] in ATTRIBUTES
            for prefix in (ATTRIBUTE_PREFIX, POSITION_PREFIX)
        )
    built = re.fullmatch(r"'([^']*)'\s*\.\.\s*\w+", arg)  # 's:' .. field
    if built is not None and built[1] == "done:":  # 'done:' .. step
        return all(f"done:{step}" in set(StateField) for step in Step)
    return built is not None and built[1] in (ATTRIBUTE_PREFIX, POSITION_PREFIX)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.file)
def test_hash_fields_in_lua_are_named_in_protocol(script: Script[Any]) -> None:
    """Every field a script spells in a hash command (or a dead letter) is in protocol."""
    checked = 0
    for args in calls(source(script)):
        command = (literal(args[0]) or "").upper()
        key = args[1] if len(args) > 1 else ""
        if command in HASH_FIELD_AT:
            assert key not in {"due_key", "inflight_key", "ingest_key", "workers_key"}, args
            for arg in args[HASH_FIELD_AT[command]]:
                assert field_is_named(key, arg), f"{command} {key} {arg}"
                checked += 1
        elif command == "XADD" and key == "dead_key":
            pairs = dict(zip(args[3::2], args[4::2], strict=True))
            assert {literal(f) for f in pairs} <= set(LetterField), args
            assert literal(pairs["'source'"]) in set(LetterSource), args
            checked += len(pairs)
    for key, field, *_ in calls(source(script), r"\badd\("):  # the prelude's safe counter
        assert field_is_named(key, field), f"add {key} {field}"
        checked += 1
    gate_reads = re.findall(r"\bg\.(\w+)", source(script))  # claim.lua's copy of the gate
    assert set(gate_reads) <= set(GateField), gate_reads
    assert checked or gate_reads or script.file in NO_HASHES


def test_argv_flattens_a_record_as_its_layout_says() -> None:
    """Counts stand in for tuples; the items follow, records depth first, bools as 0/1."""
    update = IncidentUpdate("inc", (FieldUpdate("team", "p1", '"ops"'),), force=True)
    poison = PoisonEntry("1-0", "bad", "{}")
    args = FoldArgs(
        "group",
        10,
        20,
        "{p}:finished:",
        "{p}:second:",
        "{p}:version:",
        None,
        ("1-0", "2-0"),
        (poison,),
        (update,),
    )
    assert argv(args) == [
        *("group", 10, 20, "{p}:finished:", "{p}:second:", "{p}:version:", "", 2, 1, 1),
        *("1-0", "2-0"),
        *("1-0", "bad", "{}", "utf-8", 0, 0),
        *("inc", 1, 1),
        *("team", "p1", '"ops"'),
    ]


def test_settlement_verdicts_go_as_their_values() -> None:
    """A ``Verdict`` reaches the script as the word settle.lua compares with."""
    assert argv(Settlement("inc", 3, Verdict.DELIVERED)) == [
        *("inc", 3, "delivered", 0, "", "", ""),
        *(0, 0, 0),  # sent_at_ms, doubt, outage
        *("", "", 0, 0, 0),  # step, step_done, more, forget, app_key_wait
    ]
