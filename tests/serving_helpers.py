"""Start the real model server in a subprocess on a loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModelServer:
    def __init__(self, data_dir: Path, models: list[str], *, replicas: int = 1,
                 env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "unirank.cli.main", "serve", "models", "--port", str(self.port),
               "--replicas", str(replicas)]
        for m in models:
            cmd += ["--model", m]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("UNIRANK_")}
        full_env.update({"HF_HUB_OFFLINE": "1", "UNIRANK_DATA_DIR": str(data_dir),
                         "UNIRANK_CONFIG": str(data_dir / "absent.toml"), **(env or {})})
        self.log_path = log_path or data_dir / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> "ModelServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"model server exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"model server not ready after {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
