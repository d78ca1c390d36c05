"""A real `bentoml serve` in a subprocess, on a free loopback port, with its own BENTOML_HOME.

`ServedBento.start(...)` waits until ``/readyz`` answers 200 (failing fast with the server's log if the process
dies), and `.stop()` ends the server's own process group. Used by tests/test_service*.py and benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def import_model(model_dir: Path, bentoml_home: Path) -> str:
    """Put an artifact into the model store under ``bentoml_home`` (a child process: see training.package)."""
    code = "import sys; from training.package import import_model; print(import_model(sys.argv[1]))"
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home)}
    out = subprocess.run([sys.executable, "-c", code, str(model_dir)], env=env, cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@dataclass
class ServedBento:
    url: str
    proc: subprocess.Popen
    log_path: Path
    not_ready_polls: int = 0  # readiness polls answered with anything but 200 before the first 200
    startup_s: float = 0.0
    env: dict = field(default_factory=dict)

    @classmethod
    def start(cls, target: str, *, bentoml_home: Path, log_path: Path, env: dict[str, str] | None = None,
              timeout: float = 120.0, via_cli: bool = False) -> ServedBento:
        """Serve ``target`` (a service import path or a bento tag); ``via_cli``: through `tweetguard serve`."""
        port = free_port()
        full_env = {**os.environ, "BENTOML_HOME": str(bentoml_home), **(env or {})}
        if "TWEETGUARD_API_TOKEN" not in (env or {}):
            full_env.pop("TWEETGUARD_API_TOKEN", None)
        cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
        if via_cli:  # its default host is loopback: not passed on purpose
            cmd = [sys.executable, "-m", "training.cli", "serve", "--bento", target, "--port", str(port)]
        log = log_path.open("wb")
        t0 = time.monotonic()
        # Own session: stop() signals this server's process group (its workers) and nothing else.
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        served = cls(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path, env=full_env)
        try:
            served._wait_ready(t0 + timeout)
        except BaseException:
            served.stop()
            raise
        served.startup_s = time.monotonic() - t0
        return served

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.not_ready_polls += 1
            time.sleep(0.2)
        raise TimeoutError(f"{self.url} not ready in time:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def metric_batch_sizes(self, method: str = "score_batch") -> tuple[float, float]:
        """(sum, count) of BentoML's adaptive batch size histogram: calls merged per model call."""
        total = count = 0.0
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if f'method_name="{method}"' not in line:
                continue
            if line.startswith("bentoml_service_adaptive_batch_size_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("bentoml_service_adaptive_batch_size_count"):
                count += float(line.rsplit(" ", 1)[1])
        return total, count
