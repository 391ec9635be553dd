"""doctor's key check trusts the CAs the workers trust (SSL_CERT_FILE), and no proxy.

A relay in front of Datadog (``FORWARDER_API_URL``) may serve a private CA's certificate:
the workers reach it through httpx's SSL context, so doctor must too, or it would fail a
route the workers use.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import load_settings
from workers.ops.doctor_facts import ask_api_key


class _Validate(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"valid": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def private_ca_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS validate endpoint on 127.0.0.1 with a self-signed certificate; its URL and
    the certificate (its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Validate)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def test_a_private_ca_the_workers_trust_is_trusted(
    private_ca_api: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = private_ca_api
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    settings = load_settings(dd_api_key="k" * 32, api_url=url)
    answer = ask_api_key(settings)
    assert answer is not None
    assert (answer.status, answer.valid, answer.error) == (200, True, None)


def test_without_it_the_certificate_is_refused(private_ca_api: tuple[str, Path]) -> None:
    """The same server, its CA not trusted: no answer, and the reason says why."""
    url, _ = private_ca_api
    answer = ask_api_key(load_settings(dd_api_key="k" * 32, api_url=url))
    assert answer is not None
    assert answer.status is None
    assert "CERTIFICATE_VERIFY_FAILED" in (answer.error or "")
