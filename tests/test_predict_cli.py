"""`tweetguard predict` and model-reference resolution: formats, bad rows, errors, MLflow references."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.artifact import ArtifactError
from serving.policies import POLICIES, output_columns
from serving.predictor import Predictor
from training.cli import main
from training.tracking.refs import resolve_model_ref

TEXTS = ["you are a stupid idiot", "go home, nobody wants you here", "what a great day", "i will hurt you"]
SCORE_COLUMNS = output_columns(POLICIES)


def _write_delimited(path: Path, rows: list[list[str]], delimiter: str) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def _read_delimited(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


@pytest.fixture(scope="module")
def expected(tiny_artifact: Path) -> list[dict]:
    return Predictor.load(tiny_artifact).predict(TEXTS)


def _run(*args: str) -> int:
    return main(["predict", *map(str, args)])


def _assert_scores(rows: list[dict], expected: list[dict]) -> None:
    for row, want in zip(rows, expected, strict=True):
        for p in POLICIES:
            assert float(row[f"{p}_probability"]) == pytest.approx(want["scores"][p], abs=1e-6)
            flag = row[f"{p}_flagged"]  # CSV: "true"/"false"; JSONL: a real bool
            assert flag == want["flags"][p] if isinstance(flag, bool) else flag == str(want["flags"][p]).lower()


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_delimited_input_keeps_columns_and_adds_scores(
    tiny_artifact, expected, tmp_path, suffix, delimiter, capsys
):
    rows = [["id", "tweet", "note"]] + [[str(i), t, "a,b\tc" if i == 1 else ""] for i, t in enumerate(TEXTS)]
    src = _write_delimited(tmp_path / f"in{suffix}", rows, delimiter)
    out = tmp_path / f"out{suffix}"
    assert _run("--model", tiny_artifact, "--input", src, "--output", out, "--text-column", "tweet",
                "--batch-size", "2") == 0
    got = _read_delimited(out, delimiter)
    assert list(got[0]) == ["id", "tweet", "note", *SCORE_COLUMNS]
    assert [(r["id"], r["tweet"], r["note"]) for r in got] == [tuple(r) for r in rows[1:]]
    _assert_scores(got, expected)
    assert f"wrote {len(TEXTS)} rows to {out}: {len(TEXTS)} scored, 0 skipped" in capsys.readouterr().err


def test_multiline_csv_bad_row_reports_its_starting_line(tiny_artifact, tmp_path, capsys):
    # A quoted text spanning two physical lines shifts every later line number.
    src = tmp_path / "in.csv"
    src.write_text('id,text\n1,"first line\nsecond line"\n2,ok\n3,\n4,"   "\n', encoding="utf-8")
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "out.csv") == 2
    err = capsys.readouterr().err
    assert "2 of 4 rows have no usable text in column 'text'" in err
    assert f"{src}:5: 'text' is empty" in err and f"{src}:6: 'text' is empty" in err
    assert "--skip-bad-rows" in err
    assert not (tmp_path / "out.csv").exists()  # nothing written on failure


def test_jsonl_bad_rows_strict_fails_naming_lines(tiny_artifact, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [{"text": TEXTS[0], "id": 1}, {"text": None, "id": 2}, {"text": 42, "id": 3}, {"id": 4},
             {"text": TEXTS[1], "id": 5, "meta": {"lang": "en"}}]
    hostile = ["[" * 5000 + "]" * 5000, '{"text": "a", "n": ' + "1" * 10_000 + "}"]  # past the parser's limits
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n[1, 2]\n{broken\n\n" + "\n".join(hostile) + "\n",
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _run("--model", tiny_artifact, "--input", src, "--output", out) == 2
    err = capsys.readouterr().err
    assert "7 of 9 rows" in err
    for line, reason in [(2, "'text' is null"), (3, "'text' is int 42, not a string"), (4, "no 'text' field"),
                         (6, "a JSON list, not an object"), (7, "not valid JSON"),
                         (9, "not usable JSON (nested too deeply)"), (10, "not usable JSON (Exceeds the limit")]:
        assert f"{src}:{line}: {reason}" in err
    assert not out.exists()


def test_jsonl_skip_bad_rows_writes_them_with_empty_scores(tiny_artifact, expected, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = [{"text": TEXTS[0], "id": 1}, {"text": None, "id": 2}, {"text": "", "id": 3},
             {"text": TEXTS[1], "id": 4, "meta": {"lang": "en"}}]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _run("--model", tiny_artifact, "--input", src, "--output", out, "--skip-bad-rows") == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert list(got[3]) == ["text", "id", "meta", *SCORE_COLUMNS]
    assert [r["id"] for r in got] == [1, 2, 3, 4] and got[3]["meta"] == {"lang": "en"}
    _assert_scores([got[0], got[3]], [expected[0], expected[1]])
    for bad in got[1:3]:
        assert all(bad[c] is None for c in SCORE_COLUMNS)
    err = capsys.readouterr().err
    assert "skipped 2 bad rows" in err and f"{src}:2: 'text' is null" in err
    assert "wrote 4 rows" in err and "2 scored, 2 skipped" in err


def test_csv_skip_mode_to_csv_leaves_score_cells_empty(tiny_artifact, tmp_path):
    src = _write_delimited(tmp_path / "in.csv", [["text"], [TEXTS[0]], [""], [TEXTS[2]]], ",")
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "o.csv", "--skip-bad-rows") == 0
    got = _read_delimited(tmp_path / "o.csv")
    assert [r["abusive_probability"] == "" for r in got] == [False, True, False]


def test_missing_text_column_names_column_and_file(tiny_artifact, tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.csv", [["id", "body"], ["1", "hi"]], ",")
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "o.csv") == 2
    err = capsys.readouterr().err
    assert err.startswith("tweetguard predict: error: ")
    assert f"{src}: no text column 'text'; columns are ['id', 'body']" in err


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda d: d / "missing.csv", "input file not found"),
        (lambda d: (d / "in.xlsx").write_text("x") and d / "in.xlsx", "unsupported file type '.xlsx'"),
        (lambda d: (d / "in.csv").write_text("") or d / "in.csv", "empty file"),
    ],
)
def test_unusable_input_exits_2(tiny_artifact, tmp_path, capsys, setup, match):
    assert _run("--model", tiny_artifact, "--input", setup(tmp_path), "--output", tmp_path / "o.csv") == 2
    assert match in capsys.readouterr().err


def test_output_over_input_or_bad_batch_size_is_refused(tiny_artifact, tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.csv", [["text"], ["hi"]], ",")
    assert _run("--model", tiny_artifact, "--input", src, "--output", src) == 2
    assert "is the input file" in capsys.readouterr().err
    assert src.read_text().splitlines() == ["text", "hi"]
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "o.csv", "--batch-size", "0") == 2
    assert "batch_size must be >= 1, got 0" in capsys.readouterr().err


def test_input_that_already_has_score_columns_is_refused(tiny_artifact, tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.csv", [["text", "abusive_probability"], ["hi", "0.1"]], ",")
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "o.csv") == 2
    assert "already has output columns ['abusive_probability']" in capsys.readouterr().err


def test_bad_model_ref_exits_2(tmp_path, capsys):
    src = _write_delimited(tmp_path / "in.csv", [["text"], ["hi"]], ",")
    assert _run("--model", tmp_path / "nope", "--input", src, "--output", tmp_path / "o.csv") == 2
    assert f"model '{tmp_path / 'nope'}': no such directory" in capsys.readouterr().err
    assert _run("--model", tmp_path, "--input", src, "--output", tmp_path / "o.csv") == 2
    assert "not a tweetguard model artifact (no policy_card.json)" in capsys.readouterr().err


def test_entrypoint_exit_code_and_fast_input_errors(tiny_artifact, tmp_path):
    # The real process exit code; and input errors are reported before torch is imported (so in a second).
    src = _write_delimited(tmp_path / "in.csv", [["text"], [TEXTS[0]], [""]], ",")
    code = (
        "import sys; from training.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch imported before the input check'; sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", code, "predict", "--model", str(tiny_artifact), "--input", str(src),
           "--output", str(tmp_path / "o.csv")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"tweetguard predict: error: {src}: 1 of 2 rows" in proc.stderr
    assert f"{src}:3: 'text' is empty" in proc.stderr


# ---- model references ----------------------------------------------------------------------------------------
def test_resolve_local_dir_and_bad_forms(tiny_artifact, tmp_path):
    assert resolve_model_ref(tiny_artifact) == tiny_artifact
    assert resolve_model_ref(str(tiny_artifact)) == tiny_artifact
    with pytest.raises(ValueError, match=r"models:/<name>@<alias> or models:/<name>/<version>"):
        resolve_model_ref("models:/tweetguard")
    with pytest.raises(ArtifactError, match="is a file"):
        resolve_model_ref(tiny_artifact / "config.json")


def test_resolve_mlflow_run_and_registry_refs(
    tiny_artifact, tmp_path, monkeypatch, mlflow_uri, _mlflow_template_db
):
    from mlflow import MlflowClient

    uri = mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run("0")  # the Default experiment: its artifact root is in tmp_path (conftest)
    assert run.info.artifact_uri.startswith(str(tmp_path))
    client.log_artifacts(run.info.run_id, str(tiny_artifact), "model")  # how training logs it
    client.create_registered_model("tweetguard")
    # MLflow 3's register_model() wants a LoggedModel for runs:/ URIs; a plain artifact dir is registered so.
    version = client.create_model_version("tweetguard", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("tweetguard", "champion", version.version)

    # The explicit URI must win over the global one (MLflow's models:/ download asks the global registry).
    elsewhere = tmp_path / "elsewhere.db"
    shutil.copyfile(_mlflow_template_db, elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")

    want = json.loads((tiny_artifact / "policy_card.json").read_text())
    run_id = run.info.run_id
    refs = [f"runs:/{run_id}/model", "models:/tweetguard@champion", f"models:/tweetguard/{version.version}"]
    for n, ref in enumerate(refs):
        local = resolve_model_ref(ref, tracking_uri=uri, dst_path=tmp_path / f"download{n}")
        assert json.loads((local / "policy_card.json").read_text()) == want
        assert tmp_path in local.parents  # downloaded here, not from some other store
        np.testing.assert_allclose(Predictor.load(local).logits(TEXTS[:2]),
                                   Predictor.load(tiny_artifact).logits(TEXTS[:2]), atol=1e-6)

    with pytest.raises(ArtifactError, match="runs:/<run_id>/model"):
        resolve_model_ref(f"runs:/{run.info.run_id}/", tracking_uri=uri, dst_path=tmp_path / "x")
    with pytest.raises(ArtifactError, match=r"'models:/tweetguard@nope'.*alias nope not found"):
        resolve_model_ref("models:/tweetguard@nope", tracking_uri=uri)
    with pytest.raises(ValueError, match="models:/<name>@<alias> or models:/<name>/<version>"):
        resolve_model_ref("models:/tweetguard/Production", tracking_uri=uri)  # stages are gone in MLflow 3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # no explicit URI: the environment's store
    assert (resolve_model_ref("models:/tweetguard@champion", dst_path=tmp_path / "env") / "config.json").is_file()


# -- reasons: predict --explain and tweetguard explain -----------------------------------------------------------
def test_predict_explain_adds_the_reasons_of_each_policy(tiny_artifact, expected, tmp_path):
    from serving.reasons import explain

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "out.jsonl", "--explain",
                "--top-k", "2") == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    _assert_scores(rows, expected)
    want = explain(Predictor.load(tiny_artifact), TEXTS, top_k=2)
    for row, w in zip(rows, want):
        for p in POLICIES:
            assert [r["word"] for r in row[f"{p}_reasons"]] == [r["word"] for r in w.policies[p]]
            assert all(row["text"][r["start"]:r["end"]] == r["word"] for r in row[f"{p}_reasons"])
    assert _run("--model", tiny_artifact, "--input", src, "--output", tmp_path / "plain.csv") == 0
    assert not any(c.endswith("_reasons") for c in _read_delimited(tmp_path / "plain.csv")[0])


def test_explain_command_marks_the_words_and_prints_json(tiny_artifact, tmp_path, capsys):
    assert main(["explain", "--model", str(tiny_artifact), "--text", TEXTS[0], "--text", TEXTS[3], "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("text: ") == 2 and "\033[" not in out  # not a terminal: plain markers
    assert all(f"  {p}" in out for p in POLICIES) and ("[stupid " in out or "[idiot " in out)
    src = _write_delimited(tmp_path / "in.tsv", [["text"], *[[t] for t in TEXTS]], "\t")
    assert main(["explain", "--model", str(tiny_artifact), "--input", str(src), "--json",
                 "--method", "integrated_gradients"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == TEXTS and all(x["method"] == "integrated_gradients" for x in lines)
    bad = _write_delimited(tmp_path / "bad.csv", [["text"], ["ok"], [""]], ",")
    assert main(["explain", "--model", str(tiny_artifact), "--input", str(bad)]) == 2
    assert "bad.csv:3: 'text' is empty" in capsys.readouterr().err
    assert main(["explain", "--model", str(tiny_artifact), "--text", "a", "--top-k", "0"]) == 2
