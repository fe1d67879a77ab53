"""What gunicorn answers by itself (a request it cannot parse never reaches Flask), in the API's
error shape: `{"error": {"code", "message"}}` as JSON instead of its HTML page.

gunicorn.conf.py installs it in the master, before the workers fork.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

#: The start of gunicorn's own message kept in ours (it may quote what the client sent).
MESSAGE_CHARS = 200


def json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps({"error": {"code": reason.lower().replace(" ", "_"),
                                 "message": f"{reason}: {mesg}"[:MESSAGE_CHARS]}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


def install() -> None:
    util.write_error = json_error
