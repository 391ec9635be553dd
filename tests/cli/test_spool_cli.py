"""`publish --spool DIR` and `spool drain DIR` against a redis-server the tests stop and start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config import Settings
from forwarder._published import DEFAULT_SPOOL_MAX_BYTES
from forwarder.protocol import RedisKeys
from harness.stack import RedisServer
from workers.cli import main

PREFIX = "spoolcli"


@pytest.fixture
def server(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """A redis-server of this test's own; the CLI's settings point at it."""
    own = RedisServer().start()
    monkeypatch.setenv("FORWARDER_REDIS_URL", own.url)
    monkeypatch.setenv("FORWARDER_KEY_PREFIX", PREFIX)
    monkeypatch.setenv("FORWARDER_PUBLISH_TIMEOUT_S", "0.5")
    yield own
    own.stop()


def events_file(path: Path, first: int, count: int) -> Path:
    lines = [
        json.dumps({"id": f"cli-incident-{number:06d}", "started_at": 1_700_000_000, "team": "t"})
        for number in range(first, first + count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def stream_ids(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            RedisKeys(PREFIX).ingest
        )  # redis-py's stubs type every reply as optional
    finally:
        client.close()
    return [json.loads(fields[b"event"])["id"] for _, fields in entries]


def test_publish_spools_then_the_next_run_drains_first(
    server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis away: publish succeeds, saying how many were spooled and wait; the next run,
    Redis back, sends those before its own events."""
    spool_dir = tmp_path / "spool"
    server.crash()
    assert (
        main(["publish", "--spool", str(spool_dir), str(events_file(tmp_path / "a", 0, 700))]) == 0
    )
    err = capsys.readouterr().err
    assert "published 700 event(s)" in err
    assert "700 of them spooled" in err
    assert "700 event(s) wait there" in err
    server.start()
    assert (
        main(["publish", "--spool", str(spool_dir), str(events_file(tmp_path / "b", 700, 5))]) == 0
    )
    err = capsys.readouterr().err
    assert "drained 700 spooled event(s)" in err
    assert "0 waiting" in err
    assert "spooled to" not in err
    assert stream_ids(server.url) == [f"cli-incident-{number:06d}" for number in range(705)]


def test_spool_drain_prints_the_counts(
    server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spool drain DIR`: fails while Redis is away (saying how many wait), then sends all."""
    spool_dir = tmp_path / "spool"
    server.crash()
    main(["publish", "--spool", str(spool_dir), str(events_file(tmp_path / "a", 0, 20))])
    capsys.readouterr()
    assert main(["spool", "drain", str(spool_dir)]) == 2
    assert "20 event(s) still wait" in capsys.readouterr().err
    server.start()
    assert main(["spool", "drain", str(spool_dir)]) == 0
    assert "drained 20 event(s)" in capsys.readouterr().out
    assert len(stream_ids(server.url)) == 20


def test_spool_drain_of_no_directory_is_an_error(
    server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory that does not exist is named, exit code 2, and is not created."""
    assert main(["spool", "drain", str(tmp_path / "typo")]) == 2
    assert "no spool to drain" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_publish_without_a_spool_still_fails(
    server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --spool and no FORWARDER_SPOOL_DIR: an unanswered publish fails as before."""
    server.crash()
    assert main(["publish", str(events_file(tmp_path / "a", 0, 3))]) == 2
    assert "could not enqueue" in capsys.readouterr().err


def test_the_settings_default_is_the_publishers() -> None:
    """FORWARDER_SPOOL_MAX_BYTES defaults to what Publisher uses."""
    assert Settings.model_fields["spool_max_bytes"].default == DEFAULT_SPOOL_MAX_BYTES
