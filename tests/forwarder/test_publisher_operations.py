"""Publishing the operations beside the two POSTs: PATCH a deployment, DELETE an event.

Also what a publisher holds producers to: the preview PATCH by version only where it is
turned on, and a warning (once per service) for deployments Datadog cannot roll back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from forwarder import (
    DeploymentDeletion,
    DeploymentEvent,
    DeploymentPatch,
    DeploymentPatchByVersion,
    IncidentDeletion,
    InvalidEventError,
    InvalidEventsError,
    Publisher,
    Remediation,
    RemediationType,
)
from forwarder import _producer_checks as producer_checks
from forwarder.entry import decode_entry
from forwarder.protocol import PATCH_BY_VERSION_VARIABLE, RedisKeys
from harness import streams

pytestmark = pytest.mark.usefixtures("clean_env")

SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"
GIT = {"repository_url": "https://github.com/acme/checkout", "commit_sha": SHA}
LOGGER = "dora_forwarder.publish"

MakePublisher = Callable[..., Publisher]


@pytest.fixture
def make_publisher(redis_url: str, prefix: str) -> Iterator[MakePublisher]:
    """Publishers on this test's prefix, built after the environment is set; all closed after."""
    made: list[Publisher] = []

    def make(**options: Any) -> Publisher:
        made.append(Publisher.from_url(redis_url, key_prefix=prefix, **options))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()


def enqueued(client: redis.Redis, keys: RedisKeys) -> list[object]:
    """The stream's entries, decoded as a worker decodes them."""
    return [decode_entry(fields) for _, fields in streams.entries(client, keys.ingest)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


# --- change failure ------------------------------------------------------------------------


def test_change_failure_enqueues_a_patch_with_its_remediation(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A mapping or a Remediation; the deployment's id comes back."""
    publisher = make_publisher()
    first = publisher.change_failure(
        "deployment-00000001", remediation={"id": "eG42zNIkVjM", "type": "rollback"}
    )
    second = publisher.change_failure(
        "z_RwVLi7v4Y",  # a short id Datadog made: it can be patched too
        change_failure=False,
        remediation=Remediation(version="v1.12.8", type=RemediationType.ROLLFORWARD),
    )
    third = publisher.change_failure("deployment-00000002")
    assert (first, second, third) == ("deployment-00000001", "z_RwVLi7v4Y", "deployment-00000002")
    assert enqueued(sync_redis, keys) == [
        DeploymentPatch(
            id="deployment-00000001",
            change_failure=True,
            remediation=Remediation(id="eG42zNIkVjM", type=RemediationType.ROLLBACK),
        ),
        DeploymentPatch(
            id="z_RwVLi7v4Y",
            change_failure=False,
            remediation=Remediation(version="v1.12.8", type=RemediationType.ROLLFORWARD),
        ),
        DeploymentPatch(id="deployment-00000002", change_failure=True),
    ]


@pytest.mark.parametrize(
    ("deployment_id", "remediation", "says"),
    [
        ("a/b", None, "id: must be 1-128 characters"),
        ("", None, "id: must be 1-128 characters"),
        ("deployment-00000001", {"id": "x", "type": "revert"}, "remediation.type: Input should"),
        ("deployment-00000001", {"type": "rollback"}, "remediation: remediation names its"),
        ("deployment-00000001", {"id": "x", "version": "v", "type": "rollback"}, "exactly one"),
        ("deployment-00000001", {"id": "x", "type": "rollback", "url": "u"}, "remediation.url"),
        ("deployment-00000001", "rollback", "remediation: Input should be"),
    ],
)
def test_bad_change_failure_is_refused_with_the_field(
    make_publisher: MakePublisher,
    sync_redis: redis.Redis,
    keys: RedisKeys,
    deployment_id: str,
    remediation: Any,
    says: str,
) -> None:
    """An id no deployment can have, or a remediation Datadog would refuse: nothing enqueued."""
    with pytest.raises(InvalidEventError, match=says):
        make_publisher().change_failure(deployment_id, remediation=remediation)
    assert enqueued(sync_redis, keys) == []


# --- change failure by version: a Datadog preview --------------------------------------------


def test_by_version_is_refused_unless_turned_on(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """Off by default: an InvalidEventError on the kind, naming the setting; nothing enqueued."""
    publisher = make_publisher()
    with pytest.raises(InvalidEventError) as caught:
        publisher.change_failure_by_version(service="checkout", env="prod", version="v1")
    (error,) = caught.value.errors
    assert error.field == "kind"
    assert error.reason == (
        "PATCH by version is a Datadog preview: set FORWARDER_PATCH_BY_VERSION=true to send it"
    )
    patch = DeploymentPatchByVersion(service="a", env="b", version="c", change_failure=True)
    with pytest.raises(InvalidEventError, match="FORWARDER_PATCH_BY_VERSION=true"):
        publisher.publish(patch)
    assert enqueued(sync_redis, keys) == []


def test_by_version_is_enqueued_where_turned_on(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """patch_by_version=True: enqueued; the id returned is the one derived for it."""
    publisher = make_publisher(patch_by_version=True)
    returned = publisher.change_failure_by_version(
        service="checkout",
        env="prod",
        version="v1.12.7",
        remediation={"version": "v1.12.8", "type": "rollforward"},
    )
    expected = DeploymentPatchByVersion(
        service="checkout",
        env="prod",
        version="v1.12.7",
        change_failure=True,
        remediation=Remediation(version="v1.12.8", type=RemediationType.ROLLFORWARD),
    )
    assert returned == expected.event_id
    assert enqueued(sync_redis, keys) == [expected]


def test_publish_many_refuses_by_version_by_index(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """In a batch, a refused PATCH by version is one failure with its index; the rest go."""
    patch = DeploymentPatchByVersion(service="a", env="b", version="c", change_failure=True)
    deletion = DeploymentDeletion(id="deployment-00000001")
    with pytest.raises(InvalidEventsError) as caught:
        make_publisher().publish_many([deletion, patch, deletion])
    assert [failure.index for failure in caught.value.failures] == [1]
    assert caught.value.failures[0].errors[0].field == "kind"
    assert enqueued(sync_redis, keys) == [deletion, deletion]


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" on\n", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("", False),
        (None, False),
    ],
)
def test_the_environment_turns_it_on(
    make_publisher: MakePublisher, monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool
) -> None:
    """FORWARDER_PATCH_BY_VERSION is read as the settings read a bool; unset is off."""
    if value is not None:
        monkeypatch.setenv(PATCH_BY_VERSION_VARIABLE, value)
    publisher = make_publisher()
    try:
        publisher.change_failure_by_version(service="a", env="b", version="c")
    except InvalidEventError:
        assert not on
    else:
        assert on


def test_an_explicit_choice_wins_over_the_environment(
    make_publisher: MakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """patch_by_version=False refuses even where the environment says true."""
    monkeypatch.setenv(PATCH_BY_VERSION_VARIABLE, "true")
    with pytest.raises(InvalidEventError):
        make_publisher(patch_by_version=False).change_failure_by_version(
            service="a", env="b", version="c"
        )


def test_a_value_that_is_no_bool_fails_at_construction(
    make_publisher: MakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo is not silently off: a ValueError naming the variable, when the publisher is made."""
    monkeypatch.setenv(PATCH_BY_VERSION_VARIABLE, "ture")
    with pytest.raises(ValueError, match="FORWARDER_PATCH_BY_VERSION must be true or false"):
        make_publisher()


# --- deletions -----------------------------------------------------------------------------


def test_deletions_are_enqueued(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """delete_deployment and delete_incident: one entry each, the id returned."""
    publisher = make_publisher()
    assert publisher.delete_deployment("z_RwVLi7v4Y") == "z_RwVLi7v4Y"
    assert publisher.delete_incident("incident-00000001") == "incident-00000001"
    assert enqueued(sync_redis, keys) == [
        DeploymentDeletion(id="z_RwVLi7v4Y"),
        IncidentDeletion(id="incident-00000001"),
    ]


@pytest.mark.parametrize("bad", ["", "x" * 129, "a b", "caf\u00e9", "\x1b[31m"])
def test_deletion_of_an_id_no_event_has_is_refused(
    make_publisher: MakePublisher, sync_redis: redis.Redis, keys: RedisKeys, bad: str
) -> None:
    """The id rule holds for deletions: refused with the field, nothing enqueued."""
    publisher = make_publisher()
    for delete in (publisher.delete_deployment, publisher.delete_incident):
        with pytest.raises(InvalidEventError, match="id: must be 1-128 characters"):
            delete(bad)
    assert enqueued(sync_redis, keys) == []


# --- deployments Datadog cannot roll back ----------------------------------------------------


def test_unversioned_deployment_is_warned_of_once_per_service(
    make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither version nor git: one WARNING per service saying why, and it is still enqueued."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    publisher = make_publisher()
    for started_at in (1_700_000_000, 1_700_000_100):
        publisher.deployment(service="checkout", started_at=started_at, env="prod")
    publisher.publish_many(
        [DeploymentEvent(service="billing", started_at=1_700_000_000, finished_at=1_700_000_090)]
    )
    publisher.deployment(service="search", started_at=1_700_000_000, version="v2")
    publisher.deployment(service="search", started_at=1_700_000_100, git=GIT)
    messages = warnings_of(caplog)
    assert len(messages) == 2
    assert messages[0].startswith("deployment of service 'checkout' has neither version nor git")
    assert "Datadog identifies a deployment by env + service + version" in messages[0]
    assert "rollback and rollforward change failure detection cannot work" in messages[0]
    assert messages[1].startswith("deployment of service 'billing'")


def test_each_publisher_warns_for_itself(
    make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """The memory of services warned of is a publisher's own."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for publisher in (make_publisher(), make_publisher()):
        publisher.deployment(service="checkout", started_at=1_700_000_000)
    assert len(warnings_of(caplog)) == 2


def test_incidents_and_operations_are_never_warned_of(
    make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Only deployments are checked; incidents (the hot path) and operations log nothing."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    publisher = make_publisher()
    publisher.incident_started(services=["checkout"])
    publisher.change_failure("deployment-00000001")
    publisher.delete_deployment("deployment-00000001")
    assert caplog.records == []


def test_remembered_services_are_bounded(
    make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap: one line saying so, then silence; memory stops growing."""
    monkeypatch.setattr(producer_checks, "MAX_WARNED_SERVICES", 3)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    publisher = make_publisher()
    events = [
        DeploymentEvent(service=f"service-{i}", started_at=1_700_000_000, finished_at=1_700_000_001)
        for i in range(10)
    ]
    assert len(publisher.publish_many(events)) == 10
    messages = warnings_of(caplog)
    assert len(messages) == 4
    assert messages[-1] == (
        "deployments without version or git came from more than 3 services; "
        "this publisher warns of no more of them"
    )
    assert len(publisher._checks.warned) == 3


def test_a_hostile_service_name_is_shown_escaped_and_cut(
    make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """A name with terminal escapes, 1,000 characters long: escaped, and cut in the warning."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    service = "\x1b[31m" + "x" * 995
    make_publisher().deployment(service=service, started_at=1_700_000_000)
    (message,) = warnings_of(caplog)
    assert "\x1b" not in message
    assert "'\\x1b[31mxxx" in message
    assert "x" * 200 not in message
