"""The dora-forwarder command: publish from JSON lines, status as a table and as JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis

from forwarder.protocol import RedisKeys
from workers.cli import main


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, redis_url: str, prefix: str) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith(("FORWARDER_", "DD_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FORWARDER_REDIS_URL", redis_url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", prefix)


GOOD = json.dumps({"id": "incident-0000000001", "started_at": 1_700_000_000, "team": "t"})
WHOLE_BODY = json.dumps(
    {"data": {"attributes": {"started_at": 1_700_000_000, "services": ["api"]}}}
)


def test_publish_reports_bad_lines_and_enqueues_good_ones(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """Each bad line is named with its number, field and reason; exit code 1; good kept."""
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(
            [
                GOOD,
                "{broken",
                "",
                WHOLE_BODY,
                json.dumps({"started_at": 1_700_000_000}),
                json.dumps({"id": "incident-0000000001", "finished_at": 1_700_000_100}),
            ]
        )
        + "\n"
    )
    assert main(["publish", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: not valid JSON" in err
    assert f"{path}:5: services: either services or team is required" in err
    assert "published 3 event(s)" in err
    assert "2 line(s) rejected" in err
    assert sync_redis.xlen(keys.ingest) == 3


def test_publish_from_stdin(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """`-` reads standard input; all good means exit code 0."""
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD + "\n" + WHOLE_BODY + "\n"))
    assert main(["publish", "-"]) == 0
    assert "published 2 event(s) from stdin; 0 line(s) rejected" in capsys.readouterr().err
    assert sync_redis.xlen(keys.ingest) == 2


def test_publish_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file that cannot be read is a clear error, exit code 2."""
    assert main(["publish", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_publish_without_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis down: exit code 2 and a message that says so."""
    monkeypatch.setenv("FORWARDER_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("FORWARDER_PUBLISH_TIMEOUT_S", "0.2")
    path = tmp_path / "events.jsonl"
    path.write_text(GOOD + "\n")
    assert main(["publish", str(path)]) == 2
    assert "could not enqueue the event in Redis" in capsys.readouterr().err


def test_status_table_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """status shows the backlog as a table, and as one JSON object with --json."""
    path = tmp_path / "events.jsonl"
    path.write_text(GOOD + "\n" + WHOLE_BODY + "\n")
    main(["publish", str(path)])
    capsys.readouterr()
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    assert "backlog (stream)            2  (2 unread, 0 being folded)" in table
    assert "dead letters                0" in table
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backlog"] == 2
    assert data["in_flight"] == 0
    assert data["last_success_ms"] is None


def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad environment variable stops the command with its name."""
    monkeypatch.setenv("FORWARDER_INGEST_BATCH", "lots")
    assert main(["status"]) == 2
    assert "FORWARDER_INGEST_BATCH" in capsys.readouterr().err


def test_worker_refuses_without_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`dora-forwarder worker` says what to set when DD_API_KEY is missing."""
    assert main(["worker"]) == 2
    assert "DD_API_KEY is not set" in capsys.readouterr().err
