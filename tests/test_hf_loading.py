"""The mean-head model loads through the stock Hugging Face auto classes, from a copy outside the repository, in a
process that cannot import tweetguard's packages; without trust_remote_code a stock load fails loudly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from serving.modeling import BertMeanPoolForMultiLabel, load_model
from serving.predictor import Predictor

TEXTS = ["you are a stupid idiot", "have a good day", "i will find you and hurt you"]

# Run in a child: tweetguard's packages cannot be imported there (the editable install would otherwise put the
# repository on sys.path), so the model's own saved code is all that loads.
CHILD = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("serving", "training", "benchmarks"):
            raise ImportError(f"{name} must not be imported by the saved model code")

sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir, texts, remote = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
try:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote).eval()
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
batch = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)(texts, padding=True, truncation=True, max_length=32,
                                                 return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(), "labels": model.config.id2label}))
"""


def _load_in_child(model_dir: Path, remote: bool, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(cwd / "hf_modules")  # remote code is copied here, not into ~/.cache
    out = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), json.dumps(TEXTS), "1" if remote else "0"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_stock_auto_class_gives_our_raw_logits(tiny_artifact, tmp_path):
    outside = Path(shutil.copytree(tiny_artifact, tmp_path / "elsewhere" / "model"))
    assert (outside / "tweetguard_bert.py").is_file()
    got = _load_in_child(outside, remote=True, cwd=tmp_path)
    assert got["class"] == "BertMeanPoolForMultiLabel"
    assert list(got["labels"].values()) == list(Predictor.load(tiny_artifact).policies)
    want = Predictor.load(tiny_artifact, path="reference").logits(TEXTS)  # uncalibrated, as HF returns them
    assert np.abs(np.array(got["logits"]) - want).max() <= 1e-5


def test_stock_load_without_remote_code_fails_loudly(tiny_artifact, tmp_path):
    got = _load_in_child(Path(tiny_artifact), remote=False, cwd=tmp_path)
    assert "error" in got and "trust_remote_code" in got["error"], got


def test_models_saved_before_the_remote_code_still_load(tiny_artifact, v1_artifact, mixed_texts):
    """A mean-head artifact as versions registered before it were saved (fixture `v1_artifact`: model_type bert,
    no auto_map, no code file) scores exactly as the same weights saved now."""
    assert json.loads((v1_artifact / "config.json").read_text())["model_type"] == "bert"
    assert isinstance(load_model(v1_artifact), BertMeanPoolForMultiLabel)
    for path in ("reference", "onnxruntime"):
        before = Predictor.load(v1_artifact, path=path).logits(mixed_texts)
        now = Predictor.load(tiny_artifact, path=path).logits(mixed_texts)
        assert np.abs(before - now).max() <= 1e-5, path


def test_cls_head_stays_a_stock_model(make_tiny_artifact, tmp_path):
    config = json.loads((make_tiny_artifact(tmp_path / "cls", head="cls") / "config.json").read_text())
    assert config["model_type"] == "bert" and "auto_map" not in config
