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


def test_a_retention_shorter_than_the_max_age_and_orphan_wait_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No longer a hazard: a state still to send never expires (tests/delivery/test_expiry.py
    holds that on real Redis), so the retention only bounds the dedupe horizon."""
    monkeypatch.setenv("FORWARDER_RETENTION_S", "3600")
    monkeypatch.setenv("FORWARDER_MAX_AGE_S", "259200")
    monkeypatch.setenv("FORWARDER_ORPHAN_WAIT_S", "21600")
    assert load_settings().retention_s == 3600


def test_a_finish_record_shorter_than_the_state_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record of a delivered finish must outlive the state it protects, naming both."""
    message = _refused(
        monkeypatch, FORWARDER_RETENTION_S="7200", FORWARDER_FINISHED_RETENTION_S="3600"
    )
    assert (
        "FORWARDER_FINISHED_RETENTION_S (3600 s) must be at least FORWARDER_RETENTION_S (7200 s)"
        in message
    )


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
    message = _refused(monkeypatch, FORWARDER_LEASE_S="5", FORWARDER_FINISHED_RETENTION_S="3600")
    lines = message.splitlines()
    assert lines[0] == "invalid configuration:"
    assert [line.split(" (")[0].strip() for line in lines[1:]] == [
        "FORWARDER_LEASE_S",
        "FORWARDER_FINISHED_RETENTION_S",
    ]
