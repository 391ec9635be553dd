"""Datadog's official Python client's PATCH and DELETE calls, against a real ``serve``.

Each call is answered as Datadog answers it (202, no body the client reads), and leaves
exactly the entry a Python producer's ``Publisher`` would have written. The client sends an
application key with these calls, as Datadog requires: ``serve`` ignores it, and never logs it.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v2.api.dora_metrics_api import DORAMetricsApi
from datadog_api_client.v2.model.dora_deployment_patch_by_version_remediation_by_version import (
    DORADeploymentPatchByVersionRemediationByVersion,
)
from datadog_api_client.v2.model.dora_deployment_patch_by_version_request import (
    DORADeploymentPatchByVersionRequest,
)
from datadog_api_client.v2.model.dora_deployment_patch_by_version_request_attributes import (
    DORADeploymentPatchByVersionRequestAttributes,
)
from datadog_api_client.v2.model.dora_deployment_patch_by_version_request_data import (
    DORADeploymentPatchByVersionRequestData,
)
from datadog_api_client.v2.model.dora_deployment_patch_remediation import (
    DORADeploymentPatchRemediation,
)
from datadog_api_client.v2.model.dora_deployment_patch_remediation_type import (
    DORADeploymentPatchRemediationType,
)
from datadog_api_client.v2.model.dora_deployment_patch_request import DORADeploymentPatchRequest
from datadog_api_client.v2.model.dora_deployment_patch_request_attributes import (
    DORADeploymentPatchRequestAttributes,
)
from datadog_api_client.v2.model.dora_deployment_patch_request_data import (
    DORADeploymentPatchRequestData,
)
from datadog_api_client.v2.model.dora_deployment_patch_request_data_type import (
    DORADeploymentPatchRequestDataType,
)

from forwarder import (
    DeploymentDeletion,
    DeploymentPatch,
    DeploymentPatchByVersion,
    IncidentDeletion,
    Remediation,
    RemediationType,
)
from forwarder.entry import decode_entry
from forwarder.protocol import RedisKeys
from harness import streams
from harness.serve import ServeProcess, serve_env

INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
APP_KEY = f"app-key-{uuid.uuid4().hex}"
BY_VERSION = "patch_dora_deployment_by_version"
PATCH_TYPE = DORADeploymentPatchRequestDataType.DORA_DEPLOYMENT_PATCH_REQUEST


def _serve(redis_url: str, prefix: str, log_path: Path, **env: str) -> Iterator[ServeProcess]:
    process = ServeProcess(
        serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=INGEST_KEY, **env), log_path
    ).wait_listening()
    yield process
    process.stop()
    log = process.log()
    assert INGEST_KEY not in log
    assert APP_KEY not in log, "the application key a client sent reached serve's log"


@pytest.fixture
def server(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """``serve`` as it ships: PATCH by version (a Datadog preview) off."""
    yield from _serve(redis_url, prefix, tmp_path / "serve.log")


@pytest.fixture
def server_by_version(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """``serve`` with ``FORWARDER_PATCH_BY_VERSION=true``."""
    yield from _serve(redis_url, prefix, tmp_path / "serve.log", FORWARDER_PATCH_BY_VERSION="true")


def _client(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DORAMetricsApi]:
    for name in ("DD_SITE", "DD_API_KEY", "DD_APP_KEY"):  # the client reads them by itself
        monkeypatch.delenv(name, raising=False)
    configuration = Configuration(host=url)
    configuration.api_key["apiKeyAuth"] = INGEST_KEY
    configuration.api_key["appKeyAuth"] = APP_KEY  # what Datadog needs on PATCH and DELETE
    # Datadog's docs call it unstable; client 2.62 no longer lists it as such (KeyError).
    with contextlib.suppress(KeyError):
        configuration.unstable_operations[BY_VERSION] = True
    with ApiClient(configuration) as client:
        yield DORAMetricsApi(client)


@pytest.fixture
def dora(server: ServeProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[DORAMetricsApi]:
    """The official client as a producer configures it, with an application key too."""
    yield from _client(server.url, monkeypatch)


@pytest.fixture
def dora_by_version(
    server_by_version: ServeProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DORAMetricsApi]:
    """The same, against the server that takes PATCH by version."""
    yield from _client(server_by_version.url, monkeypatch)


def enqueued(sync_redis: redis.Redis, keys: RedisKeys) -> list[object]:
    """Every entry of the stream, decoded as a worker decodes it."""
    return [decode_entry(fields) for _, fields in streams.entries(sync_redis, keys.ingest)]


def test_patch_marks_the_deployment_failed_with_its_remediation(
    dora: DORAMetricsApi, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """patch_dora_deployment: 202, and one deployment_patch entry with what it sent."""
    body = DORADeploymentPatchRequest(
        data=DORADeploymentPatchRequestData(
            id="z_RwVLi7v4Y",
            type=PATCH_TYPE,
            attributes=DORADeploymentPatchRequestAttributes(
                change_failure=True,
                remediation=DORADeploymentPatchRemediation(
                    id="eG42zNIkVjM", type=DORADeploymentPatchRemediationType.ROLLBACK
                ),
            ),
        )
    )
    dora.patch_dora_deployment(deployment_id="z_RwVLi7v4Y", body=body)  # no error: a 2xx
    assert enqueued(sync_redis, keys) == [
        DeploymentPatch(
            id="z_RwVLi7v4Y",
            change_failure=True,
            remediation=Remediation(id="eG42zNIkVjM", type=RemediationType.ROLLBACK),
        )
    ]


def test_patch_with_another_id_in_the_body_is_a_400(
    dora: DORAMetricsApi, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """A body naming another deployment than the path: the client's 400, nothing enqueued."""
    body = DORADeploymentPatchRequest(
        data=DORADeploymentPatchRequestData(
            id="deployment-other-0001",
            type=PATCH_TYPE,
            attributes=DORADeploymentPatchRequestAttributes(change_failure=True),
        )
    )
    with pytest.raises(ApiException) as caught:
        dora.patch_dora_deployment(deployment_id="deployment-path-00001", body=body)
    assert caught.value.status == 400
    (error,) = caught.value.body["errors"]
    assert error["source"] == {"pointer": "/data/id"}
    assert enqueued(sync_redis, keys) == []


def test_delete_deployment_and_failure(
    dora: DORAMetricsApi, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """delete_dora_deployment and delete_dora_failure: 202s, one entry each, in order."""
    dora.delete_dora_deployment(deployment_id="deployment-client-01")
    dora.delete_dora_failure(failure_id="incident-client-000001")
    assert enqueued(sync_redis, keys) == [
        DeploymentDeletion(id="deployment-client-01"),
        IncidentDeletion(id="incident-client-000001"),
    ]


@contextlib.contextmanager
def unstable_allowed() -> Iterator[None]:
    """Without the warning a client that lists the operation as unstable gives each call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using unstable operation", UserWarning)
        yield


def by_version_request() -> DORADeploymentPatchByVersionRequest:
    return DORADeploymentPatchByVersionRequest(
        data=DORADeploymentPatchByVersionRequestData(
            type=PATCH_TYPE,
            attributes=DORADeploymentPatchByVersionRequestAttributes(
                change_failure=True,
                service="checkout",
                env="prod",
                version="v1.12.7",
                remediation=DORADeploymentPatchByVersionRemediationByVersion(
                    version="v1.12.8", type=DORADeploymentPatchRemediationType.ROLLFORWARD
                ),
            ),
        )
    )


def test_patch_by_version_where_it_is_on(
    dora_by_version: DORAMetricsApi, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """patch_dora_deployment_by_version, with the preview on: 202 and its entry."""
    with unstable_allowed():
        dora_by_version.patch_dora_deployment_by_version(body=by_version_request())
    assert enqueued(sync_redis, keys) == [
        DeploymentPatchByVersion(
            service="checkout",
            env="prod",
            version="v1.12.7",
            change_failure=True,
            remediation=Remediation(version="v1.12.8", type=RemediationType.ROLLFORWARD),
        )
    ]


def test_patch_by_version_is_refused_where_it_is_off(
    dora: DORAMetricsApi, sync_redis: redis.Redis, keys: RedisKeys
) -> None:
    """With the preview off (the default): the client raises a 400 naming the setting."""
    with unstable_allowed(), pytest.raises(ApiException) as caught:
        dora.patch_dora_deployment_by_version(body=by_version_request())
    assert caught.value.status == 400
    (error,) = caught.value.body["errors"]
    assert "FORWARDER_PATCH_BY_VERSION=true" in error["detail"]
    assert enqueued(sync_redis, keys) == []
