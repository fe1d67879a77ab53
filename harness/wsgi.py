"""A WSGI app (ours, or the bank's) behind a real threaded HTTP server in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server

#: How often the serving loop looks for a shutdown request.
SHUTDOWN_POLL_SECONDS = 0.02


@contextmanager
def serving(app: Any, *, name: str = "wsgi-server") -> Iterator[str]:
    """`app` on a free local port until the block ends; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Shutting down waits for the serving loop's next poll: 0.5 s by default, at every test's end.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                              name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
