"""Every fast path against the reference path, on real test tweets and a briefly fine-tuned real backbone; the
ONNX export cache; the service's path setting; and the benchmark harness end to end on the tiny model.

Agreement needs spread outputs: a random head scores everything near its bias, so any path agrees with it.
The fixture fine-tunes the bundled MiniLM through the real `training.pipeline.train` on real shared data (OLID +
ETHOS, which label all three policies) for 50 steps at a high learning rate, then checks the spread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.measure import agreement, shared_test_tweets
from serving.fastpath import AUTO, PATHS, native_bf16, resolve_path
from serving.predictor import Predictor
from serving.schemas import ServiceSettings
from training.config import repo_root

REPO_ROOT = repo_root()
# Read at import, before the autouse fixture points MLflow at each test's tmp dir (for test_full_benchmark).
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"
FAST_PATHS = [p for p in PATHS if p != "reference"]
MAX_ABS_DP, MAX_FLIP_SHARE = 0.02, 0.005  # the agreement bound every fast path must meet
# bf16 is emulated on CPUs without AMX/AVX512-BF16 (~7 texts/s here): fewer tweets for it there.
N_TWEETS = {"onnxruntime": 600, "bf16": 600 if native_bf16() else 160}


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory: pytest.TempPathFactory, _mlflow_template_db: Path, data_root: Path) -> Path:
    """A MiniLM artifact fine-tuned for 50 steps on real OLID + ETHOS train rows (max_length 64, lr 3e-4)."""
    from training.config import load_config
    from training.pipeline.train import train

    folder = tmp_path_factory.mktemp("finetuned")
    shutil.copy(_mlflow_template_db, folder / "mlflow.db")
    cfg = load_config(None, [
        f"data.root={data_root}", f"data.sources_file={REPO_ROOT / 'data' / 'sources.yaml'}",
        "data.include=[olid,ethos]", "data.max_train_rows_per_source=800", f"data.cache_dir={folder / 'cache'}",
        "model.max_length=64", "train.max_steps=50", "train.batch_size=16", "train.lr=3e-4",
        "train.warmup_ratio=0.1", "train.eval_batch_size=128", "train.early_stopping_patience=null",
        "train.num_threads=2", "train.system_metrics=false", f"train.output_dir={folder / 'runs'}",
        # plain training: the defaults' loss terms, weights (of sources left out here) and augmentation off
        "train.source_terms=none", "train.label_weights={}", "train.identity_swap=0", "train.source_balance=0",
        "train.eval_every_steps=null", "train.eval_max_rows=null", "train.max_minutes=null",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}", "run_name=fastpath-agreement",
    ])
    return train(cfg, progress_bar=False).artifact_dir


@pytest.fixture(scope="session")
def tweets(data_root: Path) -> list[str]:
    sources = REPO_ROOT / "data" / "sources.yaml"
    return shared_test_tweets(max(N_TWEETS.values()), root=data_root, sources_file=sources, seed=1)[0]


@pytest.fixture(scope="session")
def reference_probs(finetuned: Path, tweets: list[str]) -> np.ndarray:
    return Predictor.load(finetuned, batch_size=32, path="reference").predict_proba(tweets)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- choosing a path ---------------------------------------------------------------------------------------
def test_auto_is_an_fp32_path_and_names_are_checked():
    assert resolve_path(AUTO) == "onnxruntime"  # installed with the project (pyproject.toml)
    assert resolve_path("bf16") == "bf16"  # explicit only: auto never picks bf16
    with pytest.raises(ValueError, match=r"path='int8'.*'reference', 'onnxruntime', 'bf16'.*'auto'"):
        resolve_path("int8")


def test_service_reads_the_path_setting():
    assert ServiceSettings.from_env({}).predict_path == AUTO
    settings = ServiceSettings.from_env({"TWEETGUARD_PREDICT_PATH": "reference", "TWEETGUARD_CACHE_DIR": "/x"})
    assert (settings.predict_path, settings.cache_dir) == ("reference", "/x")
    with pytest.raises(ValueError, match="TWEETGUARD_PREDICT_PATH: .*'onnx' is not an inference path"):
        ServiceSettings.from_env({"TWEETGUARD_PREDICT_PATH": "onnx"})


# ---- agreement on real tweets ------------------------------------------------------------------------------
@pytest.mark.integration
def test_finetuned_outputs_are_spread(reference_probs: np.ndarray, finetuned: Path):
    thresholds = Predictor.load(finetuned).thresholds()
    for j, policy in enumerate(thresholds):
        p = reference_probs[:, j]
        flagged = np.mean(p >= thresholds[policy])
        assert p.std() > 0.05 and 0.01 < flagged < 0.99, (policy, p.std(), flagged)


@pytest.mark.integration
@pytest.mark.parametrize("path", FAST_PATHS)
def test_fast_path_agrees_with_reference_on_real_tweets(path, finetuned, tweets, reference_probs, tmp_path):
    n = N_TWEETS[path]
    fast = Predictor.load(finetuned, batch_size=32, path=path, cache_dir=tmp_path)
    assert fast.path == path
    thresholds = [fast.card.thresholds[p] for p in fast.policies]
    result = agreement(reference_probs[:n], fast.predict_proba(tweets[:n]), thresholds)
    assert result["max_abs_dp"] <= MAX_ABS_DP, result
    assert result["flip_share"] <= MAX_FLIP_SHARE, result


@pytest.mark.parametrize("path", FAST_PATHS)
def test_fast_path_scores_do_not_depend_on_batch_mates(path, tiny_artifact, tmp_path, mixed_texts):
    predictor = Predictor.load(tiny_artifact, batch_size=3, path=path, cache_dir=tmp_path)
    alone = np.stack([predictor.predict_proba([t])[0] for t in mixed_texts])
    atol = 1e-5 if path == "onnxruntime" else MAX_ABS_DP  # bf16 rounds per padded shape
    for batch_size in (2, 3, 64):
        predictor.batch_size = batch_size
        np.testing.assert_allclose(predictor.predict_proba(mixed_texts), alone, rtol=0, atol=atol)
        np.testing.assert_allclose(predictor.predict_proba(mixed_texts[::-1])[::-1], alone, rtol=0, atol=atol)


@pytest.mark.parametrize("head", ["mean", "cls"])
def test_onnxruntime_matches_reference_on_both_heads(head, tiny_artifact, tmp_path, mixed_texts,
                                                     make_tiny_artifact):
    model_dir = tiny_artifact if head == "mean" else make_tiny_artifact(tmp_path / "cls", head="cls", seed=1)
    reference = Predictor.load(model_dir, path="reference").predict(mixed_texts)
    fast = Predictor.load(model_dir, path="onnxruntime", cache_dir=tmp_path / "cache").predict(mixed_texts)
    for want, got in zip(reference, fast):
        assert got["flags"] == want["flags"] and got["truncated"] == want["truncated"]
        assert all(abs(got["scores"][p] - v) <= 1e-5 for p, v in want["scores"].items())


def test_length_batches_bound_padding_and_cover_every_text_once():
    from serving.predictor import PAD_SLACK, length_batches

    lengths = [int(x) for x in np.random.default_rng(0).integers(3, 90, size=301)]
    batches = length_batches(lengths, batch_size=32)
    assert sorted(i for b in batches for i in b) == list(range(301))
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)  # longest first
    for b in batches:
        longest = lengths[b[0]]
        assert len(b) <= 32 and all(longest - lengths[i] <= max(PAD_SLACK[0], PAD_SLACK[1] * longest) for i in b)
    # One call of 32 texts of mixed lengths is split by length, not padded to its longest.
    assert len(length_batches([90] + [10] * 31, batch_size=32)) == 2


# ---- the ONNX export cache ---------------------------------------------------------------------------------
def test_export_is_cached_by_content_and_never_touches_the_model_dir(tiny_artifact, tmp_path, make_tiny_artifact):
    before = _fingerprint(tiny_artifact)
    Predictor.load(tiny_artifact, path="onnxruntime", cache_dir=tmp_path)
    (graph,) = (tmp_path / "onnx").glob("*/model.onnx")
    stamp = graph.stat().st_mtime_ns
    Predictor.load(tiny_artifact, path="onnxruntime", cache_dir=tmp_path)  # reuses it
    assert graph.stat().st_mtime_ns == stamp and _fingerprint(tiny_artifact) == before
    other = make_tiny_artifact(tmp_path / "other", seed=5)  # other weights: another export
    Predictor.load(other, path="onnxruntime", cache_dir=tmp_path)
    assert len(list((tmp_path / "onnx").glob("*/model.onnx"))) == 2
    assert not list((tmp_path / "onnx").glob("*/.*"))  # no temp files left behind


# ---- the benchmark harness ---------------------------------------------------------------------------------
@pytest.mark.integration  # the whole benchmark harness in subprocesses (~55 s)
def test_benchmark_harness_runs_end_to_end_on_the_tiny_model(tiny_artifact, tmp_path):
    from benchmarks.inference import main

    report = main(["--model", str(tiny_artifact), "--n", "64", "--single", "8", "--threads", "1",
                   "--clients", "4", "--skip-cold-start", "--cache-repeat-rate", "0.5",
                   "--out", str(tmp_path / "bench")])
    names = [r["name"] for r in report["inprocess"]]
    assert names == ["pipeline (stock)", *(f"predictor {p}" for p in PATHS if p != "bf16" or native_bf16())]
    assert all(r["texts_per_s"] > 0 and r["single"]["p50_ms"] > 0 for r in report["inprocess"])
    assert report["inprocess"][0]["ratio_vs_pipeline"] == 1.0
    assert report["data"]["tokens"]["max"] <= report["model"]["max_length"]
    served = report["served"]
    assert [(r["clients"], r["texts_per_request"]) for r in served["runs"]] == [(1, 1), (4, 1), (1, 16)]
    assert all(r["failures"] == 0 for r in served["runs"]) and served["peak_rss_mb"] > 0
    assert [r["clients"] for r in served["echo"]["runs"]] == [1, 4]  # the stock BentoML floor, same loads
    targets = {t["target"] for t in report["targets"]}
    assert {"p50 one tweet over HTTP <= in-process p50 + echo p50", "service RSS <= 1 GB"} <= targets
    assert any(t.startswith("served 4 clients >= 0.85 x B") for t in targets), targets
    cache = report["cache"]  # 64 requests, about half of them repeats: hits with the cache on, none with it off
    assert cache["cache off"]["hit_rate"] == 0 and cache["cache off"]["failures"] == 0
    on = cache["cache on (default size)"]
    repeats = 1 - cache["distinct_texts"] / 64  # a repeat can miss only while its first copy is still in flight
    assert on["failures"] == 0 and 0.5 * repeats <= on["hit_rate"] <= repeats + 1e-9
    assert (tmp_path / "bench" / "bench.json").is_file()
    assert "## Targets" in (tmp_path / "bench" / "bench.md").read_text()


@pytest.mark.integration  # fresh Python processes load the artifact (~13 s)
def test_cold_starts_load_a_mean_head_artifact_in_a_fresh_process(tiny_artifact, tmp_path):
    """The stock pipeline's cold start runs in a fresh interpreter, where nothing has imported our model class:
    the mean head loads from the code saved beside its weights."""
    from benchmarks.inference import cold_start

    assert json.loads((tiny_artifact / "config.json").read_text())["model_type"] == "tweetguard_bert"
    for kind, path in (("pipeline", ""), ("predictor", "reference")):
        out = cold_start(kind, tiny_artifact, path, 1, tmp_path)
        assert out["cold_start_s"] > 0 and out["process_peak_rss_mb"] > 0, out


@pytest.mark.benchmark
def test_full_benchmark(monkeypatch):
    """The full run (~15 min on 2 cores) of TWEETGUARD_BENCH_MODEL (default models:/tweetguard@champion of the
    user's tracking store); the report goes to reports/bench."""
    from benchmarks.inference import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", USER_TRACKING_URI)
    model = os.environ.get("TWEETGUARD_BENCH_MODEL", "models:/tweetguard@champion")
    report = main(["--model", model, "--n", "2000", "--candidates", "--out", str(REPO_ROOT / "reports" / "bench")])
    assert all(r["failures"] == 0 for r in report["served"]["runs"])
