"""Package a model artifact as a bento, and serve a bento.

`package(model_dir)` imports the artifact directory into the BentoML model store (the same bytes, with the
policy card and lineage as model metadata) and builds a bento of `serving.service:TweetGuard` pinned to that
exact model version. `tweetguard package --model REF` / `tweetguard serve` call these.

BentoML fixes its store location (``BENTOML_HOME``) the first time a process touches it, so `package` does
its work in a fresh Python process: the store it writes is exactly the one asked for, whatever this process
used before. Run this module directly for that work: ``python -m training.release.package MODEL_DIR [--ref REF]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from serving.artifact import file_sha256, read_card
from training.config import repo_root

BENTOFILE = repo_root() / "serving" / "bentofile.yaml"
STORE_MODEL_NAME = "tweetguard"  # BentoML model store name (the bento is named after the service, also tweetguard)
DEFAULT_BENTO = "tweetguard:latest"
SOURCE_TARGET = "serving.service:TweetGuard"  # the service from the source tree (bentofile.yaml's `service`)
TOKEN_ENV = "TWEETGUARD_API_TOKEN"  # serving.service.TOKEN_ENV (importing it would load BentoML and the service)


class PackageError(RuntimeError):
    """Packaging failed; the message carries the reason (and the child process's last lines)."""


def _no_nones(value):
    # BentoML model metadata admits basic types only, not None: an absent value is left out.
    if isinstance(value, dict):
        return {k: _no_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nones(v) for v in value if v is not None]
    return value


def import_model(model_dir: str | Path, *, ref: str | None = None) -> str:
    """Copy an artifact directory into this process's BentoML model store; returns the model tag."""
    import bentoml

    model_dir = Path(model_dir).resolve()
    card = read_card(model_dir)  # refuses anything that is not a valid artifact for this code
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    lineage = {
        "ref": ref or str(model_dir),
        "source_dir": str(model_dir),
        "mlflow_run_id": card.mlflow_run_id,
        "packaged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # Proof that the store holds the same bytes as the registry / training output.
        "files_sha256": {str(p.relative_to(model_dir)): file_sha256(p) for p in files},
    }
    labels = {"preprocess_version": card.preprocess_version, "mlflow_run_id": card.mlflow_run_id or "none"}
    metadata = _no_nones({"policy_card": card.model_dump(mode="json"), "lineage": lineage})
    with bentoml.models.create(name=STORE_MODEL_NAME, labels=labels, metadata=metadata) as model:
        for src in files:
            dst = Path(model.path) / src.relative_to(model_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    read_card(model.path)
    return str(model.tag)


def build_bento(model_tag: str) -> str:
    """Build the service's bento pinned to ``model_tag``; returns the bento tag."""
    import bentoml

    bento = bentoml.bentos.build_bentofile(
        str(BENTOFILE), build_ctx=str(repo_root()), args={"model_tag": model_tag}
    )
    return str(bento.tag)


def package(model_dir: str | Path, *, bentoml_home: str | Path | None = None, ref: str | None = None) -> str:
    """Import ``model_dir`` into the model store under ``bentoml_home`` (default: BentoML's own) and build a
    bento serving exactly it; returns the bento tag."""
    env = dict(os.environ)
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(Path(bentoml_home).resolve())
    cmd = [sys.executable, "-m", "training.release.package", str(Path(model_dir).resolve())]
    if ref:
        cmd += ["--ref", ref]
    proc = subprocess.run(cmd, env=env, cwd=repo_root(), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PackageError(f"packaging {model_dir} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["bento"]


def check_bento(tag: str) -> None:
    """Before serving: the bento and the model it pins exist in this machine's stores, or PackageError says what
    is missing and how to get it (BentoML's own message lists import guesses instead)."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bento = bentoml.bentos.get(tag)
    except NotFound:
        known = sorted(str(b.tag) for b in bentoml.bentos.list())[-5:]
        here = f"bentos here: {', '.join(known)}" if known else "the store has none"
        raise PackageError(f"no bento {tag!r} in this machine's BentoML store ({here}); build one with "
                           "`tweetguard package --model REF`") from None
    for model in bento.info.all_models:
        try:
            bentoml.models.get(model.tag)
        except NotFound:
            raise PackageError(f"bento {bento.tag} serves model {model.tag}, which is not in this machine's model "
                               "store; re-run `tweetguard package --model REF` (it imports the model)") from None


def serve_command(bento: str = DEFAULT_BENTO, *, host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """The `bentoml serve` command line for a bento (loopback unless a host is given)."""
    return [sys.executable, "-m", "bentoml", "serve", bento, "--host", host, "--port", str(port)]


# ---- running a server from code (benchmarks and tests) ----------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def import_into_store(model_dir: str | Path, bentoml_home: str | Path) -> str:
    """`import_model` into the store under ``bentoml_home``, in a child process (see the module docstring);
    returns the model tag. Unlike `package`, builds no bento."""
    code = "import sys; from training.release.package import import_model; print(import_model(sys.argv[1]))"
    env = {**os.environ, "BENTOML_HOME": str(Path(bentoml_home).resolve())}
    proc = subprocess.run([sys.executable, "-c", code, str(Path(model_dir).resolve())], env=env, cwd=repo_root(),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PackageError(f"importing {model_dir} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def start_server(target: str, *, port: int, log_path: str | Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> subprocess.Popen:
    """Start `serve_command(target, port=port)` (loopback), or ``command`` if given, from the repository root in
    a session of its own (so `stop_server` reaches its workers and nothing else); stdout and stderr go to
    ``log_path``. ``env`` replaces the environment (default: this process's). Returns at once: see `wait_ready`."""
    cmd = command or serve_command(target, port=port)
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=repo_root(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, *, timeout: float = 120.0, log_path: str | Path | None = None,
               poll_timeout: float = 1.0) -> list[str]:
    """Poll ``url + "/readyz"`` until it answers 200.

    Returns what each earlier poll got: ``"refused"`` (nothing listens yet), ``"no answer"`` (the connection was
    accepted but no HTTP answer came within ``poll_timeout``: BentoML holds requests while the service loads its
    model) or ``"http <status>"``. Raises RuntimeError if ``proc`` exits, TimeoutError after ``timeout`` seconds;
    both messages end with the tail of ``log_path``."""
    import http.client
    import time
    from urllib.parse import urlsplit

    def tail() -> str:
        return Path(log_path).read_text(encoding="utf-8", errors="replace")[-4000:] if log_path else ""

    parts = urlsplit(url)
    polls: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail()}")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=poll_timeout)
        try:
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
            if status == 200:
                return polls
            polls.append(f"http {status}")
        except ConnectionRefusedError:
            polls.append("refused")
        except TimeoutError:
            polls.append("no answer")
        except (OSError, http.client.HTTPException) as e:  # e.g. reset while the server starts
            polls.append(type(e).__name__)
        finally:
            conn.close()
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready in {timeout:.0f}s:\n{tail()}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (see `start_server`), SIGKILL it if it is still there after 20 s."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Served:
    """A ready server (`Served.start`): the one harness the tests and the benchmarks serve a bento with."""

    url: str
    proc: subprocess.Popen
    log_path: Path
    polls: list[str] = field(default_factory=list)  # what each /readyz poll got before the first 200
    log_at_ready: str = ""  # the server log read right after the first 200 from /readyz
    startup_s: float = 0.0  # process start to the first 200 from /readyz

    @classmethod
    def start(cls, target: str, *, bentoml_home: str | Path, log_path: str | Path,
              env: dict[str, str] | None = None, timeout: float = 120.0, via_cli: bool = False) -> Served:
        """Serve ``target`` (a service import path or a bento tag) on a free loopback port with ``env`` on top of
        this environment and BENTOML_HOME=``bentoml_home``; auth (TWEETGUARD_API_TOKEN) only if ``env`` sets it.
        ``via_cli``: through `tweetguard serve --bento` rather than `bentoml serve`. Returns once /readyz answers
        200; if the server exits first or ``timeout`` passes, stops it and raises (`wait_ready`)."""
        port, log_path = free_port(), Path(log_path)
        full_env = {**os.environ, "BENTOML_HOME": str(bentoml_home), **(env or {})}
        if TOKEN_ENV not in (env or {}):
            full_env.pop(TOKEN_ENV, None)
        command = None
        if via_cli:  # its default host is loopback: not passed on purpose
            command = [sys.executable, "-m", "training.cli", "serve", "--bento", target, "--port", str(port)]
        t0 = time.monotonic()
        proc = start_server(target, port=port, log_path=log_path, env=full_env, command=command)
        served = cls(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
        try:
            served.polls = wait_ready(served.url, proc, timeout=timeout, log_path=log_path)
            served.log_at_ready = served.log()
        except BaseException:
            served.stop()
            raise
        served.startup_s = time.monotonic() - t0
        return served

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_server(self.proc)


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="import an artifact into the BentoML store and build the bento")
    p.add_argument("model_dir")
    p.add_argument("--ref", default=None, help="the reference the directory was resolved from (lineage)")
    args = p.parse_args(argv)
    model_tag = import_model(args.model_dir, ref=args.ref)
    bento_tag = build_bento(model_tag)
    print(json.dumps({"model": model_tag, "bento": bento_tag}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
