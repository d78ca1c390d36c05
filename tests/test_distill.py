"""`tweetguard distill`: a 4-layer tiny teacher (trained here, registered as tweetguard@champion in a real sqlite
store) distilled into a 2-layer student through the real training loop, finish and registry."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from serving.artifact import read_card
from serving.modeling import load_model
from serving.policies import POLICIES
from serving.predictor import Predictor
from training.config import ConfigError, load_config
from training.fit.batches import TeacherTargets, masked_bce, soft_bce
from training.fit.distill import evenly_spaced, resolve_layers, student_from_teacher
from training.pipeline.distill import distill
from training.pipeline.train import train
from training.registry.promote import promote
from training.tracking.refs import resolve_model_ref

TEACHER_LAYERS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory, _mlflow_template_db, write_tiny_train_config, make_tiny_backbone) -> dict:
    """Teacher trained 4 steps and registered (v1, @champion); student distilled from it 3 steps (layers 2)."""
    root = tmp_path_factory.mktemp("distill")
    db = root / "mlflow.db"
    shutil.copyfile(_mlflow_template_db, db)
    with sqlite3.connect(db) as con:  # the Default experiment's artifacts stay in this module's dir
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", [str(root / "mlruns")])
    uri = f"sqlite:///{db}"
    make_tiny_backbone(root / "backbone", layers=TEACHER_LAYERS)
    config = write_tiny_train_config(root, max_steps=4, eval_every_steps=2)
    overrides = [f"tracking.uri={uri}"]
    teacher = train(load_config(config, [*overrides, "run_name=teacher"]), progress_bar=False)
    cfg = load_config(config, [*overrides, "run_name=student", "distill.layers=2", "train.max_steps=3"])
    student, distiller = distill(cfg, config_file=str(config), progress_bar=False)
    return {"root": root, "uri": uri, "config": config, "overrides": overrides, "teacher": teacher,
            "student": student, "distiller": distiller}


def test_layer_choice():
    assert evenly_spaced(6, 3) == [0, 2, 5]  # the default for MiniLM-L6
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]  # Hugging Face's DistilBERT initialisation from BERT-base
    assert evenly_spaced(4, 2) == [0, 3] and evenly_spaced(4, 1) == [0] and evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert resolve_layers([1, 2], 4) == [1, 2]
    with pytest.raises(ConfigError, match=r"distill.layers=7: the teacher has 6 encoder layers"):
        evenly_spaced(6, 7)
    with pytest.raises(ConfigError, match=r"distill.layers=\[0, 6\]: the teacher has encoder layers 0..5"):
        resolve_layers([0, 6], 6)
    with pytest.raises(ConfigError, match="distill.layers"):
        load_config(None, ["distill.layers=[3,1]"])
    with pytest.raises(ConfigError, match="never a candidate"):
        load_config(None, ["distill.registered_model=tweetguard"])


def test_soft_term_and_mixing():
    torch.manual_seed(0)
    teacher = torch.randn(5, 3) * 3
    labels = torch.tensor([[1, -1, 0], [0, 0, -1], [-1, -1, -1], [1, 1, 1], [0, -1, 1]])
    for t in (1.0, 2.0):  # the soft term's gradient vanishes where the student equals the teacher, for any T
        student = teacher.clone().requires_grad_(True)
        soft_bce(student, teacher, t).backward()
        assert student.grad.abs().max() < 1e-6
    # T^2 keeps the gradient's scale: for logits near 0, d/ds of T^2 * BCE(s/T, sigmoid(t/T)) ~ T * (s - t) / (4T).
    s = torch.zeros(1, 3, requires_grad=True)
    soft_bce(s, torch.full((1, 3), 0.2), 4.0).backward()
    assert torch.allclose(s.grad, torch.full((1, 3), -0.2 / 4 / 3), rtol=0.02)
    student = torch.randn(5, 3)
    labels_only = masked_bce(student, labels, None)
    assert TeacherTargets(np.zeros((5, 3)), 0.0, 2.0).loss(student, teacher, labels_only) == labels_only
    mixed = TeacherTargets(np.zeros((5, 3)), 0.25, 2.0).loss(student, teacher, labels_only)
    assert torch.allclose(mixed, 0.25 * soft_bce(student, teacher, 2.0) + 0.75 * labels_only)


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_student_starts_as_the_teachers_copied_layers(world):
    teacher = load_model(resolve_model_ref("models:/tweetguard@champion", tracking_uri=world["uri"]))
    layers = [0, 3]
    student = student_from_teacher(teacher, layers)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == TEACHER_LAYERS
    for j, i in enumerate(layers):
        ours, theirs = student.bert.encoder.layer[j].state_dict(), teacher.bert.encoder.layer[i].state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # Every layer kept in order: the student is the teacher, so embeddings and head were copied too.
    ids = torch.tensor([[2, 40, 41, 42, 3], [2, 50, 3, 0, 0]])
    mask = (ids != 0).long()
    whole = student_from_teacher(teacher, list(range(TEACHER_LAYERS))).eval()
    torch.testing.assert_close(whole(input_ids=ids, attention_mask=mask).logits,
                               teacher(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=0)
    assert world["distiller"].layers == [0, 3]  # distill.layers=2 of 4: the first and the last


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_registered_as_fast_tier_with_teacher_tags_never_champion(world):
    client, uri = MlflowClient(world["uri"]), world["uri"]
    student = world["student"]
    assert student.model_version == "1" and world["teacher"].model_version == "1"
    assert {k: str(v) for k, v in client.get_registered_model("tweetguard-fast").aliases.items()} == {"challenger": "1"}
    assert {k: str(v) for k, v in client.get_registered_model("tweetguard").aliases.items()} == {
        "champion": "1", "challenger": "1"}
    tags = client.get_model_version("tweetguard-fast", "1").tags
    assert tags["teacher.ref"] == "models:/tweetguard@champion" and tags["teacher.version"] == "1"
    assert tags["kind"] == "distill" and tags["teacher.name"] == "tweetguard"
    run = client.get_run(student.run_id)
    assert run.data.tags["kind"] == "distill" and run.data.tags["teacher.version"] == "1"
    params = run.data.params
    assert params["distill.alpha"] == "0.5" and params["distill.temperature"] == "2.0"
    assert params["derived.student_layers"] == "[0, 3]" and params["derived.teacher_version"] == "1"
    assert "final_val_mean_pr_auc" in run.data.metrics and client.get_metric_history(student.run_id, "train_loss")
    model_dir = resolve_model_ref("models:/tweetguard-fast@challenger", tracking_uri=uri)
    card = read_card(model_dir)
    assert card.model_name == "tweetguard-fast" and card.mlflow_run_id == student.run_id
    assert all(p.calibration.method == "platt" for p in card.policies) and card.config["distill"]["layers"] == 2
    assert load_model(model_dir).config.num_hidden_layers == 2
    # promote refuses the student, and nothing moves.
    cfg = load_config(world["config"], world["overrides"])
    with pytest.raises(ValueError, match=r"tweetguard-fast v1 is a distilled fast-tier student \(teacher "
                                         r"models:/tweetguard@champion = v1\): it is never a candidate for @champion"):
        promote("models:/tweetguard-fast@challenger", cfg, validation=None, tracking_uri=uri)
    assert {k: str(v) for k, v in client.get_registered_model("tweetguard-fast").aliases.items()} == {"challenger": "1"}


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_student_serves_and_evaluates(world, tmp_path, mixed_texts):
    from training.cli import main

    model_dir = resolve_model_ref("models:/tweetguard-fast@challenger", tracking_uri=world["uri"])
    reference = Predictor.load(model_dir, path="reference").predict_proba(mixed_texts)
    fast = Predictor.load(model_dir, path="onnxruntime", cache_dir=tmp_path / "onnx").predict_proba(mixed_texts)
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    assert main(["evaluate", "--model", "models:/tweetguard-fast@challenger", "--config", str(world["config"]),
                 "--tracking-uri", world["uri"], "--out", str(tmp_path / "report"), "--no-mlflow",
                 "evaluation.bootstrap_samples=50", "evaluation.behaviour_suite=null"]) == 0
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_teacher_logits_are_cached_and_the_teacher_pinned_on_resume(world):
    first = world["distiller"]
    assert first.cache_hit is False
    (cached,) = (world["root"] / "runs" / "teacher-logits").glob("*.npy")
    stamp, logits = cached.stat().st_mtime_ns, np.load(cached)
    # They are the teacher's raw logits on every train text (as its Predictor scores them), in the split's order.
    from training.data.prepare import prepare

    texts = prepare(load_config(world["config"]).data, progress=False).dataset["train"]["text"]
    teacher = Predictor.load(resolve_model_ref("models:/tweetguard/1", tracking_uri=world["uri"]), path="reference")
    np.testing.assert_allclose(logits, teacher.logits(texts), atol=1e-5)
    cfg = load_config(world["config"], [*world["overrides"], "run_name=student2", "distill.layers=[1, 2]",
                                        "train.max_steps=1"])
    again, distiller = distill(cfg, progress_bar=False)
    assert distiller.cache_hit is True and cached.stat().st_mtime_ns == stamp  # same teacher, same rows: not rescored
    assert again.model_version == "2"
    with pytest.raises(ConfigError, match="did its alias move"):
        distiller.check_resume({"teacher_sha256": "0" * 64})
    distiller.check_resume({"teacher_sha256": distiller.teacher_sha})


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_resume_continues_from_the_checkpoint_and_refuses_a_moved_teacher(world, capsys):
    from training.tracking.versions import set_alias

    uri, root = world["uri"], world["root"]
    overrides = [*world["overrides"], "run_name=resumed", "distill.layers=2", "train.max_steps=3",
                 "train.checkpoint_every_steps=2"]
    distill(load_config(world["config"], overrides), progress_bar=False)
    run_dir = root / "runs" / "resumed"
    # As if killed after the step-2 checkpoint: the finished run's history goes, the checkpoint stays.
    (run_dir / "history.json").unlink()
    other = make_teacher_version(world)
    set_alias("tweetguard", "champion", other, uri)  # the teacher's alias moved since the run started
    with pytest.raises(ConfigError, match="did its alias move"):
        distill(load_config(world["config"], overrides), resume=True, progress_bar=False)
    set_alias("tweetguard", "champion", "1", uri)
    capsys.readouterr()
    result, _ = distill(load_config(world["config"], overrides), resume=True, progress_bar=False)
    assert f"resumed {run_dir} at step 2" in capsys.readouterr().err
    assert result.steps == 3 and (run_dir / "history.json").is_file()
    assert MlflowClient(uri).get_model_version("tweetguard-fast", result.model_version).run_id == result.run_id


def make_teacher_version(world) -> str:
    """Another tweetguard version (other weights: another seed), never promoted."""
    cfg = load_config(world["config"], [*world["overrides"], "run_name=teacher2", "train.seed=7", "train.max_steps=1"])
    return train(cfg, progress_bar=False).model_version


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_frontier_benchmark_reports_teacher_student_and_int8(world, quantized, tmp_path):
    """`benchmarks.frontier` end to end on the tiny pair and the student's int8 model: quality paired on one split,
    speed, served."""
    from benchmarks.frontier import main

    report = main(["--teacher", "models:/tweetguard@champion", "--student", "models:/tweetguard-fast/1",
                   "--int8", f"models:/tweetguard-fast/{quantized.model_version}",
                   "--config", str(world["config"]), "--tracking-uri", world["uri"], "--split", "validation",
                   "--n", "64", "--rounds", "1", "--threads", "1", "--clients", "2", "--out", str(tmp_path),
                   "evaluation.bootstrap_samples=100"])
    assert report["models"]["teacher"]["layers"] == TEACHER_LAYERS and report["models"]["student"]["layers"] == 2
    assert set(report["inprocess"]) == {"pipeline (stock, teacher)", "teacher", "student", "student int8"}
    assert all(x["texts_per_s"] > 0 for x in report["inprocess"].values())
    q = report["quality"]
    assert q["split"] == "validation" and q["bootstrap_samples"] == 100
    assert {r["metric"] for r in q["int8_rows"]} >= {f"{p}/pr_auc" for p in POLICIES}
    assert {r["metric"] for r in q["int8_vs_teacher"] if r["scope"] == "all"} >= {f"{p}/pr_auc" for p in POLICIES}
    assert set(report["served"]) == {"teacher", "student", "student int8"}
    assert all(r["failures"] == 0 for s in report["served"].values() for r in s.values())
    assert "int8 − teacher" in (tmp_path / "frontier.md").read_text()
    assert "student − teacher" in (tmp_path / "frontier.md").read_text()


@pytest.fixture(scope="module")
def quantized(world):
    """The student (tweetguard-fast v1) quantized to static int8: a new tweetguard-fast version."""
    from training.pipeline.quantize import quantize

    cfg = load_config(world["config"], [*world["overrides"], "run_name=int8", "quantize.calibration_rows=64"])
    return quantize(cfg, f"models:/tweetguard-fast/{world['student'].model_version}", progress=False)


@pytest.mark.integration  # trains, registers and distills tiny models (slow)
def test_quantize_registers_a_calibrated_batch_independent_int8_model(world, quantized, mixed_texts,
                                                                      monkeypatch):
    from serving.artifact import ArtifactError
    from training.cli import main

    client, uri = MlflowClient(world["uri"]), world["uri"]
    tags = client.get_model_version("tweetguard-fast", quantized.model_version).tags
    assert tags["kind"] == "quantized" and tags["quantized_from.version"] == "tweetguard-fast/1"
    assert tags["teacher.name"] == "tweetguard" and tags["teacher.version"] == "1"  # the student's lineage kept
    model_dir = resolve_model_ref(f"models:/tweetguard-fast/{quantized.model_version}", tracking_uri=uri)
    card = read_card(model_dir)
    assert card.schema_version == 3 and card.model_name == "tweetguard-fast"
    assert card.quantization.source == "tweetguard-fast/1" and card.quantization.calibration_rows == 64
    assert (model_dir / card.quantization.graph).is_file()
    assert "MatMuls (those with a weight)" in card.quantization.note
    assert "## Quantization" in (model_dir / "README.md").read_text()
    assert all(p.calibration.method == "platt" and "static int8" in p.threshold_method for p in card.policies)
    assert "abusive/pr_auc" in card.validation_metrics and card.mlflow_run_id == quantized.run_id
    metrics = client.get_run(quantized.run_id).data.metrics
    assert metrics["batch_dependence_max_abs_dp"] <= 1e-5  # fixed activation scales: batch-mates change nothing
    assert "final_val_mean_pr_auc" in metrics and "source_vs_int8_uncalibrated_mean_abs_dp" in metrics

    predictor = Predictor.load(model_dir)
    assert predictor.path == "onnxruntime"
    probs = predictor.predict_proba(mixed_texts)
    together, alone = probs[:8], np.concatenate([predictor.predict_proba([t]) for t in mixed_texts[:8]])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    student = Predictor.load(resolve_model_ref("models:/tweetguard-fast/1", tracking_uri=uri))
    assert np.abs(student.logits(mixed_texts) - predictor.logits(mixed_texts)).max() > 0  # int8 is its own model
    with pytest.raises(ArtifactError, match=r"static-int8 model scores through its graph model.int8.onnx under "
                                            r"ONNX Runtime: path='reference' would score the fp32 weights"):
        Predictor.load(model_dir, path="reference")
    # MLflow's pyfunc of the version scores through the same Predictor.
    import mlflow.pyfunc
    import pandas as pd

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = mlflow.pyfunc.load_model(f"models:/tweetguard-fast/{quantized.model_version}")
    out = served.predict(pd.DataFrame({"text": mixed_texts}))
    np.testing.assert_allclose(out[[f"{p}_probability" for p in POLICIES]].to_numpy(), probs, atol=1e-6)
    # evaluate takes it like any model; quantizing it again and promoting it are refused.
    assert main(["evaluate", "--model", str(model_dir), "--config", str(world["config"]), "--tracking-uri", uri,
                 "--out", str(world["root"] / "int8-report"), "--no-mlflow", "evaluation.bootstrap_samples=50",
                 "evaluation.behaviour_suite=null"]) == 0
    with pytest.raises(ConfigError, match="already quantized"):
        from training.pipeline.quantize import quantize

        quantize(load_config(world["config"], world["overrides"]), str(model_dir), progress=False)
    with pytest.raises(ValueError, match="is a distilled fast-tier student"):
        promote(f"models:/tweetguard-fast/{quantized.model_version}",
                load_config(world["config"], world["overrides"]), validation=None, tracking_uri=uri)
