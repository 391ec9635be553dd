"""The whole write API end to end: Datadog's official client -> ``serve`` -> Redis -> real
worker processes -> the stand-in API, which checks both keys and Datadog's bodies.

A deployment is posted, marked failed and remedied, an incident posted and deleted, all
through ``serve``. A worker without ``DD_APP_KEY`` delivers the POSTs and keeps the PATCH and
DELETE waiting (``status`` says how many and why); a worker started with the key sends them,
each after its event's POST.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v2.api.dora_metrics_api import DORAMetricsApi
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
from datadog_api_client.v2.model.dora_deployment_request import DORADeploymentRequest
from datadog_api_client.v2.model.dora_deployment_request_attributes import (
    DORADeploymentRequestAttributes,
)
from datadog_api_client.v2.model.dora_deployment_request_data import DORADeploymentRequestData
from datadog_api_client.v2.model.dora_failure_request import DORAFailureRequest
from datadog_api_client.v2.model.dora_failure_request_attributes import (
    DORAFailureRequestAttributes,
)
from datadog_api_client.v2.model.dora_failure_request_data import DORAFailureRequestData

from forwarder.protocol import RedisKeys
from harness.serve import ServeProcess, serve_env
from harness.stack import Worker, wait_until
from harness.standin import StandinServer
from workers.ops.status import read_status

pytestmark = pytest.mark.integration

INGEST_KEY = f"ingest-key-{uuid.uuid4().hex}"
CLIENT_APP_KEY = f"client-app-key-{uuid.uuid4().hex}"
FAILED = "deployment-e2e-v1-12-7-0001"
REMEDY = "deployment-e2e-v1-12-8-0001"
INCIDENT = "incident-e2e-checkout-0001"
NS = 1_000_000_000


@pytest.fixture
def dora(
    redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DORAMetricsApi]:
    """The official client, pointed at a real ``serve``: only its base URL changed."""
    serve = ServeProcess(
        serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=INGEST_KEY), tmp_path / "serve.log"
    ).wait_listening()
    for name in ("DD_SITE", "DD_API_KEY", "DD_APP_KEY"):
        monkeypatch.delenv(name, raising=False)
    configuration = Configuration(host=serve.url)
    configuration.api_key["apiKeyAuth"] = INGEST_KEY
    configuration.api_key["appKeyAuth"] = CLIENT_APP_KEY
    try:
        with ApiClient(configuration) as client:
            yield DORAMetricsApi(client)
    finally:
        serve.stop()
    assert CLIENT_APP_KEY not in serve.log()


def deployment(api: DORAMetricsApi, deployment_id: str, version: str, second: int) -> None:
    api.create_dora_deployment(
        body=DORADeploymentRequest(
            data=DORADeploymentRequestData(
                attributes=DORADeploymentRequestAttributes(
                    id=deployment_id,
                    service="checkout",
                    env="prod",
                    version=version,
                    started_at=(1_700_000_000 + second) * NS,
                    finished_at=(1_700_000_060 + second) * NS,
                )
            )
        )
    )


def test_failed_and_remedied_deployment_and_a_deleted_incident_reach_the_api(
    dora: DORAMetricsApi,
    standin: StandinServer,
    start_worker: Callable[..., Worker],
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    deployment(dora, FAILED, "v1.12.7", 0)
    deployment(dora, REMEDY, "v1.12.8", 600)
    remediation = DORADeploymentPatchRemediation(
        id=REMEDY, type=DORADeploymentPatchRemediationType.ROLLFORWARD
    )
    dora.patch_dora_deployment(
        deployment_id=FAILED,
        body=DORADeploymentPatchRequest(
            data=DORADeploymentPatchRequestData(
                id=FAILED,
                type=DORADeploymentPatchRequestDataType.DORA_DEPLOYMENT_PATCH_REQUEST,
                attributes=DORADeploymentPatchRequestAttributes(
                    change_failure=True, remediation=remediation
                ),
            )
        ),
    )
    dora.create_dora_failure(
        body=DORAFailureRequest(
            data=DORAFailureRequestData(
                attributes=DORAFailureRequestAttributes(
                    id=INCIDENT, services=["checkout"], started_at=1_700_000_010 * NS
                )
            )
        )
    )
    dora.delete_dora_failure(failure_id=INCIDENT)

    # No application key: the POSTs go, the PATCH and the DELETE wait.
    without_key = start_worker(FORWARDER_AUTH_PAUSE_S="0.5")
    wait_until(
        lambda: {FAILED, REMEDY} <= set(standin.latest("dora_deployment")),
        timeout_s=30,
        what="both deployments posted",
    )
    wait_until(
        lambda: read_status(sync_redis, keys, 15_000).app_key_waiting == 2,
        timeout_s=30,
        what="the PATCH and the DELETE waiting for DD_APP_KEY",
    )
    status = read_status(sync_redis, keys, 15_000)
    assert status.app_key_detail is not None
    assert "DD_APP_KEY is not set" in status.app_key_detail
    assert status.dead_letters == 0
    assert "change_failure" not in standin.latest("dora_deployment")[FAILED]
    assert [r.method for r in standin.requests_for(INCIDENT)] == [], "the deleted POST went"
    without_key.stop()
    assert "DD_APP_KEY is not set" in without_key.log()

    # With the key: each goes, the PATCH after its deployment's POST.
    with_key = start_worker(DD_APP_KEY=standin.app_key, FORWARDER_AUTH_PAUSE_S="0.5")
    wait_until(
        lambda: (
            standin.latest("dora_deployment")[FAILED].get("change_failure") is True
            and [r.method for r in standin.requests_for(INCIDENT)] == ["DELETE"]
        ),
        timeout_s=30,
        what="the PATCH and the DELETE delivered",
    )
    held = standin.latest("dora_deployment")[FAILED]
    assert held["remediation"] == {"id": REMEDY, "type": "rollforward"}
    assert [r.method for r in standin.requests_for(FAILED) if r.status == 202] == ["POST", "PATCH"]
    # Its POST was superseded before it went: the stand-in never held it, and says 404.
    assert [(r.method, r.status) for r in standin.requests_for(INCIDENT)] == [("DELETE", 404)]
    wait_until(
        lambda: read_status(sync_redis, keys, 15_000).app_key_waiting == 0,
        timeout_s=30,
        what="nothing left waiting for the key",
    )
    assert standin.resurrections() == []
    with_key.stop()
    assert standin.app_key not in with_key.log(), "the application key reached a log"
