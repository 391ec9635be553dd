"""``doctor``'s judgments: facts in, checks out, with a fixed clock and no I/O."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from workers.ops.doctor import SUPPORTED_SITES, diagnose, settings_url
from workers.ops.doctor_records import Check, ClockReading, Facts, KeyAnswer, Level, RedisFacts
from workers.ops.replication import Replication
from workers.ops.status import Status

NOW_MS = 1_800_000_000_000
INFO = {
    "redis_version": "7.2.4",
    "maxmemory_policy": "noeviction",
    "aof_enabled": 1,
    "used_memory": 10 * 1_048_576,
    "maxmemory": 0,
}


def status(**changes: Any) -> Status:
    """A healthy snapshot: one live worker, nothing waiting; ``changes`` replace fields."""
    base = Status(
        backlog=0,
        unread=0,
        pending=0,
        due_now=0,
        scheduled=0,
        in_flight=0,
        dead_letters=0,
        delivered_total=5,
        retries_total=0,
        last_success_ms=NOW_MS - 1000,
        last_error=None,
        last_error_ms=None,
        gate_closed_until_ms=None,
        gate_reason=None,
        breaker_opened_ms=None,
        breaker_failures=0,
        breaker_probes=0,
        breaker_next_probe_ms=None,
        breaker_opened_total=0,
        app_key_waiting=0,
        app_key_paused_until_ms=None,
        app_key_detail=None,
        same_second_total=0,
        live_workers=("vm:42",),
        now_ms=NOW_MS,
        replication=Replication("127.0.0.1:6379", "master", 0, (), 0),
    )
    return dataclasses.replace(base, **changes)


def redis_facts(**changes: Any) -> RedisFacts:
    base = RedisFacts(
        info=INFO,
        save="",
        appendfsync="everysec",
        status=status(),
        clock=ClockReading(NOW_MS - 1, NOW_MS, NOW_MS + 1),
        oldest_entry_ms=None,
        earliest_due_ms=None,
    )
    return dataclasses.replace(base, **changes)


def facts(**changes: Any) -> Facts:
    base = Facts(
        site="datadoghq.com",
        api_url="https://api.datadoghq.com",
        api_key=KeyAnswer(status=200, valid=True),
        app_key_set=True,
        redis_url="redis://:***@redis:6379/0",
        redis=redis_facts(),
    )
    return dataclasses.replace(base, **changes)


def check(found: Facts, name: str) -> Check:
    [one] = [c for c in diagnose(found) if c.name == name]
    return one


def test_a_healthy_forwarder_passes_every_check() -> None:
    """Nothing fails or warns; the data-source reminder is the one info, with its URL."""
    checks = diagnose(facts())
    assert [c.name for c in checks if c.level is not Level.OK] == ["data_source"]
    assert all(c.ok for c in checks)
    assert "https://app.datadoghq.com/ci/settings/dora" in (check(facts(), "data_source").fix or "")


@pytest.mark.parametrize(
    ("answer", "level", "words"),
    [
        (None, Level.FAIL, "not set"),
        (KeyAnswer(status=None, error="ConnectError: refused"), Level.FAIL, "cannot reach"),
        (KeyAnswer(status=403), Level.FAIL, "refused"),
        (KeyAnswer(status=401), Level.FAIL, "refused"),
        (KeyAnswer(status=200, valid=False), Level.FAIL, "refused"),
        (KeyAnswer(status=429), Level.WARN, "could not be checked"),
        (KeyAnswer(status=503), Level.WARN, "could not be checked"),
        (KeyAnswer(status=404), Level.FAIL, "not Datadog's answer"),
        # A 200 that is not Datadog's (a captive portal, a proxy's page): not a refused key.
        (KeyAnswer(status=200), Level.FAIL, "not Datadog's answer"),
        (KeyAnswer(status=200, valid=True), Level.OK, "accepted"),
    ],
)
def test_api_key_answers(answer: KeyAnswer | None, level: Level, words: str) -> None:
    """Each answer of the validate endpoint gets its verdict; every failure names a fix."""
    found = check(facts(api_key=answer), "api_key")
    assert found.level is level
    assert words in found.detail
    assert found.level is Level.OK or found.fix


def test_refused_key_points_at_the_key_and_the_site() -> None:
    """A 403 is the key or the site: the fix names both."""
    fix = check(facts(api_key=KeyAnswer(status=403)), "api_key").fix or ""
    assert "DD_API_KEY" in fix
    assert "DD_SITE" in fix


def test_unreachable_api_points_at_the_network() -> None:
    """No answer at all: network, proxy or FORWARDER_API_URL."""
    found = check(facts(api_key=KeyAnswer(status=None, error="ConnectTimeout")), "api_key")
    assert "FORWARDER_API_URL" in (found.fix or "")


@pytest.mark.parametrize("site", ["ddog-gov.com", "us2.ddog-gov.com"])
def test_government_sites_have_no_dora(site: str) -> None:
    """DORA Metrics is not offered on the gov sites: a failure."""
    assert check(facts(site=site), "site").level is Level.FAIL


def test_sites() -> None:
    """Every commercial site passes; an unknown one warns; the settings page per site."""
    assert all(check(facts(site=site), "site").level is Level.OK for site in SUPPORTED_SITES)
    assert check(facts(site="datadoghq.co"), "site").level is Level.WARN
    assert settings_url("datadoghq.eu") == "https://app.datadoghq.eu/ci/settings/dora"
    assert settings_url("us5.datadoghq.com") == "https://us5.datadoghq.com/ci/settings/dora"


def test_app_key() -> None:
    """Needed once operations wait; refused: fail; not needed: only a note."""
    waiting = redis_facts(status=status(app_key_waiting=3, app_key_detail="DD_APP_KEY not set"))
    found = check(facts(app_key_set=False, redis=waiting), "app_key")
    assert found.level is Level.FAIL
    assert "3 PATCH/DELETE" in found.detail
    assert "DD_APP_KEY" in (found.fix or "")
    paused = redis_facts(status=status(app_key_waiting=1, app_key_paused_until_ms=NOW_MS + 1))
    assert "refused" in check(facts(redis=paused), "app_key").detail
    assert check(facts(app_key_set=False), "app_key").level is Level.INFO
    assert check(facts(), "app_key").level is Level.OK


@pytest.mark.parametrize(
    ("info", "save", "name", "level"),
    [
        ({**INFO, "redis_version": "6.0.9"}, "", "redis_version", Level.FAIL),
        ({**INFO, "redis_version": "6.2.0"}, "", "redis_version", Level.OK),
        ({**INFO, "maxmemory_policy": "allkeys-lru"}, "", "redis_eviction", Level.FAIL),
        ({**INFO, "aof_enabled": 0}, "", "redis_persistence", Level.FAIL),
        ({**INFO, "aof_enabled": 0}, "3600 1", "redis_persistence", Level.WARN),
        ({**INFO, "aof_enabled": 0}, "unknown", "redis_persistence", Level.WARN),
        ({**INFO, "used_memory": 79, "maxmemory": 100}, "", "redis_memory", Level.OK),
        ({**INFO, "used_memory": 85, "maxmemory": 100}, "", "redis_memory", Level.WARN),
        ({**INFO, "used_memory": 96, "maxmemory": 100}, "", "redis_memory", Level.FAIL),
    ],
)
def test_redis_configuration(info: dict[str, Any], save: str, name: str, level: Level) -> None:
    """Version, eviction, persistence and memory headroom, each against its bound."""
    assert check(facts(redis=redis_facts(info=info, save=save)), name).level is level


def test_persistence_unknown_where_config_is_not_allowed() -> None:
    """CONFIG refused (managed Redis): AOF is known off, snapshots are not known on."""
    info = {**INFO, "aof_enabled": 0}
    found = check(facts(redis=redis_facts(info=info, save="unknown")), "redis_persistence")
    assert "snapshot settings unknown" in found.detail
    assert "snapshots only" not in found.detail


def test_replicas_and_role() -> None:
    """Fewer replicas than FORWARDER_PUBLISH_REPLICAS fails; so does a replica as the Redis."""
    short = status(replication=Replication("r:6379", "master", 0, (), 1))
    found = check(facts(redis=redis_facts(status=short)), "replicas")
    assert found.level is Level.FAIL
    assert "FORWARDER_PUBLISH_REPLICAS=1" in found.detail
    enough = status(replication=Replication("r:6379", "master", 1, ("x",), 1))
    assert check(facts(redis=redis_facts(status=enough)), "replicas").level is Level.OK
    replica = status(replication=Replication("r:6379", "slave", 0, (), 0, "p:6379 (link up)"))
    assert check(facts(redis=redis_facts(status=replica)), "redis").level is Level.FAIL


@pytest.mark.parametrize(
    ("before_ms", "after_ms", "level"),
    [
        (NOW_MS + 120_000, NOW_MS + 120_002, Level.FAIL),  # two minutes ahead
        (NOW_MS - 120_000, NOW_MS - 119_998, Level.FAIL),  # two minutes behind
        (NOW_MS + 5_000, NOW_MS + 5_002, Level.WARN),
        (NOW_MS + 200, NOW_MS + 202, Level.OK),
        (NOW_MS - 1_000, NOW_MS + 4_000, Level.OK),  # 1.5 s off, but a 5 s round trip
    ],
)
def test_clock_skew(before_ms: float, after_ms: float, level: Level) -> None:
    """This host's clock against Redis' TIME, beyond what the round trip explains."""
    clock = ClockReading(before_ms, NOW_MS, after_ms)
    assert check(facts(redis=redis_facts(clock=clock)), "clock").level is level


def test_fleet() -> None:
    """No worker, a refused key, an open breaker, dead letters: each fails with its fix."""
    cases = {
        "workers": status(live_workers=()),
        "gate": status(gate_closed_until_ms=NOW_MS + 9_000, gate_reason="auth"),
        "breaker": status(breaker_opened_ms=NOW_MS - 5_000, breaker_next_probe_ms=NOW_MS + 1),
        "dead_letters": status(dead_letters=2),
    }
    for name, snapshot in cases.items():
        found = check(facts(redis=redis_facts(status=snapshot)), name)
        assert found.level is Level.FAIL, name
        assert found.fix, name
    assert "dora-forwarder run" in (
        check(facts(redis=redis_facts(status=cases["workers"])), "workers").fix or ""
    )
    assert "dead-letters list" in (
        check(facts(redis=redis_facts(status=cases["dead_letters"])), "dead_letters").fix or ""
    )
    limited = status(gate_closed_until_ms=NOW_MS + 9_000, gate_reason="rate_limit")
    assert check(facts(redis=redis_facts(status=limited)), "gate").level is Level.WARN


@pytest.mark.parametrize(
    ("entry_age_s", "due_age_s", "level"),
    [
        (None, None, Level.OK),
        (10, None, Level.OK),
        (90, None, Level.WARN),
        (None, 400, Level.FAIL),
        (10, 301, Level.FAIL),
        (None, -30, Level.OK),  # due in 30 s: a scheduled retry, not a backlog
    ],
)
def test_backlog_age(entry_age_s: int | None, due_age_s: int | None, level: Level) -> None:
    """The oldest unfolded entry or overdue incident, against 60 s (warn) and 300 s (fail)."""
    data = redis_facts(
        oldest_entry_ms=None if entry_age_s is None else NOW_MS - entry_age_s * 1000,
        earliest_due_ms=None if due_age_s is None else NOW_MS - due_age_s * 1000,
    )
    assert check(facts(redis=data), "backlog").level is level


def test_unreachable_redis_is_one_failure_and_skips_what_needs_it() -> None:
    """Without Redis: one failed check naming the masked URL; no clock, fleet or backlog."""
    checks = diagnose(facts(redis=None, redis_error="ConnectionError: refused"))
    names = [c.name for c in checks]
    assert names == ["api_key", "site", "app_key", "data_source", "redis"]
    assert "redis://:***@redis:6379/0" in checks[-1].detail
    assert not checks[-1].ok


def test_a_user_without_permission_is_told_so_not_to_start_redis() -> None:
    """An ACL user that may not run INFO: Redis answered, so the fix is the user, not Redis."""
    found = check(
        facts(
            redis=None,
            redis_error="NoPermissionError: this user has no permissions to run the 'info' command",
        ),
        "redis",
    )
    assert found.level is Level.FAIL
    assert "Redis user" in (found.fix or "")
    assert "start Redis" not in (found.fix or "")
