"""Package a model artifact as a bento, and serve a bento.

`package(model_dir)` imports the artifact directory into the BentoML model store (the same bytes, with the
policy card and lineage as model metadata) and builds a bento of `serving.service:TweetGuard` pinned to that
exact model version. `tweetguard package --model REF` / `tweetguard serve` call these.

BentoML fixes its store location (``BENTOML_HOME``) the first time a process touches it, so `package` does
its work in a fresh Python process: the store it writes is exactly the one asked for, whatever this process
used before. Run this module directly for that work: ``python -m training.package MODEL_DIR [--ref REF]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = REPO_ROOT / "serving" / "bentofile.yaml"
MODEL_NAME = "tweetguard"  # BentoML model store name (the bento is named after the service, also tweetguard)
DEFAULT_BENTO = "tweetguard:latest"


class PackageError(RuntimeError):
    """Packaging failed; the message carries the reason (and the child process's last lines)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

    from serving.artifact import read_card

    model_dir = Path(model_dir).resolve()
    card = read_card(model_dir)  # refuses anything that is not a valid artifact for this code
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    lineage = {
        "ref": ref or str(model_dir),
        "source_dir": str(model_dir),
        "mlflow_run_id": card.mlflow_run_id,
        "packaged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # Proof that the store holds the same bytes as the registry / training output.
        "files_sha256": {str(p.relative_to(model_dir)): _sha256(p) for p in files},
    }
    labels = {"preprocess_version": card.preprocess_version, "mlflow_run_id": card.mlflow_run_id or "none"}
    metadata = _no_nones({"policy_card": card.model_dump(mode="json"), "lineage": lineage})
    with bentoml.models.create(name=MODEL_NAME, labels=labels, metadata=metadata) as model:
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
        str(BENTOFILE), build_ctx=str(REPO_ROOT), args={"model_tag": model_tag}
    )
    return str(bento.tag)


def package(model_dir: str | Path, *, bentoml_home: str | Path | None = None, ref: str | None = None) -> str:
    """Import ``model_dir`` into the model store under ``bentoml_home`` (default: BentoML's own) and build a
    bento serving exactly it; returns the bento tag."""
    env = dict(os.environ)
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(Path(bentoml_home).resolve())
    cmd = [sys.executable, "-m", "training.package", str(Path(model_dir).resolve())]
    if ref:
        cmd += ["--ref", ref]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PackageError(f"packaging {model_dir} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["bento"]


def serve_command(bento: str = DEFAULT_BENTO, *, host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """The `bentoml serve` command line for a bento (loopback unless a host is given)."""
    return [sys.executable, "-m", "bentoml", "serve", bento, "--host", host, "--port", str(port)]


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
