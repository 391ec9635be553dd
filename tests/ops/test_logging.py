"""Log lines: text or JSON, structured outcome fields, and secrets never written."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from celery.app.defaults import DEFAULT_PROCESS_LOG_FMT  # type: ignore[attr-defined]  # not in celery-types
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import ColorFormatter

from config import Settings
from forwarder import Publisher
from forwarder.protocol import RedisKeys
from harness.stack import Worker, wait_until
from harness.standin import StandinServer
from workers import celery_app
from workers.delivery.outcome_log import log_outcome
from workers.delivery.records import Attempt, Claim, Settlement, Verdict
from workers.ops.logs import RedactSecrets, configure_handlers, json_formatter, secrets_of

KEY = "logging-test-key-0123456789abcdef"
PASSWORD = "p%40ss-word"  # noqa: S105 - a test value, as written in a URL
INCIDENT = "incident-logging-0001"
CELERY_TEXT_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d ")


def settings(log_format: str = "text", **overrides: Any) -> Settings:
    return Settings(**{"dd_api_key": KEY, "log_format": log_format, **overrides})


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    """A logger of this test's own, with Celery's text handler writing to a string.

    Made outside logging's registry, so that pytest attaches none of its handlers to it.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ColorFormatter(DEFAULT_PROCESS_LOG_FMT, use_color=False))
    logger = logging.Logger(f"tests.logging.{uuid.uuid4().hex}", logging.INFO)
    logger.addHandler(handler)
    return logger, stream


def fail(error: Exception) -> None:
    raise error


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# --- the JSON format ----------------------------------------------------------------------


def test_json_line_parses_and_carries_extra_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """A JSON line has time (UTC), level, logger, message, process and the extra fields."""
    logger, stream = captured
    configure_handlers(logger, settings("json"))
    logger.info(
        "delivered incident=%s", INCIDENT, extra={"incident": INCIDENT, "status": 202, "attempt": 1}
    )
    (line,) = json_lines(stream)
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert line["message"] == f"delivered incident={INCIDENT}"
    assert line["process"] == os.getpid()
    assert line["process_name"] == "MainProcess"
    assert (line["incident"], line["status"], line["attempt"]) == (INCIDENT, 202, 1)
    moment = datetime.fromisoformat(line["time"])
    offset = moment.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60


def test_json_exception_is_one_string_field(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """An exception becomes the ``exception`` field, its traceback as text, on one line."""
    logger, stream = captured
    configure_handlers(logger, settings("json"))
    try:
        fail(ValueError("boom"))
    except ValueError:
        logger.exception("it failed")
    assert len(stream.getvalue().splitlines()) == 1
    (line,) = json_lines(stream)
    assert line["message"] == "it failed"
    assert isinstance(line["exception"], str)
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: boom")


def test_json_formatter_renders_values_json_cannot() -> None:
    """Extra values JSON has no type for are written as text, never an error."""
    record = logging.makeLogRecord({"msg": "m", "when": datetime(2026, 1, 2, tzinfo=UTC)})
    line = json.loads(json_formatter().format(record))
    assert line["when"] == "2026-01-02T00:00:00+00:00"


# --- the text format ----------------------------------------------------------------------


def test_text_format_is_celerys_own_unchanged(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """With ``text`` the handler keeps Celery's formatter and lines come out as before."""
    logger, stream = captured
    (handler,) = logger.handlers
    formatter = handler.formatter
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "delivered incident=%s", (INCIDENT,), None
    )
    before = handler.format(record)
    configure_handlers(logger, settings("text"))
    logger.handle(record)
    assert handler.formatter is formatter
    assert stream.getvalue() == before + "\n"
    assert CELERY_TEXT_LINE.match(before)
    assert before.endswith(f"INFO/MainProcess] delivered incident={INCIDENT}")


def test_configuring_twice_leaves_one_filter(captured: tuple[logging.Logger, io.StringIO]) -> None:
    """Configuring a handler again replaces its secret filter instead of stacking another."""
    logger, _ = captured
    configure_handlers(logger, settings())
    configure_handlers(logger, settings(dd_api_key="another-key-0123456789"))
    (handler,) = logger.handlers
    (only,) = [f for f in handler.filters if isinstance(f, RedactSecrets)]
    assert "another-key-0123456789" in only.secrets


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_key_in_message_or_args_is_redacted(
    captured: tuple[logging.Logger, io.StringIO], log_format: str
) -> None:
    """The key is replaced by *** whether it is in the message or in its arguments."""
    logger, stream = captured
    configure_handlers(logger, settings(log_format))
    logger.warning(f"a library said {KEY}")
    logger.warning("header DD-API-KEY=%s", KEY)
    logger.warning("request %r", {"headers": {"DD-API-KEY": KEY}})
    text = stream.getvalue()
    assert KEY not in text
    assert "a library said ***" in text
    assert "header DD-API-KEY=***" in text
    assert "'DD-API-KEY': '***'" in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_key_in_exception_text_is_redacted(
    captured: tuple[logging.Logger, io.StringIO], log_format: str
) -> None:
    """A traceback whose exception shows the key is written with *** instead."""
    logger, stream = captured
    configure_handlers(logger, settings(log_format))
    try:
        fail(ConnectionError(f"cannot reach https://user:{KEY}@example.test"))
    except ConnectionError:
        logger.exception("sending failed")
    text = stream.getvalue()
    assert KEY not in text
    assert "ConnectionError: cannot reach https://user:***@example.test" in text


def test_key_in_a_traceback_formatted_before_is_redacted() -> None:
    """A traceback another handler already rendered (exc_text) is redacted, exc_info dropped."""
    try:
        fail(ConnectionError(f"refused {KEY}"))
    except ConnectionError as exc:
        exc_info = (ConnectionError, exc, exc.__traceback__)
        record = logging.makeLogRecord({"msg": "failed", "exc_info": exc_info})
    record.exc_text = logging.Formatter().formatException(exc_info)
    assert RedactSecrets([KEY]).filter(record)
    line = json.loads(json_formatter().format(record))
    assert line["exception"].endswith("ConnectionError: refused ***")
    assert record.exc_info is None


def test_key_in_extra_fields_and_stack_is_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """Extra fields (text or any other value) and stack text are redacted too."""
    logger, stream = captured
    configure_handlers(logger, settings("json"))
    logger.info(
        "retry",
        extra={"reason": f"host {KEY}.invalid", "request": {"key": KEY}, "attempt": 3},
        stack_info=True,
    )
    text = stream.getvalue()
    assert KEY not in text
    (line,) = json_lines(stream)
    assert line["reason"] == "host ***.invalid"
    assert line["request"] == "{'key': '***'}"
    assert line["attempt"] == 3


def test_redis_password_is_redacted_as_written_and_decoded(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """The Redis URL's password is hidden both percent-encoded and decoded."""
    logger, stream = captured
    configure_handlers(logger, settings(redis_url=f"redis://app:{PASSWORD}@redis.test:6379/0"))
    logger.error("AUTH failed for %s", "p@ss-word")
    logger.error("url redis://app:%s@redis.test", PASSWORD)
    text = stream.getvalue()
    assert "p@ss-word" not in text
    assert PASSWORD not in text
    assert "AUTH failed for ***" in text
    assert "url redis://app:***@redis.test" in text


def test_secrets_are_the_key_and_the_redis_password() -> None:
    """The secrets are the API key and the Redis password; none without them."""
    assert secrets_of(Settings(dd_api_key=None)) == ()
    with_password = settings(redis_url=f"redis://:{PASSWORD}@localhost/0")
    assert set(secrets_of(with_password)) == {KEY, PASSWORD, "p@ss-word"}
    assert secrets_of(settings(redis_url="redis://localhost/0")) == (KEY,)


def test_ingest_keys_are_secrets_too() -> None:
    """Every key producers may send to the ingest endpoint is redacted like the API key."""
    keyed = settings(redis_url="redis://localhost/0", ingest_keys="ci-key-000000000001, bot-key-2")
    assert set(secrets_of(keyed)) == {KEY, "ci-key-000000000001", "bot-key-2"}


def test_record_without_secret_passes_untouched() -> None:
    """A record without a secret keeps its arguments and exception info for every handler."""
    try:
        fail(ValueError("nothing secret"))
    except ValueError as exc:
        record = logging.makeLogRecord(
            {"msg": "%s", "args": ("plain",), "exc_info": (ValueError, exc, exc.__traceback__)}
        )
    before = dict(record.__dict__)
    assert RedactSecrets([KEY]).filter(record)
    assert record.__dict__ == before


def test_a_broken_record_is_left_for_the_handler_to_report() -> None:
    """A message whose arguments do not fit its format does not make the filter raise."""
    record = logging.makeLogRecord({"msg": "%d items", "args": ("many",)})
    assert RedactSecrets([KEY]).filter(record)


# --- wiring -----------------------------------------------------------------------------------


def test_connect_configures_the_loggers_celery_sets_up(
    captured: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After Celery's logging signals, root, billiard's and the task logger write JSON, no key."""
    streams = {name: io.StringIO() for name in ("billiard", "task")}
    loggers = {name: logging.Logger(f"tests.logging.{name}") for name in streams}
    for name, logger in loggers.items():
        logger.addHandler(logging.StreamHandler(streams[name]))
    # Billiard's real logger is global (and pytest's handlers may sit on it): a stand-in.
    monkeypatch.setattr(celery_app, "get_multiprocessing_logger", lambda: loggers["billiard"])
    root, stream = captured
    celery_app.connect_logging(settings("json"))
    after_setup_logger.send(sender=None, logger=root, loglevel=logging.INFO)
    after_setup_task_logger.send(sender=None, logger=loggers["task"], loglevel=logging.INFO)
    root.info("key %s", KEY)
    for name, logger in loggers.items():
        logger.warning("%s key %s", name, KEY)
    assert json_lines(stream)[0]["message"] == "key ***"
    for name in loggers:
        assert json_lines(streams[name])[0]["message"] == f"{name} key ***"


# --- the pump's outcome lines -------------------------------------------------------------


def claim(attempt: int = 0) -> Claim:
    return Claim(INCIDENT, 2, 0, attempt, 0, None, {"id": INCIDENT})


def outcome_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if r.name == "dora_forwarder.pump"]
    return record


def extra(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    """The fields a log call passed in ``extra=`` (attributes LogRecord does not declare)."""
    return tuple(getattr(record, name) for name in names)


def test_delivered_line_keeps_its_text_and_has_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A delivery is one INFO line, its text as before, with incident, status and attempt."""
    caplog.set_level(logging.INFO, logger="dora_forwarder.pump")
    settlement = Settlement(INCIDENT, 2, Verdict.DELIVERED)
    assert log_outcome(claim(), settlement, Attempt(202, {}, "")) is settlement
    record = outcome_record(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == f"delivered incident={INCIDENT} status=202 attempt=1"
    fields = {k: getattr(record, k) for k in ("incident", "status", "attempt", "verdict")}
    assert fields == {"incident": INCIDENT, "status": 202, "attempt": 1, "verdict": "delivered"}


def test_retry_after_transport_error_has_no_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry after a network error says status None, the delay in seconds and the reason."""
    caplog.set_level(logging.INFO, logger="dora_forwarder.pump")
    reason = "network error: ConnectError: refused"
    settlement = Settlement(INCIDENT, 2, Verdict.RETRY, delay_ms=1500, reason=reason)
    log_outcome(claim(attempt=2), settlement, Attempt(None, {}, "", "ConnectError: refused"))
    record = outcome_record(caplog)
    assert record.getMessage() == (
        f"retry incident={INCIDENT} status=None attempt=3 in=1.5s reason={reason}"
    )
    assert extra(record, "status", "attempt", "verdict") == (None, 3, "retry")
    assert extra(record, "retry_in_s", "reason") == (1.5, reason)


def test_dead_letter_line_is_an_error_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead letter is an ERROR line with the reason; nothing sent means no attempt number."""
    caplog.set_level(logging.INFO, logger="dora_forwarder.pump")
    reason = "merged incident is invalid: finished_at: before started_at"
    log_outcome(claim(), Settlement(INCIDENT, 2, Verdict.DEAD, reason=reason))
    record = outcome_record(caplog)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == f"dead letter: incident={INCIDENT} reason={reason}"
    assert extra(record, "status", "attempt", "reason") == (None, None, reason)


def test_waits_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A finish waiting for its start writes no line (it is not news to an operator)."""
    caplog.set_level(logging.DEBUG, logger="dora_forwarder.pump")
    log_outcome(claim(), Settlement(INCIDENT, 2, Verdict.WAIT, delay_ms=1000))
    assert [r for r in caplog.records if r.name == "dora_forwarder.pump"] == []


# --- real workers ------------------------------------------------------------------------------

StartWorker = Callable[..., Worker]


def json_records(worker: Worker) -> list[dict[str, Any]]:
    """Every log line of ``worker`` that starts with ``{``, parsed (a parse error fails)."""
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]


@pytest.mark.integration
def test_worker_writes_json_from_every_process(
    start_worker: StartWorker,
    standin: StandinServer,
    redis_url: str,
    prefix: str,
    sync_redis: redis.Redis,
    keys: RedisKeys,
) -> None:
    """With json, main (checks at start too), pool and beat write JSON; a line per delivery."""
    # A key refused before makes the check at start log a line, before Celery's own setup.
    sync_redis.hset(keys.gate, mapping={"reason": "auth", "closed_until_ms": 10**13})
    # DEBUG: beat's own lines (its ticks) are routine, written at DEBUG only.
    worker = start_worker(FORWARDER_LOG_FORMAT="json", loglevel="DEBUG")
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        ids = [
            publisher.incident_started(team="ops", id=f"incident-json-{i:06d}") for i in range(5)
        ]
    wait_until(lambda: set(ids) <= set(standin.latest()), timeout_s=30, what="the deliveries")

    def delivered() -> list[dict[str, Any]]:
        lines = [r for r in json_records(worker) if r.get("verdict") == "delivered"]
        return lines if len(lines) >= len(ids) else []

    lines = wait_until(delivered, timeout_s=10, what="a delivered line per incident")
    assert Counter(line["incident"] for line in lines) == Counter(ids)
    for line in lines:
        assert (line["status"], line["attempt"], line["level"]) == (202, 1, "INFO")
        assert line["message"] == f"delivered incident={line['incident']} status=202 attempt=1"
        assert line["process_name"].startswith("ForkPoolWorker-")
        assert line["logger"] == "dora_forwarder.pump"
        datetime.fromisoformat(line["time"])
    records = json_records(worker)
    ready = [r for r in records if r["message"].endswith(" ready.")]
    assert [r["process_name"] for r in ready] == ["MainProcess"]
    (probe,) = [r for r in records if r["message"].startswith("the API key was refused before")]
    assert (probe["logger"], probe["process_name"]) == ("dora_forwarder.tasks", "MainProcess")
    assert any(r["process_name"] == "Beat" and r["logger"] == "celery.beat" for r in records)
    assert len({r["process"] for r in records}) >= 3  # main, a pool process, beat
    assert not [line for line in worker.log().splitlines() if CELERY_TEXT_LINE.match(line)]


@pytest.mark.integration
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_key_echoed_by_a_library_is_redacted(
    start_worker: StartWorker, api_key: str, redis_url: str, prefix: str, log_format: str
) -> None:
    """aiohttp's error names the host; a key in it (a misconfigured URL) is written as ***."""
    # `.invalid` never resolves (RFC 6761), and the error message repeats the host name.
    worker = start_worker(
        FORWARDER_LOG_FORMAT=log_format, FORWARDER_API_URL=f"http://{api_key}.invalid"
    )
    with Publisher.from_url(redis_url, key_prefix=prefix) as publisher:
        publisher.incident_started(team="ops", id=INCIDENT)
    wait_until(
        lambda: "Cannot connect to host ***.invalid" in worker.log(),
        timeout_s=30,
        what="a retry line naming the redacted host",
    )
    assert api_key not in worker.log()
    if log_format == "json":
        retry = next(r for r in json_records(worker) if r.get("verdict") == "retry")
        assert retry["status"] is None
        assert retry["reason"].startswith("network error: ")
        assert "***.invalid" in retry["reason"]
        assert isinstance(retry["retry_in_s"], float)


def test_application_key_is_a_secret_too() -> None:
    """DD_APP_KEY (workers send it on PATCH and DELETE) is redacted like the API key."""
    app_key = "app-key-0123456789abcdef"
    keyed = settings(redis_url="redis://localhost/0", dd_app_key=app_key)
    assert set(secrets_of(keyed)) == {KEY, app_key}
