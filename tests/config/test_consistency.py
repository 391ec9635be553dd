"""Settings valid alone but hazardous together fail at start, naming both variables."""

from __future__ import annotations

import os

import pytest

from config import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("FORWARDER_", "DD_")):
            monkeypatch.delenv(name)


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


def test_defaults_are_consistent() -> None:
    """Nothing set: every rule holds."""
    load_settings()


def test_retention_shorter_than_the_max_age_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state that expires before a failing incident is dead-lettered would vanish silently."""
    message = _refused(monkeypatch, FORWARDER_RETENTION_S="86400", FORWARDER_MAX_AGE_S="259200")
    assert "FORWARDER_RETENTION_S (86400 s) must be at least FORWARDER_MAX_AGE_S (259200 s)" in (
        message
    )
    assert "would expire before it could become a dead letter" in message


def test_retention_must_cover_the_max_age_plus_a_last_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Equal to the max age is not enough: the last backoff and request come after it."""
    for name, value in {
        "FORWARDER_MAX_AGE_S": "1000",
        "FORWARDER_BACKOFF_MAX_S": "100",
        "FORWARDER_LEASE_S": "20",
        "FORWARDER_ORPHAN_WAIT_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FORWARDER_RETENTION_S", "1000")
    message = _refused(monkeypatch)
    assert "FORWARDER_BACKOFF_MAX_S (100 s) + FORWARDER_LEASE_S (20 s) = 1120 s" in message
    monkeypatch.setenv("FORWARDER_RETENTION_S", "1120")
    assert load_settings().retention_s == 1120


def test_retention_shorter_than_the_orphan_wait_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finish waiting for its start must outlive the wait, to become a dead letter."""
    message = _refused(
        monkeypatch,
        FORWARDER_MAX_AGE_S="60",
        FORWARDER_RETENTION_S="3600",
        FORWARDER_ORPHAN_WAIT_S="21600",
    )
    assert "FORWARDER_RETENTION_S (3600 s) must be at least FORWARDER_ORPHAN_WAIT_S (21600 s)" in (
        message
    )
    assert "FORWARDER_MAX_AGE_S" not in message  # only the rule that is broken


@pytest.mark.parametrize("lease_s", ["5", "10", "11.5"])
def test_a_lease_must_outlast_a_request_by_its_slack(
    monkeypatch: pytest.MonkeyPatch, lease_s: str
) -> None:
    """A lease shorter than a request's hard bound lets two workers send one incident at once."""
    message = _refused(monkeypatch, FORWARDER_LEASE_S=lease_s, FORWARDER_HTTP_TIMEOUT_S="10")
    assert (
        f"FORWARDER_LEASE_S ({lease_s} s) must be at least FORWARDER_HTTP_TIMEOUT_S (10 s) + 2 s"
        in message
    )
    assert "in flight" in message


def test_a_lease_at_the_bound_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's hard bound (timeout + 1 s) plus 1 s to start it is enough."""
    monkeypatch.setenv("FORWARDER_HTTP_TIMEOUT_S", "1")
    monkeypatch.setenv("FORWARDER_LEASE_S", "3")
    assert load_settings().lease_s == 3


def test_every_broken_rule_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One start tells everything that is inconsistent, one line a rule."""
    message = _refused(monkeypatch, FORWARDER_LEASE_S="5", FORWARDER_RETENTION_S="3600")
    lines = message.splitlines()
    assert lines[0] == "invalid configuration:"
    assert [line.split(" (")[0].strip() for line in lines[1:]] == [
        "FORWARDER_LEASE_S",
        "FORWARDER_RETENTION_S",
        "FORWARDER_RETENTION_S",
    ]
