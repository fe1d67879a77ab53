"""A webhook receiver that checks what it is sent, with the standard library only.

    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 9000 --out events.jsonl

It answers 204 to a genuine event and appends it to `--out` once (a retry of an event it has
already kept is answered 204 and not kept again: deliveries are at least once). It refuses with
400 a call whose signature does not match (a forged or tampered body), whose timestamp is more
than five minutes away (a replay of an old call), or that lacks the headers. During a secret
rotation, set WEBHOOK_SECRET to both secrets, separated by a space.

The check is the Standard Webhooks one: HMAC-SHA256, keyed with the base64 after `whsec_`, over
"<webhook-id>.<webhook-timestamp>.<body>", compared with each `v1,` signature in constant time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60


def verify(secrets: list[str], headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None when the call is genuine and fresh; else why it is refused."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        return "missing webhook headers"
    if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_SECONDS:
        return "timestamp too old or too new"
    signed = f"{msg_id}.{stamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256).digest()
        for candidate in signatures.split(" "):
            version, _, value = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(base64.b64decode(value), expected):
                return None
    return "no valid signature"


def serve(port: int, out: str, secrets: list[str]) -> None:
    # What it kept before a restart counts as seen: a retry after the restart is not kept twice.
    seen: set[str] = set()
    if os.path.exists(out):
        with open(out) as kept:
            seen = {json.loads(line)["id"] for line in kept}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            refused = verify(secrets, headers, body, time.time())
            if refused:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(refused.encode())
                return
            with lock:
                if headers["webhook-id"] not in seen:
                    seen.add(headers["webhook-id"])
                    with open(out, "a") as f:
                        f.write(json.dumps({"id": headers["webhook-id"], "event": json.loads(body),
                                            "body": body.decode(), "headers": {
                                                h: headers[h] for h in headers if h.startswith("webhook-")}})
                                + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"receiving webhooks on http://127.0.0.1:{port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--out", default="events.jsonl")
    args = parser.parse_args()
    serve(args.port, args.out, os.environ["WEBHOOK_SECRET"].split())
