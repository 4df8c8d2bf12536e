"""The HTTP front of the W&B test double.

``wandb-core`` (the SDK's Go sidecar) and the Python SDK speak plain HTTP/1.1
with keep-alive: GraphQL at ``POST /graphql``, the run file stream at
``POST /files/<entity>/<project>/<run>/file_stream``, presigned uploads as
``PUT`` to whatever ``uploadUrl`` ``CreateRunFiles`` returned, and OpenTelemetry
at ``POST /sdk/otel/...``.  Auth is HTTP basic ``api:<key>``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import re
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import _mutations as mutations

if TYPE_CHECKING:
    from ._double import WandbDouble


def api_key_of(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            user, _, password = base64.b64decode(value).decode().partition(":")
            return password or user
        return None
    return value or None


class QuietServer(ThreadingHTTPServer):
    """A client hanging up (wandb-core closing idle keep-alive connections at
    teardown) is normal; anything else is printed as usual."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


_FILE_STREAM = re.compile(r"^/files/([^/]+)/([^/]+)/([^/]+)/file_stream$")


def handler_for(double: WandbDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "wandb-double/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the request log is the record."""

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            return raw

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self, entry: dict[str, Any]) -> bool:
            key = api_key_of(self.headers.get("Authorization"))
            with double._lock:
                if key:
                    double.api_keys_seen.add(key)
            entry["has_key"] = bool(key)
            if double.require_key is None or key == double.require_key:
                return True
            entry["status"] = 401
            with double._lock:
                double._record(entry)
            # the body W&B sends for a missing or wrong key
            self._send(
                401,
                {
                    "errors": [
                        {
                            "message": "user is not logged in",
                            "extensions": {"code": "PERMISSION_ERROR"},
                        }
                    ],
                    "data": None,
                },
            )
            return False

        def _handle(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            entry: dict[str, Any] = {"t": round(time.time(), 3), "method": method, "path": path}
            body = self._body()
            if path.startswith("/upload/"):  # presigned upload URLs carry no key
                with double._lock:
                    mutations.upload(double, path, body)
                    double._record({**entry, "variables": {"bytes": len(body)}})
                self._send(200, {})
                return
            if not self._authorized(entry):
                return
            status: int = 200
            answer: Any = {}
            try:
                if path == "/graphql" and method == "POST":
                    status, answer, extra = double._graphql(json.loads(body or b"{}"))
                    entry.update(extra)
                elif (m := _FILE_STREAM.match(path)) and method == "POST":
                    payload = json.loads(body or b"{}")
                    entry["variables"] = payload
                    entity, project, run = m.groups()
                    if payload.get("complete") and double.complete_delay:
                        with double._lock:  # heard from now; answered after a slow upload
                            if (known := double._runs.get(run)) is not None:
                                known.heartbeat_at = time.time()
                        time.sleep(double.complete_delay)
                    with double._lock:
                        answer = mutations.file_stream(double, entity, project, run, payload)
                elif path.startswith("/sdk/otel") or path.startswith("/v1/"):
                    entry["variables"] = {"bytes": len(body)}
                else:
                    status = 404
                    answer = {"error": f"the W&B double has no {method} {path}"}
                    with double._lock:
                        double.unknown.append(f"{method} {path}")
            except Exception as exc:  # never leave the SDK hanging on a double bug
                status, answer = 500, {"error": f"W&B double crashed: {exc!r}"}
                with double._lock:
                    double.errors.append(f"{method} {path}: {exc!r}")
            entry["status"] = status
            with double._lock:
                double._record(entry)
            self._send(status, answer)

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

    return Handler
