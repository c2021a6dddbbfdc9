"""Run unirank's real servers in subprocesses on loopback ports, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx

from env_helpers import without_unirank_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JsonHandler(BaseHTTPRequestHandler):
    """A stand-in endpoint's request handler (a rate-limiting gateway, a stock TEI): JSON in and out,
    no request log. Subclasses answer in ``do_GET``/``do_POST``."""

    def json_body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def http_endpoint(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a loopback port in this process; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def isolated_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its UNIRANK_* settings, pointed at ``data_dir``."""
    env = without_unirank_settings(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "UNIRANK_DATA_DIR": str(data_dir),
                "UNIRANK_CONFIG": os.devnull, **extra})
    return env


class ServerProcess:
    """``unirank serve SUBCOMMAND …`` in its own process group, its output kept in a log file."""

    #: The path that answers 200 once the server can take requests.
    ready_path = "/health"

    def __init__(self, data_dir: Path, subcommand: str, args: list[str], *,
                 env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "unirank.cli.main", "serve", subcommand, "--port", str(self.port), *args]
        self.log_path = log_path or data_dir / f"{subcommand}-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, env=isolated_env(data_dir, **(env or {})), stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{type(self).__name__} not ready after {timeout}s: {self.log()}")

    def log(self, tail: int | None = 4000) -> str:
        """The server's output, its last ``tail`` characters (an error message's worth) or all of it."""
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class ModelServer(ServerProcess):
    """``unirank serve models``; ready once its models are loaded."""

    ready_path = "/ready"

    def __init__(self, data_dir: Path, models: list[str], *, replicas: int = 1,
                 env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        args = ["--replicas", str(replicas)]
        for m in models:
            args += ["--model", m]
        super().__init__(data_dir, "models", args, env=env, log_path=log_path)


class AppServer(ServerProcess):
    """``unirank serve api``: the chat API and web page."""

    ready_path = "/healthz"

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, "api", list(args), env=env)
