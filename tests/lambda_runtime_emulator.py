"""A minimal Lambda Runtime API (2018-06-01) on 127.0.0.1, for running the built artifact under
AWS's own runtime interface client (awslambdaric) in tests.

Serves ``GET /runtime/invocation/next`` (blocks until an event is queued), ``POST
/runtime/invocation/{id}/response``, ``POST /runtime/invocation/{id}/error`` and ``POST
/runtime/init/error``; results are collected per request id.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    def __init__(self, function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tw"):
        self.function_arn = function_arn
        self.pending: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.results: dict[str, dict[str, Any]] = {}
        self.init_error: dict[str, Any] | None = None
        self.done = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                request_id, payload = api.pending.get()
                self._reply(200, payload, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
                    "Content-Type": "application/json"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path[len(PREFIX):].strip("/").split("/")
                if parts[:2] == ["init", "error"]:
                    api.init_error = json.loads(body or b"{}")
                    self._reply(202)
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response",
                                                                                  "error"):
                    with api.done:
                        api.results[parts[1]] = {
                            "kind": parts[2], "body": json.loads(body) if body else None,
                            "error_type": self.headers.get("Lambda-Runtime-Function-Error-Type")}
                        api.done.notify_all()
                    self._reply(202)
                else:
                    self._reply(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RuntimeApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def invoke(self, event: Any, timeout: float = 60) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        self.pending.put((request_id, json.dumps(event).encode()))
        deadline = time.monotonic() + timeout
        with self.done:
            while request_id not in self.results:
                left = deadline - time.monotonic()
                if left <= 0 or self.init_error:
                    raise TimeoutError(f"no result for {request_id}; init error: {self.init_error}")
                self.done.wait(min(left, 0.5))
        return self.results[request_id]
