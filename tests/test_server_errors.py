"""What gunicorn answers by itself, under the Procfile's config: the API's JSON error shape."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.net import free_private_port
from harness.processes import Process, clean_environment
from harness.waits import wait_until

pytestmark = pytest.mark.process
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
def web(tmp_path: Path) -> Iterator[int]:
    port = free_private_port()
    env = {**clean_environment(), "DATABASE_URL": f"sqlite:///{tmp_path / 'fx.db'}", "PORT": str(port),
           "WEB_CONCURRENCY": "1"}
    server = Process("gunicorn", (GUNICORN, "--config", "gunicorn.conf.py", "app:app"), env, tmp_path / "web.log")
    server.start()
    try:
        wait_until(lambda: _answers(port), 60, server.describe)
        yield port
    finally:
        server.kill()


def _answers(port: int) -> bool:
    try:
        return raw(port, b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", 400, "bad_request"),
    (b"GET /" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
])
def test_a_request_gunicorn_refuses_is_answered_in_the_json_error_shape(
    web: int, request_bytes: bytes, status: int, code: str
) -> None:
    got, headers, body = raw(web, request_bytes)
    assert got == status
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    assert "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in body.decode()
