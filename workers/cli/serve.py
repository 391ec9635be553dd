"""``dora-forwarder serve``: the ingest endpoint (Datadog's DORA write API) under uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import IO, Any, Final

from config import Settings
from workers.cli.common import EXIT_FAILURE
from workers.ingest.keys import IngestKeys, IngestKeysError

TEXT_FORMAT: Final = "[%(asctime)s: %(levelname)s/%(name)s] %(message)s"
GRACEFUL_SHUTDOWN_S: Final = 5
"""How long a stopping server lets requests under way finish (each is one XADD)."""


class ServeSettingsError(ValueError):
    """The settings of ``serve`` contradict each other; the message says what to set."""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65_535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def add_serve_parser(commands: Any) -> None:
    """Add ``serve`` to the command's subparsers (``argparse``'s private type: hence Any)."""
    serve = commands.add_parser(
        "serve",
        help="serve Datadog's DORA write API to producers (curl, datadog-ci, Datadog's clients)",
        description="Accepts POST /api/v2/dora/failure, /api/v2/dora/deployment (and the "
        "legacy /incident), PATCH /api/v2/dora/deployments/{id} (and by version, a preview: "
        "FORWARDER_PATCH_BY_VERSION), DELETE /api/v2/dora/deployment/{id} and "
        "/api/v2/dora/failure/{id}, with Datadog's bodies and DD-API-KEY header, and enqueues "
        "each event into Redis for the workers. Producers send one of FORWARDER_INGEST_KEYS, "
        "never the Datadog key; a DD-APPLICATION-KEY header is ignored. Webhook sources, each "
        "off until set: POST /sources/alertmanager (FORWARDER_ALERTMANAGER_SOURCE=true), "
        "/sources/pagerduty (FORWARDER_PAGERDUTY_WEBHOOK_SECRET), /sources/github "
        "(FORWARDER_GITHUB_WEBHOOK_SECRET), /sources/gitlab (FORWARDER_GITLAB_WEBHOOK_TOKEN); "
        "FORWARDER_SOURCES_FILE overrides their mapping.",
    )
    serve.add_argument("--host", help="address to listen on (default: FORWARDER_INGEST_HOST)")
    serve.add_argument(
        "--port", type=_port, help="port to listen on (default: FORWARDER_INGEST_PORT)"
    )


def _configure_logging(settings: Settings, err: IO[str]) -> None:
    """One handler on ``err`` for every logger (uvicorn's too), with every secret redacted."""
    from workers.ops.logs import configure_handlers  # noqa: PLC0415

    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    configure_handlers(root, settings)  # the secret filter; the JSON format if asked for


def serve_keys(settings: Settings) -> IngestKeys:
    """The accepted keys, once the settings ``serve`` needs are checked.

    Raises ``IngestKeysError`` (no keys, or the Datadog key among them) or
    ``ServeSettingsError`` (half a TLS configuration); both say what to set.
    """
    keys = IngestKeys.from_settings(settings.ingest_keys, settings.dd_api_key)
    if bool(settings.ingest_tls_certfile) != bool(settings.ingest_tls_keyfile):
        raise ServeSettingsError(
            "set both FORWARDER_INGEST_TLS_CERTFILE and FORWARDER_INGEST_TLS_KEYFILE to serve "
            "HTTPS, or neither to serve plain HTTP"
        )
    return keys


def cmd_serve(settings: Settings, args: argparse.Namespace, err: IO[str]) -> int:
    """Serve until SIGINT or SIGTERM; refuse to start without ingest keys. An exit code."""
    from workers.ingest.sources.mapping_file import SourcesFileError, load_mapping  # noqa: PLC0415

    try:
        keys = serve_keys(settings)
        mapping = load_mapping(settings.sources_file)
    except (IngestKeysError, ServeSettingsError, SourcesFileError) as exc:
        print(f"dora-forwarder: {exc}", file=err)
        return EXIT_FAILURE
    certfile, keyfile = settings.ingest_tls_certfile, settings.ingest_tls_keyfile
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from workers.ingest.app import HEALTH_PATH, ROUTES, create_app  # noqa: PLC0415
    from workers.ingest.guard import UvicornRefusals, guarded_protocol  # noqa: PLC0415
    from workers.ingest.sources.endpoints import enabled_sources  # noqa: PLC0415
    from workers.ops.routine_logs import QuietHealthChecks  # noqa: PLC0415

    host = args.host or settings.ingest_host
    port = args.port or settings.ingest_port
    _configure_logging(settings, err)
    app = create_app(settings, keys, mapping=mapping)
    refusals = app.state.ingest.refusals
    # uvicorn's own WARNING per unparsable request goes through the same counts.
    logging.getLogger("uvicorn.error").addFilter(UvicornRefusals(refusals))
    # Probes every few seconds: a healthy answer is no news at INFO.
    logging.getLogger("uvicorn.access").addFilter(QuietHealthChecks(HEALTH_PATH))
    config = uvicorn.Config(
        app,
        # The header deadline and the connection cap uvicorn lacks (see workers.ingest.guard).
        http=guarded_protocol(
            settings.ingest_header_timeout_s, settings.ingest_max_connections, refusals
        ),
        host=host,
        port=port,
        ssl_certfile=certfile or None,
        ssl_keyfile=keyfile or None,
        log_config=None,  # ours, above: redacted, text or JSON
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    scheme = "https" if certfile else "http"
    logging.getLogger("dora_forwarder.ingest").info(
        "ingest endpoint on %s://%s:%d (%s), %d key(s), into Redis at %s; at most %d "
        "connections, headers within %g s, bodies within %g s; PATCH by version (a Datadog "
        "preview) %s; webhook sources: %s",
        scheme,
        host,
        port,
        ", ".join(f"{route.method} {route.path}" for route in ROUTES),
        len(keys),
        settings.redis_url_for_logs,
        settings.ingest_max_connections,
        settings.ingest_header_timeout_s,
        settings.ingest_body_timeout_s,
        "on" if settings.patch_by_version else "off (FORWARDER_PATCH_BY_VERSION)",
        ", ".join(f"POST /sources/{name}" for name in enabled_sources(settings)) or "none",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way out of a failed start; it logged why (a taken port)
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:  # e.g. an unreadable certificate
        print(f"dora-forwarder: the ingest endpoint could not start: {exc}", file=err)
        return EXIT_FAILURE
    return 0
