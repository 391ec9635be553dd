"""Datadog's official Python client, pointed at the ingest endpoint by its host alone.

What it sends goes through a real ``serve``, real Redis and a real worker to the stand-in
of Datadog's API, and arrives unchanged in meaning (timestamps in nanoseconds).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, ForbiddenException
from datadog_api_client.v2.api.dora_metrics_api import DORAMetricsApi
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
from datadog_api_client.v2.model.dora_git_info import DORAGitInfo

from harness.serve import ServeProcess, serve_env
from harness.stack import Worker, wait_until
from harness.standin import StandinServer

SHA = "66adc9350f2cc9b250b69abddab733dd55e1a588"
REPOSITORY = "https://github.com/acme/checkout"
NS = 1_000_000_000


@pytest.fixture
def ingest_key() -> str:
    return f"ingest-key-{uuid.uuid4().hex}"


@pytest.fixture
def server(
    redis_url: str, prefix: str, api_key: str, ingest_key: str, tmp_path: Path
) -> Iterator[ServeProcess]:
    """``serve`` on this test's prefix, with the worker's Datadog key set beside the ingest key."""
    env = serve_env(redis_url, prefix, FORWARDER_INGEST_KEYS=ingest_key, DD_API_KEY=api_key)
    process = ServeProcess(env, tmp_path / "serve.log").wait_listening()
    yield process
    process.stop()
    assert api_key not in process.log()
    assert ingest_key not in process.log()


@pytest.fixture
def dora(
    server: ServeProcess, ingest_key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DORAMetricsApi]:
    """The official client as a producer configures it: the base URL and an ingest key."""
    for name in ("DD_SITE", "DD_API_KEY", "DD_APP_KEY"):  # the client reads them by itself
        monkeypatch.delenv(name, raising=False)
    configuration = Configuration(host=server.url)
    configuration.api_key["apiKeyAuth"] = ingest_key
    with ApiClient(configuration) as client:
        yield DORAMetricsApi(client)


def failure_request(**attributes: Any) -> DORAFailureRequest:
    return DORAFailureRequest(
        data=DORAFailureRequestData(attributes=DORAFailureRequestAttributes(**attributes))
    )


@pytest.mark.integration
def test_failure_and_deployment_reach_the_api_through_a_worker(
    dora: DORAMetricsApi, start_worker: Callable[..., Worker], standin: StandinServer
) -> None:
    """The client's failure and deployment get 202s it accepts, and arrive as it sent them."""
    start_worker()
    failure = dora.create_dora_failure(
        body=failure_request(
            id="incident-client-000001",
            started_at=1_700_000_000,
            finished_at=1_700_000_600_000,  # milliseconds
            services=["checkout"],
            team="payments",
            env="prod",
            name="Payments failing",
            severity="SEV-2",
            version="v1.2.3",
            git=DORAGitInfo(repository_url=REPOSITORY, commit_sha=SHA),
            custom_tags=["region:eu", "tier:1"],
        )
    )
    deployment = dora.create_dora_deployment(
        body=DORADeploymentRequest(
            data=DORADeploymentRequestData(
                attributes=DORADeploymentRequestAttributes(
                    service="checkout",
                    started_at=1_700_000_000 * NS,
                    finished_at=1_700_000_090 * NS,
                    env="prod",
                    git=DORAGitInfo(repository_url=REPOSITORY, commit_sha=SHA),
                )
            )
        )
    )
    # The client checked each answer against Datadog's response models.
    assert (failure.data.id, str(failure.data.type)) == ("incident-client-000001", "dora_failure")
    assert str(deployment.data.type) == "dora_deployment"
    assert deployment.data.id.startswith("dora-")  # derived: the client sent no id

    wait_until(
        lambda: (
            failure.data.id in standin.latest()
            and deployment.data.id in standin.latest("dora_deployment")
        ),
        timeout_s=30,
        what="both events at the API",
    )
    assert standin.latest()[failure.data.id] == {
        "id": "incident-client-000001",
        "started_at": 1_700_000_000 * NS,
        "finished_at": 1_700_000_600 * NS,
        "services": ["checkout"],
        "team": "payments",
        "env": "prod",
        "name": "Payments failing",
        "severity": "SEV-2",
        "version": "v1.2.3",
        "git": {"repository_url": REPOSITORY, "commit_sha": SHA},
        "custom_tags": ["region:eu", "tier:1"],
    }
    assert standin.latest("dora_deployment")[deployment.data.id] == {
        "id": deployment.data.id,
        "service": "checkout",
        "started_at": 1_700_000_000 * NS,
        "finished_at": 1_700_000_090 * NS,
        "env": "prod",
        "git": {"repository_url": REPOSITORY, "commit_sha": SHA},
    }


def test_legacy_incident_call_is_accepted(dora: DORAMetricsApi) -> None:
    """The client's deprecated create_dora_incident (POST /incident) gets a dora_failure."""
    with pytest.warns(DeprecationWarning, match="create_dora_incident is deprecated"):
        answer = dora.create_dora_incident(
            body=failure_request(id="incident-client-legacy", started_at=1_700_000_000, team="a")
        )
    assert (answer.data.id, str(answer.data.type)) == ("incident-client-legacy", "dora_failure")


def test_client_reports_a_400_with_the_field(dora: DORAMetricsApi) -> None:
    """A rule the client does not check (finished before started) comes back as its 400."""
    with pytest.raises(ApiException) as caught:
        dora.create_dora_failure(
            body=failure_request(started_at=1_700_000_000, finished_at=1_600_000_000, team="a")
        )
    assert caught.value.status == 400
    (error,) = caught.value.body["errors"]  # the client parsed Datadog's JSON:API errors
    assert error["source"] == {"pointer": "/data/attributes/finished_at"}
    assert error["detail"] == "finished_at: is before started_at"


def test_client_with_the_datadog_key_is_forbidden(dora: DORAMetricsApi, api_key: str) -> None:
    """Configured with the Datadog key instead of an ingest key, the client gets its 403."""
    dora.api_client.configuration.api_key["apiKeyAuth"] = api_key
    with pytest.raises(ForbiddenException):
        dora.create_dora_failure(body=failure_request(started_at=1_700_000_000, team="a"))
