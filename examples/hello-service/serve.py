#!/usr/bin/env python3
"""Start hello-service: ``python3 serve.py [--port N] [--host ADDR]``.

- port: ``--port``, else ``$PORT``, else 8000 (0 picks a free port, printed at start)
- address: ``--host``, else ``$HOST``, else 127.0.0.1
- database: ``$HELLO_DB``, else ``$ASHAT_SHARED_DIR/hello.db`` (under ashat), else
  ``data/hello.db`` under the current directory
- logs one line per request to stdout; SIGTERM or SIGINT stops it cleanly (exit 0)

Only the Python standard library is needed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from hello_service import read_version
from hello_service.app import make_server
from hello_service.db import Database, SchemaError, db_path_from_env

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
DRAIN_TIMEOUT_S = 3.0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="serve.py", description="Run hello-service.")
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"TCP port (default: $PORT, else {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--host", default=None, help=f"address to bind (default: $HOST, else {DEFAULT_HOST})"
    )
    args = parser.parse_args(argv)
    if args.port is None:
        env_port = os.environ.get("PORT", "").strip()
        if env_port:
            try:
                args.port = _port(env_port)
            except argparse.ArgumentTypeError as exc:
                parser.error(f"$PORT: {exc}")
        else:
            args.port = DEFAULT_PORT
    if args.host is None:
        args.host = os.environ.get("HOST", "").strip() or DEFAULT_HOST
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = read_version()
    db = Database(db_path_from_env())
    try:
        server = make_server(args.host, args.port, db, version=version)
    except (OSError, SchemaError) as exc:
        print(f"hello-service: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1

    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        print(f"hello-service: {signal.Signals(signum).name} received, stopping", flush=True)
        # shutdown() waits for serve_forever() to return, which runs in this (main) thread:
        # call it from another thread so the handler returns and the loop can notice.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = str(server.server_address[0]), int(server.server_address[1])
    if ":" in host:
        host = f"[{host}]"
    print(
        f"hello-service {version} listening on http://{host}:{port} (database {db.path})",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if not server.wait_idle(DRAIN_TIMEOUT_S):
            print("hello-service: requests still running after drain timeout", flush=True)
        server.server_close()
        db.close()
    print("hello-service: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
