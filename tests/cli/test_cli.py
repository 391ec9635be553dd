"""The dora-forwarder command: publish from JSON lines, status as a table and as JSON."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from forwarder.protocol import RedisKeys
from harness.stack import child_env
from workers.cli import main

pytestmark = pytest.mark.usefixtures("redis_env")

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


def test_status_lists_live_workers_by_host(
    capsys: pytest.CaptureFixture[str], sync_redis: redis.Redis, prefix: str
) -> None:
    """Processes that reported recently count as live, per host; silent ones do not."""
    keys = RedisKeys(prefix)
    now_s, _ = sync_redis.time()
    now_ms = int(now_s) * 1000
    sync_redis.zadd(
        keys.workers,
        {"host-a:1": now_ms, "host-a:2": now_ms - 5_000, "host-b:7": now_ms, "gone:3": 0},
    )
    assert main(["status"]) == 0
    assert "live workers                3  (host-a: 2, host-b: 1)" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["live_workers"] == ["host-a:1", "host-a:2", "host-b:7"]


def test_status_without_workers_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """With no live worker the table asks whether one is running."""
    assert main(["status"]) == 0
    assert "0  (no worker reported recently: is one running?)" in capsys.readouterr().out


def test_status_watch_refreshes_until_interrupted(redis_url: str, prefix: str) -> None:
    """--watch prints a fresh table every interval and ends cleanly on Ctrl-C (SIGINT)."""
    env = child_env(FORWARDER_REDIS_URL=redis_url, FORWARDER_KEY_PREFIX=prefix)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "status", "--watch", "0.1"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert watcher.stdout is not None
    try:
        frames = 0
        for line in watcher.stdout:
            frames += line.startswith("every 0.1 s, Ctrl-C to stop")
            if frames == 3:
                break
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
    finally:
        watcher.kill()
        watcher.stdout.close()
    assert frames == 3


def test_status_watch_rejects_a_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """A zero or non-numeric interval is refused with the reason."""
    with pytest.raises(SystemExit):
        main(["status", "--watch", "0"])
    assert "must be more than 0" in capsys.readouterr().err


def test_run_refuses_without_api_key_and_points_to_dry_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`run` without DD_API_KEY says what to set, and offers --dry-run."""
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "DD_API_KEY is not set" in err
    assert "--dry-run" in err


def test_run_refuses_two_choices_of_redis(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--embedded-redis with FORWARDER_REDIS_URL set is a contradiction, said plainly."""
    monkeypatch.setenv("DD_API_KEY", "k" * 32)
    assert main(["run", "--embedded-redis"]) == 2
    assert "--embedded-redis and FORWARDER_REDIS_URL" in capsys.readouterr().err


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
