"""A Redis password, in any form a URL can hold it, never shows in any command's output.

Forms: the user-info (``redis://:pw@``), the query (``?password=``), percent-encoded or not,
``rediss://``, unix socket URLs. The real commands run against a real Redis that requires
the password: their success proves it was used, their output must not show it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from config import Settings
from config.redis_url import broker_url, mask_url_password, redis_password
from harness.serve import ServeProcess, serve_env
from harness.stack import REPO, RedisServer, Worker, wait_until, worker_env
from workers.ops.logs import secrets_of

# A part no encoding changes (the hex), between characters that every encoding changes.
MARK = uuid.uuid4().hex
PASSWORD = f"pw/{MARK}:x@y%z&w=v +q"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:s3cret@h:6380/1", "rediss://user:***@h:6380/1"),
        ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
        ("redis://h/0?db=1&password=s%2Fc%40t&x=1", "redis://h/0?db=1&password=***&x=1"),
        (
            "rediss://h/0?ssl_cert_reqs=none&PASSWORD=s3",
            "rediss://h/0?ssl_cert_reqs=none&PASSWORD=***",
        ),
        ("unix:///run/r.sock?db=0&password=s3cret", "unix:///run/r.sock?db=0&password=***"),
        ("unix://:s3cret@/run/r.sock?db=0", "unix://:***@/run/r.sock?db=0"),
        ("redis://:a%3Ab%40c@h:notaport/0", "redis://:***@h:notaport/0"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_every_form_of_password_is_masked(url: str, masked: str) -> None:
    """User-info, query (any case), encoded, TLS and socket URLs: the password becomes ***."""
    assert mask_url_password(url) == masked
    assert Settings(redis_url=url).redis_url_for_logs == masked


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:1/0",
        f"redis://127.0.0.1:1/0?password={quote(PASSWORD, safe='')}",
        f"redis://127.0.0.1:1/0?password={quote_plus(PASSWORD)}",
        f"unix:///tmp/r.sock?db=0&password={quote(PASSWORD, safe='')}",
        f"rediss://u:{quote(PASSWORD, safe='')}@h:1/0",
    ],
)
def test_log_secrets_hold_the_password_in_every_form(url: str) -> None:
    """The log filter hides the password as written, decoded and encoded again."""
    forms = set(secrets_of(Settings(redis_url=url)))
    assert PASSWORD in forms
    assert {quote(PASSWORD, safe=""), quote_plus(PASSWORD), quote(PASSWORD, safe="~")} <= forms
    assert redis_password(url) == PASSWORD


@pytest.mark.parametrize(
    ("url", "broker"),
    [
        ("redis://h:1/0?password=a%2Fb", "redis://:a%2Fb@h:1/0"),
        ("redis://:a%2Fb@h:1/0?password=ignored", "redis://:a%2Fb@h:1/0"),
        ("unix:///r/s.sock?db=2&password=pw", "redis+socket://:pw@/r/s.sock?virtual_host=2"),
        ("unix://:pw@/r/s.sock", "redis+socket://:pw@/r/s.sock"),
        ("rediss://h:1/0?ssl_cert_reqs=none", "rediss://h:1/0?ssl_cert_reqs=none"),
    ],
)
def test_broker_url_is_what_kombu_reads(url: str, broker: str) -> None:
    """Celery's transport gets the password in the user-info and sockets as redis+socket."""
    assert broker_url(url) == broker


# --- every command, against a Redis that requires the password ----------------------------


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A throwaway redis-server with ``requirepass PASSWORD`` on TCP and a unix socket."""
    server = RedisServer(password=PASSWORD, unix_socket=True).start()
    yield server
    server.stop()


def _forms(server: RedisServer) -> dict[str, str]:
    encoded, plus = quote(PASSWORD, safe=""), quote_plus(PASSWORD)
    where = f"127.0.0.1:{server.port}"
    return {
        "userinfo": f"redis://:{encoded}@{where}/0",
        "query": f"redis://{where}/0?password={encoded}",
        "query-plus": f"redis://{where}/0?db=0&password={plus}",
        "unix-query": f"unix://{server.socket_path}?db=0&password={encoded}",
        "unix-userinfo": f"unix://:{encoded}@{server.socket_path}",
    }


LINE = '{"id": "incident-credentials-1", "started_at": 1700000000, "team": "t"}\n'
COMMANDS = [["status"], ["dead-letters", "list"], ["publish", "-"]]


def _cli(url: str, *args: str, prefix: str = "dora") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(FORWARDER_REDIS_URL=url, FORWARDER_KEY_PREFIX=prefix, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        input=LINE,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


FORM_NAMES = ["userinfo", "query", "query-plus", "unix-query", "unix-userinfo"]


@pytest.mark.parametrize("form", FORM_NAMES)
@pytest.mark.parametrize("command", COMMANDS)
def test_commands_use_the_password_and_never_print_it(
    locked_redis: RedisServer, form: str, command: list[str]
) -> None:
    """status, dead-letters and publish work with the password in any form, never show it."""
    result = _cli(_forms(locked_redis)[form], *command, prefix=f"cred-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 0, result.stderr
    assert MARK not in result.stdout + result.stderr


@pytest.mark.parametrize("form", FORM_NAMES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_refused_password_is_not_printed_either(
    locked_redis: RedisServer, form: str, command: list[str]
) -> None:
    """A wrong password: the command fails naming the masked URL, never the password."""
    url = _forms(locked_redis)[form].replace(MARK, MARK[::-1])
    result = _cli(url, *command)
    assert result.returncode == 2
    if command[0] != "publish":  # publish names no URL at all
        assert "password=***" in result.stderr or ":***@" in result.stderr, result.stderr
    assert MARK[::-1] not in result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("form", ["query", "unix-query", "unix-userinfo"])
def test_a_worker_connects_with_the_password_and_never_logs_it(
    locked_redis: RedisServer, form: str, tmp_path: Path
) -> None:
    """A worker (Celery's transport included) connects in every form; its log hides it."""
    prefix = f"cred-{uuid.uuid4().hex[:8]}"
    url = _forms(locked_redis)[form]
    env = worker_env(url, prefix, "http://127.0.0.1:9", "not-a-real-key")
    # At DEBUG: Celery's "Connected to <URL>" line is routine (DEBUG) since issue 16, and
    # every line a worker can write must hide the password.
    worker = Worker(
        ["worker", "--concurrency=1"], env, tmp_path / "worker.log", tmp_path, loglevel="DEBUG"
    )
    try:
        wait_until(
            lambda: "ready." in worker.log() or worker.process.poll() is not None,
            timeout_s=60,
            what="the worker to be ready",
        )
        log = worker.log()
        assert "ready." in log, log[-3000:]
        assert "Connected to" in log
    finally:
        worker.stop()
    assert MARK not in worker.log()


@pytest.mark.integration
def test_serve_logs_its_redis_without_the_password(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """serve's start-up line names its Redis with the query password masked."""
    env = serve_env(_forms(locked_redis)["query"], "cred", FORWARDER_INGEST_KEYS="k" * 32)
    server = ServeProcess(env, tmp_path / "serve.log").wait_listening()
    try:
        wait_until(lambda: "into Redis at" in server.log(), timeout_s=10, what="the line")
    finally:
        server.stop()
    log = server.log()
    assert "password=***" in log
    assert MARK not in log


@pytest.mark.integration
def test_run_names_its_redis_without_the_password(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    """run says which Redis and why, with the password masked, and logs it nowhere."""
    from harness.run import RunProcess, with_group_gone  # noqa: PLC0415 - its helpers

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORWARDER_", "DD_"))}
    env.update(
        PYTHONPATH=str(REPO),
        FORWARDER_REDIS_URL=_forms(locked_redis)["query"],
        FORWARDER_KEY_PREFIX=f"cred-{uuid.uuid4().hex[:8]}",
        FORWARDER_METRICS_PORT="0",
    )
    run = RunProcess(["--dry-run", "--concurrency=1"], env, tmp_path / "run.log")
    log_path = tmp_path / "run.log"
    try:
        wait_until(lambda: "ready." in log_path.read_text(), timeout_s=60, what="run's worker")
    finally:
        # SIGKILL: all it checks is written by now, and a SIGTERM in a worker's first
        # second can hang Celery's warm shutdown (on main too; see the report).
        with_group_gone(run.process.pid)
        run.stop()
    log = log_path.read_text()
    masked = f"redis://127.0.0.1:{locked_redis.port}/0?password=***"
    assert f"Redis: {masked} (FORWARDER_REDIS_URL is set)" in log
    assert MARK not in log
