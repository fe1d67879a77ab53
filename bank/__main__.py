"""`python -m bank --port 8100 --db instance/bank.db`: run the bank service."""

from __future__ import annotations

import argparse
import contextlib
import logging

from werkzeug.serving import make_server

from bank.server import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--db", default=None, help="SQLite file of the bank's transfers")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random faults")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = make_server(args.host, args.port, create_app(args.db, args.seed), threaded=True)
    print(f"bank listening on http://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
