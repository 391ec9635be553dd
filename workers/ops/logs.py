"""The workers' log lines: text or one JSON object per line, and never a secret.

``configure_handlers`` gives a logger's handlers the secret filter and, when
``FORWARDER_LOG_FORMAT=json``, the JSON formatter. Celery-free: ``workers.celery_app`` calls
it on the handlers Celery sets up, and ``serve`` on uvicorn's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from pythonjsonlogger.json import JsonFormatter

from config import Settings
from config.redis_url import password_forms
from workers.ingest.keys import configured_keys

REDACTED: Final = "***"

_RECORD_FIELDS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_PLAIN: Final = (int, float, bool, type(None))


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The values no log line may contain: the API and application keys, the ingest keys, the
    webhook secrets, the Redis password.

    The Redis password (in the URL's user-info or its ``?password=``) is listed as written,
    decoded and encoded again, as a library may show any of them. Longest first, so that a
    secret containing another is hidden whole.
    """
    found: set[str] = set(configured_keys(settings.ingest_keys))
    for key in (
        settings.dd_api_key,
        settings.dd_app_key,
        settings.pagerduty_webhook_secret,
        settings.github_webhook_secret,
        settings.gitlab_webhook_token,
    ):
        if key is not None:
            found.add(key.get_secret_value())
    found.update(password_forms(settings.redis_url))
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``, in their order (longest first,
    as ``secrets_of`` gives them, hides a secret containing another whole)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Replace each secret by ``***`` in a record's message, exception, stack and extra fields.

    A filter on handlers, so it sees every record they write, whichever library logged it.
    Records without a secret pass unchanged (``exc_info`` included, for other handlers).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def _leaks(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always let it through."""
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            message = ""
        if self._leaks(message):
            record.msg, record.args = self._redact(message), ()
        # Formatters render a traceback from exc_info after this filter ran (the JSON one
        # even when exc_text is set): render it here, and when it holds a secret keep only
        # the redacted text.
        traceback = record.exc_text
        if not traceback and record.exc_info:
            traceback = logging.Formatter().formatException(record.exc_info)
        if traceback and self._leaks(traceback):
            record.exc_info, record.exc_text = None, self._redact(traceback)
        if record.stack_info and self._leaks(record.stack_info):
            record.stack_info = self._redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name in _RECORD_FIELDS or isinstance(value, _PLAIN):
                continue
            text = value if isinstance(value, str) else str(value)
            if self._leaks(text):
                setattr(record, name, self._redact(text))
        return True


class _JsonLines(JsonFormatter):
    """python-json-logger's formatter with the time first, in UTC."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        moment = datetime.fromtimestamp(record.created, UTC)
        log_data["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        super().add_fields(log_data, record, message_dict)


def json_formatter() -> logging.Formatter:
    """One JSON object per line.

    Fields: ``time`` (ISO-8601, UTC, milliseconds), ``level``, ``logger``, ``message``,
    ``process`` (pid), ``process_name`` (``MainProcess``, ``ForkPoolWorker-1``, ``Beat``),
    then every ``extra`` field of the record; ``exception`` and ``stack`` as text.
    """
    return _JsonLines(
        ["levelname", "name", "message", "process", "processName"],
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "processName": "process_name",
            "exc_info": "exception",
            "stack_info": "stack",
        },
    )


def configure_handlers(logger: logging.Logger, settings: Settings) -> None:
    """Give each handler of ``logger`` the secret filter and, for ``json``, the JSON format.

    With ``text`` the handlers keep the formatter they have (Celery's). Idempotent.
    """
    secrets = secrets_of(settings)
    for handler in logger.handlers:
        for stale in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(stale)
        handler.addFilter(RedactSecrets(secrets))
        if settings.log_format == "json":
            handler.setFormatter(json_formatter())
