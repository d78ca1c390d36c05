"""Both notebooks run top to bottom (nbclient) against tiny registered models in a tmp sqlite MLflow store.

The kernel is this interpreter (a kernelspec written into a tmp JUPYTER_PATH), so the test works from a fresh
clone without `ipykernel install`. Parameters go in through environment variables, which the kernel inherits.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from training.config import load_config, repo_root
from training.data.prepare import prepare

NOTEBOOKS = repo_root() / "notebooks"
KERNEL = "tweetguard-test"


@pytest.mark.parametrize("name", ["evaluation.ipynb", "compare.ipynb", "labelling_loop.ipynb"])
def test_committed_notebooks_carry_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec for this Python in a tmp JUPYTER_PATH; its name."""
    kernel_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tweetguard (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.fixture
def notebook_env(tmp_path, tiny_artifact, mlflow_uri, monkeypatch, write_tiny_train_config, register_dir,
                 kernel) -> Path:
    """Kernel spec for this Python, tiny data config, champion = tiny transformer, challenger = TF-IDF."""
    config = write_tiny_train_config(tmp_path)
    cfg = load_config(config, ["baseline.min_df=1"])
    from training.fit.baseline import train_baseline
    from training.tracking.versions import CHALLENGER, CHAMPION, set_alias

    tfidf, _ = train_baseline(cfg, prepare(cfg.data), tmp_path / "tfidf")
    set_alias("tweetguard", CHAMPION, register_dir(tiny_artifact, mlflow_uri), mlflow_uri)
    set_alias("tweetguard", CHALLENGER, register_dir(tfidf, mlflow_uri), mlflow_uri)
    monkeypatch.setenv("TWEETGUARD_CONFIG", str(config))
    monkeypatch.setenv("TWEETGUARD_SPLIT", "validation")
    monkeypatch.setenv("TWEETGUARD_OVERRIDES", f"evaluation.bootstrap_samples=50 evaluation.min_slice_support=2 "
                                               f"evaluation.output_dir={tmp_path / 'reports'}")
    return tmp_path


def _run(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts += [str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(parts)


@pytest.mark.integration  # a Jupyter kernel runs the notebook (slow)
def test_evaluation_notebook_runs(notebook_env):
    nb = _run("evaluation.ipynb")
    text = _text(nb)
    assert "tweetguard v1 (transformer) on validation" in text
    assert "| abusive |" in text and "ECE calibrated" in text
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))
    assert (notebook_env / "reports" / "tweetguard-v1-validation" / "report.md").is_file()
    # the reasons section: worst errors with their words marked, identity terms in benign sentences
    assert "**abusive: false positives**" in text and re.search(r"\[\S+ [+-]\d\.\d\d\]", text)
    assert "abusive_term_contribution" in text and "women" in text


@pytest.mark.integration  # a Jupyter kernel runs the notebook (slow)
def test_compare_notebook_runs(notebook_env, monkeypatch):
    nb = _run("compare.ipynb")
    text = _text(nb)
    assert "A = tweetguard v1 (transformer), B = tweetguard v2 (tfidf)" in text
    assert "abusive/pr_auc" in text and "tweetguard v2 - tweetguard v1" in text


@pytest.mark.integration
def test_labelling_loop_notebook_runs(tmp_path, mlflow_uri, monkeypatch, write_tiny_train_config, kernel):
    """The simulated-reviewer loop on a tiny trained champion: both strategies at two budgets, each a real
    feedback snapshot and a real continued training, scored on the source's test carve."""
    from training.pipeline.train import train

    config = write_tiny_train_config(tmp_path, max_steps=12)
    assert train(load_config(config), config_file=str(config), progress_bar=False).model_version == "1"
    for key, value in {"TWEETGUARD_CONFIG": str(config), "TWEETGUARD_SIM_SOURCE": "tiny_violence",
                       "TWEETGUARD_SIM_BUDGETS": "40,80", "TWEETGUARD_SIM_SEEDS": "0", "TWEETGUARD_SIM_EPOCHS": "1",
                       "TWEETGUARD_SIM_OUT": str(tmp_path / "sim"),
                       # a per-source rule of the main mix (as configs/default.yaml has) does not reach the
                       # feedback-only continued runs
                       "TWEETGUARD_OVERRIDES": "evaluation.bootstrap_samples=50 "
                                               'train.label_weights={"tiny_full":{"abusive":2}}'}.items():
        monkeypatch.setenv(key, value)
    text = _text(_run("labelling_loop.ipynb"))
    assert "pool: 120 texts, carve: 30 texts" in text, text
    assert "| champion (before) |" in text and "| uncertainty | 40 | 1 |" in text and "| random | 80 | 1 |" in text
    assert "violence PR-AUC: uncertainty − random" in text
    assert len(list((tmp_path / "sim").glob("*/snapshots/feedback-*.jsonl"))) == 4
