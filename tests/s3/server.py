"""Serve moto's S3 over real HTTP on loopback, for tests that must not patch anything in-process.

Run from the repo root:

    python -m tests.s3.server --port 0 --port-file PATH

The s3 compose service (tests/services/) runs this module too, with --host 0.0.0.0.

The actual port is written to PATH once the socket is listening (atomically, so a reader never
sees a half-written file). SIGTERM/SIGINT stop the server cleanly.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

HOST = "127.0.0.1"
MUTATING_METHODS = frozenset({"PUT", "POST", "DELETE"})


class SerializedWrites:
    """WSGI middleware: one request that mutates runs at a time.

    moto's conditional writes (PutObject with If-None-Match: * / If-Match, and
    CompleteMultipartUpload with If-None-Match: *) check the current object and then store the
    new one without a lock, so two threaded requests could both pass the check. Real S3 makes
    these atomic; holding one lock around every PUT/POST/DELETE gives the same guarantee.
    Reads stay concurrent: they cannot break a writer's check-then-act.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() not in MUTATING_METHODS:
            return self._app(environ, start_response)
        # Buffer the body before taking the lock, so a slow upload does not stall other
        # writers. get_input_stream stops at Content-Length, or reads a chunked body to its end.
        body = get_input_stream(environ).read()
        environ["wsgi.input"] = io.BytesIO(body)
        with self._lock:
            result = self._app(environ, start_response)
            try:
                # Drain inside the lock: a lazy response body could still be doing the write.
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def build_app(*, write_lock: bool = True) -> WSGIApplication:
    # Imported here so `--help` and import errors are quick; moto's import is slow.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    return SerializedWrites(app) if write_lock else app


def widen_race_window(seconds: float) -> None:
    """Test-only: sleep between moto's precondition check and its write.

    moto checks If-None-Match/If-Match in its response layer, then stores the object with
    S3Backend.put_object (CompleteMultipartUpload goes through it too). Delaying that store
    turns a microsecond race into a certain one, so a test can show the write lock matters.
    """
    from moto.s3.models import S3Backend

    store = S3Backend.put_object

    def slow_store(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return store(self, *args, **kwargs)

    S3Backend.put_object = slow_store  # type: ignore[method-assign]


def write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(f"{port}\n", encoding="ascii")
    tmp.replace(path)  # atomic: the waiting fixture sees all of the number or nothing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=HOST, help="address to listen on (a container: 0.0.0.0)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="write the listening port here")
    parser.add_argument(
        "--race-window",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="test-only: delay every object store after its precondition check",
    )
    parser.add_argument(
        "--no-write-lock",
        action="store_true",
        help="test-only: serve moto as it is, with racy conditional writes",
    )
    args = parser.parse_args(argv)
    if args.race_window > 0:
        widen_race_window(args.race_window)

    from moto.moto_server.werkzeug_app import MotoRequestHandler

    # MotoRequestHandler keeps headers with underscores (S3 metadata may have them).
    server = make_server(
        args.host,
        args.port,
        build_app(write_lock=not args.no_write_lock),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    port = server.socket.getsockname()[1]

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # make_server has bound and listened already, so the port is live when the file appears.
    if args.port_file is not None:
        write_port_file(args.port_file, port)
    print(f"moto S3 listening on http://{args.host}:{port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
