"""`tweetguard package` builds a bento that serves exactly the packaged model; `bentoml serve <tag>` runs it."""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from serving.predictor import Predictor
from training.cli import main as cli_main
from training.config import repo_root
from training.release.package import BENTOFILE, serve_command

pytestmark = pytest.mark.integration


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bentofile_packages_match_the_serve_extra():
    pyproject = tomllib.loads((repo_root() / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["serve"]
    assert yaml.safe_load(BENTOFILE.read_text())["python"]["packages"] == extra


def test_serve_defaults_to_loopback():
    cmd = serve_command("tweetguard:abc")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "tweetguard:abc" in cmd


def test_package_build_and_serve_the_bento(tiny_artifact: Path, tmp_path: Path, monkeypatch, capsys,
                                           make_tiny_artifact, import_to_store, start_served):
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    assert cli_main(["package", "--model", str(tiny_artifact)]) == 0
    out = capsys.readouterr().out
    bento_tag = out.split("bento: ", 1)[1].split()[0]
    assert f"tweetguard serve --bento {bento_tag}" in out

    name, version = bento_tag.split(":")
    bento_dir = home / "bentos" / name / version
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    model_tag = info["args"]["model_tag"]
    assert [m["tag"] for m in info["services"][0]["models"]] == [model_tag]
    # Only the serving package goes in: no venv, MLflow store, caches, data or tests.
    shipped = {p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*") if p.is_file()}
    assert "serving/service.py" in shipped and "serving/predictor.py" in shipped
    assert not [p for p in shipped if p.split("/")[0] in {".venv", "tests", "data", "training", "mlruns"}
                or "__pycache__" in p or p.endswith(("mlflow.db", ".pyc"))], shipped

    # The bento installs the CPU torch build: PyTorch's CPU index beside PyPI, where ==2.13.0 resolves to the
    # highest matching version, 2.13.0+cpu (PyPI's 2.13.0 is the CUDA build).
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    torch_pin = next(r for r in requirements if r.startswith("torch=="))
    assert max(SpecifierSet(torch_pin[5:]).filter([Version("2.13.0"), Version("2.13.0+cpu")])) == Version("2.13.0+cpu")

    # The store holds the same bytes, with the policy card and lineage as metadata.
    model_dir = home / "models" / "tweetguard" / model_tag.split(":")[1]
    meta = yaml.safe_load((model_dir / "model.yaml").read_text())["metadata"]
    hashes = meta["lineage"]["files_sha256"]
    assert hashes == {str(p.relative_to(tiny_artifact)): _sha(p) for p in tiny_artifact.rglob("*") if p.is_file()}
    assert all(_sha(model_dir / rel) == h for rel, h in hashes.items())
    assert meta["policy_card"]["model_name"] == "tiny" and meta["lineage"]["ref"] == str(tiny_artifact)

    # A newer model in the store must not change what this bento serves.
    other = make_tiny_artifact(tmp_path / "other", seed=1)
    newer = import_to_store(other, home)
    assert newer != model_tag

    server = start_served(bento_tag, bentoml_home=home, log_path=tmp_path / "serve.log", via_cli=True)
    try:
        assert f"listening on {server.url}" in server.log()  # `tweetguard serve` binds loopback by default
        texts = ["you are a stupid idiot", "have a good day", "i will find you"]
        r = httpx.post(server.url + "/classify", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["version"] == model_tag.split(":")[1]
        for got, want in zip(body["results"], Predictor.load(tiny_artifact).predict(texts)):
            assert all(abs(got["scores"][p] - v) <= 1e-5 for p, v in want["scores"].items())
        r = httpx.post(server.url + "/v1/moderations", json={"input": texts})
        assert r.status_code == 200 and r.json()["model"] == model_tag
    finally:
        server.stop()

    # The model the bento pins gone from the store, or no such bento: a clear CLI error (exit 2), no traceback.
    import shutil
    import subprocess
    import sys

    shutil.rmtree(model_dir)
    for tag, message in ((bento_tag, f"serves model {model_tag}, which is not in this machine's model store"),
                         ("tweetguard:nosuchbento", "no bento 'tweetguard:nosuchbento' in this machine's")):
        proc = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--bento", tag], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "BENTOML_HOME": str(home)})
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_tampered_model_file_is_refused_at_start(tiny_artifact: Path, tmp_path: Path, import_to_store):
    """A store file whose bytes differ from the sha256 recorded at import: start-up fails naming the file (BentoML
    retries the worker, which fails the same way), and /readyz never answers 200."""
    import time

    from training.release.package import SOURCE_TARGET, free_port, start_server, stop_server

    home = tmp_path / "bentoml"
    tag = import_to_store(tiny_artifact, home)
    weights = home / "models" / "tweetguard" / tag.split(":")[1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_server(SOURCE_TARGET, port=port, log_path=log,
                        env={**os.environ, "BENTOML_HOME": str(home), "TWEETGUARD_MODEL_TAG": tag})
    try:
        deadline = time.monotonic() + 90
        while "is not the recorded" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert f"{weights}: sha256" in text and "is not the recorded" in text, text[-3000:]
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            status = None  # not answering at all is also "not ready"
        assert status != 200
    finally:
        stop_server(proc)


def test_sigterm_drains_in_flight_requests(tiny_artifact: Path, tmp_path: Path, import_to_store, start_served):
    """SIGTERM to the server's main process (what a supervisor sends) while requests are being scored: every
    accepted request is answered in full, then the server exits 0."""
    import signal
    import threading
    import time

    from training.release.package import SOURCE_TARGET

    home = tmp_path / "bentoml"
    tag = import_to_store(tiny_artifact, home)
    served = start_served(SOURCE_TARGET, bentoml_home=home, log_path=tmp_path / "serve.log",
                          env={"TWEETGUARD_MODEL_TAG": tag})
    answers: dict[int, object] = {}

    def send(k: int) -> None:  # ~1 s of tokenizing and scoring each on 2 cores: in flight when the signal lands
        texts = [f"you are a stupid idiot {k} {j} " * 125 for j in range(200)]
        try:
            r = httpx.post(served.url + "/classify", json={"texts": texts}, timeout=60)
            answers[k] = (r.status_code, len(r.json()["results"]))
        except httpx.HTTPError as e:
            answers[k] = type(e).__name__

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(served.proc.pid, signal.SIGTERM)
    for t in threads:
        t.join()
    assert served.proc.wait(timeout=60) == 0
    assert answers == {k: (200, 200) for k in range(4)}, answers
