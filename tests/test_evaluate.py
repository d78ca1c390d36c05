"""training.evaluation.evaluate and its parts (benchmarks, bias slices, prevalence, errors) on small in-test data.

The numbers are checked against scikit-learn or by hand; the end-to-end test scores a tiny random model through
the real Predictor and the TF-IDF baseline through its scorer, into a tmp sqlite MLflow store.
"""

from __future__ import annotations

import json
import random

import datasets
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import f1_score, roc_auc_score

from serving.policies import POLICIES
from training.config import load_config, repo_root
from training.data.identity import load_term_lists, slice_masks
from training.evaluation.bias import TOO_SMALL, bias_slices, worst_slices
from training.evaluation.evaluate import (
    REPORT_JSON,
    REPORT_MD,
    evaluate,
    flat_metrics,
    precision_at_prevalence,
    top_errors,
)
from training.metrics import masked_metrics
from training.evaluation.published import (
    BENCHMARKS,
    EDOS_THREAT,
    NOT_IN_DATA,
    NOT_PUBLISHED,
    parse_raw_label,
    published_results,
    rate_ci,
    run_benchmarks,
)
from training.evaluation.render import benchmark_table, comparison_table
from training.scorer import Scored

A, H, V = (POLICIES.index(p) for p in POLICIES)
REPO = repo_root()
FAST = ["evaluation.bootstrap_samples=60", "evaluation.min_slice_support=3", "evaluation.top_errors=3"]


def synthetic_split(n: int = 200, seed: int = 0) -> datasets.Dataset:
    """Rows shaped like the unified test split: the benchmark sources with their raw labels, plus gab."""
    rng = random.Random(seed)
    neutral = "you are a the and i to it is not so love great day good go home".split()
    rows: dict[str, list] = {k: [] for k in ("id", "text", "source", "labels", "subset", "raw_label")}
    for i in range(n):
        off, viol = rng.random() < 0.4, rng.random() < 0.2
        ind = off and rng.random() < 0.5
        words = rng.choices(neutral, k=rng.randint(3, 8)) + (["idiot"] if off else []) + (["kill"] if viol else [])
        words += [rng.choice(["women", "muslims", "gay", ""])]
        text = ("@user " if ind else "") + " ".join(w for w in words if w)
        kind = i % 5
        if kind == 0:
            c = ("IND" if ind else "GRP") if off else ""
            row = ("olid", "test_a", f"subtask_a={'OFF' if off else 'NOT'};subtask_b=;subtask_c={c}",
                   [int(off), int(ind), -1])
        elif kind == 1:
            row = ("solid_test_2020", "test_a", f"subtask_a={'OFF' if off else 'NOT'};subtask_c=",
                   [int(off), -1 if off else 0, -1])
        elif kind == 2:
            row = ("solid_test_2020", "test_c", f"subtask_a=;subtask_c={'IND' if ind else 'OTH'}", [-1, int(ind), -1])
        elif kind == 3:  # TweetEval not-hate is unknown for abusive in our labels, but counts for the benchmark
            row = ("tweeteval_hate", "test", f"label={int(off)}", [1 if off else -1, -1, -1])
        else:
            row = ("gab_hate_corpus", "test", "cv=0", [int(off), -1, int(viol)])
        source, subset, raw, labels = row
        for key, value in zip(rows, (f"{source}:{i}", text, source, labels, subset, raw)):
            rows[key].append(value)
    return datasets.Dataset.from_dict(rows)


def scored_from(split: datasets.Dataset, probs: np.ndarray) -> Scored:
    logits = np.log(probs / (1 - probs))
    return Scored(logits, probs, np.asarray(split["labels"]), list(split["text"]), np.asarray(split["source"]),
                  np.asarray(split["subset"]), list(split["raw_label"]), list(split["id"]))


# -- benchmarks ---------------------------------------------------------------------------------------------
def test_published_bests_come_from_data_published_yaml():
    table = published_results()
    assert table["OffensEval-2019 A"][0] == [0.829]
    assert table["OffensEval-2019 B / C"][0] == [0.755, 0.66]
    assert table["TweetEval hate"][0] == [0.523]  # TweetEval's 52.3 (percent), stored on the 0-1 scale


def test_benchmarks_are_macro_f1_on_raw_labels():
    split = synthetic_split(300)
    probs = np.random.default_rng(1).uniform(0.01, 0.99, size=(len(split), 3))
    rows = {r["benchmark"]: r for r in run_benchmarks(scored_from(split, probs), {p: 0.5 for p in POLICIES},
                                                      n_boot=50)}
    assert "OffensEval-2020 A (SOLID test, easy part)" not in rows  # no easy-ids file under the data root
    by_name = {b.name: b for b in BENCHMARKS}
    for name in ("OffensEval-2019 A (OLID test)", "TweetEval hate", "OLID C-like: IND vs GRP/OTH (binary)"):
        bench, row = by_name[name], rows[name]
        gold, pred = [], []
        for i, (src, raw) in enumerate(zip(split["source"], split["raw_label"])):
            value = parse_raw_label(raw).get(bench.field, "")
            if src == bench.source and value in bench.positive | bench.negative:
                gold.append(value in bench.positive)
                pred.append(probs[i, POLICIES.index(bench.policy)] >= 0.5)
        assert row["n"] == len(gold) > 10
        assert row["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
        assert row["ci_low"] <= row["macro_f1"] <= row["ci_high"]
    # TweetEval's not-hate rows are unknown in our labels but are part of the benchmark.
    assert rows["TweetEval hate"]["n"] == sum(s == "tweeteval_hate" for s in split["source"])
    assert rows["OffensEval-2019 A (OLID test)"]["published_best"] == 0.829


GOAL_ROWS = [  # (source, subset, text, labels, raw_label, (abusive, harassment, violence) probs)
    *[("dialoconan", "test", f"cn turn {i}", [0, 0, 0], "type=CN", pr) for i, pr in
      enumerate([(.1, .1, .1), (.1, .6, .1), (.1, .1, .1), (.7, .1, .1)])],  # harassment alone counts (any policy)
    *[("dialoconan", "test", f"hs turn {i}", [1, -1, -1], "type=HS", pr) for i, pr in
      enumerate([(.9, .1, .1), (.6, .1, .1), (.2, .9, .9)])],  # the third is flagged, but not abusive
    ("conan", "validation", "cn", [0, 0, 0], "type=CN", (.1, .1, .8)),  # a counter-narrative flagged violent
    ("conan", "validation", "cn 2", [0, 0, 0], "type=CN", (.1, .1, .1)),
    ("conan", "validation", "hs", [1, -1, -1], "type=HS", (.4, .1, .1)),  # a hate statement missed
    ("hatexplain", "test", "you are a bitch lol", [0, -1, -1], "label=normal", (.8, .1, .1)),  # slice, flagged
    ("hatexplain", "test", "wtf is this, damn!", [0, -1, -1], "label=normal", (.2, .9, .1)),  # slice, not abusive
    ("hatexplain", "test", "my class is nice", [0, -1, -1], "label=normal", (.9, .1, .1)),  # "ass" is no word here
    ("hatexplain", "test", "fuck you bitch", [1, -1, -1], "label=hatespeech", (.9, .1, .1)),  # not normal
    *[("edos", "test", "e", [-1, -1, -1], f"label_category={c};label_sexist=x;label_vector=x", (.1, .1, v))
      for c, v in [(EDOS_THREAT, .9), (EDOS_THREAT, .2), ("2. derogation", .8), ("none", .9), ("none", .1),
                   ("3. animosity", .1)]],
    ("edos", "dev", "e", [-1, -1, 1], f"label_category={EDOS_THREAT};label_sexist=x;label_vector=x", (.1, .1, .1)),
]
DIALOCONAN_CN = "DIALOCONAN counter-narrative turns flagged on any policy"
DIALOCONAN_HS = "DIALOCONAN hate-speech turns flagged abusive"
HATEXPLAIN_SLICE = "HateXplain normal posts with a slur or swear word flagged abusive"
EDOS_ALL = "EDOS threats vs every other post: violence "


def goal_split() -> tuple[datasets.Dataset, np.ndarray]:
    rows = GOAL_ROWS
    split = datasets.Dataset.from_dict({
        "id": [f"{r[0]}:{i}" for i, r in enumerate(rows)], "text": [r[2] for r in rows],
        "source": [r[0] for r in rows], "labels": [r[3] for r in rows], "subset": [r[1] for r in rows],
        "raw_label": [r[4] for r in rows]})
    return split, np.array([r[5] for r in rows])


def test_goal_measures_by_hand():
    """Issue 34's goal measures: DIALOCONAN turns (gold from the unified labels; CN flagged on any policy), the
    HateXplain slur-or-swear slice of normal posts, EDOS threats vs every other post (not-sexist included)."""
    split, probs = goal_split()
    out = {b["benchmark"]: b for b in run_benchmarks(scored_from(split, probs), {p: 0.5 for p in POLICIES},
                                                     n_boot=200)}
    cn, hs, hx = out[DIALOCONAN_CN], out[DIALOCONAN_HS], out[HATEXPLAIN_SLICE]
    assert (cn["metric"], cn["value"], cn["n"], cn["policy"], cn["goal"]) == ("false_positive_rate", 0.5, 4, "any",
                                                                             "<= 0.05")
    assert (hs["metric"], hs["value"], hs["n"], hs["n_positive"], hs["goal"]) == ("recall", pytest.approx(2 / 3), 3,
                                                                                 3, ">= 0.80")
    assert (hx["metric"], hx["value"], hx["n"]) == ("false_positive_rate", 0.5, 2)  # n: the slice size
    # the CIs are the other rates' (same resampling, same seed)
    assert (cn["value"], cn["ci_low"], cn["ci_high"]) == rate_ci([False, True, False, True], n=200, seed=0)
    assert (hs["value"], hs["ci_low"], hs["ci_high"]) == pytest.approx(rate_ci([True, True, False], n=200, seed=0))
    # EDOS, every test post (dev left out): tp 1, fn 1, fp 2 (a derogation and a not-sexist post), tn 2
    f1, precision, recall = (out[EDOS_ALL + m] for m in ("F1", "precision", "recall"))
    assert (f1["n"], f1["n_positive"], f1["policy"]) == (6, 2, "violence")
    assert f1["value"] == pytest.approx(f1_score([1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0]))
    assert (precision["value"], recall["value"]) == (pytest.approx(1 / 3), 0.5)
    conan_cn, conan_hs = out["CONAN counter-narratives flagged on any policy"], out["CONAN hate statements flagged abusive"]
    assert (conan_cn["value"], conan_cn["n"], conan_hs["value"], conan_hs["n"]) == (0.5, 2, 0.0, 1)
    for b in (cn, hs, hx, f1, precision, recall):
        assert isinstance(b["ci_low"], float) and b["ci_low"] <= b["value"] <= b["ci_high"] <= 1
        assert b["published_best"] is None and b["published_status"] == NOT_PUBLISHED
    # logged to MLflow like the other benchmarks, with the slice size
    flat = flat_metrics({"overall": {}, "per_source": {}, "ece": {}, "at_prevalence": {}, "benchmarks": list(
        out.values())}, "test")
    assert flat["benchmark/hatexplain_normal_posts_with_a_slur_or_swear_word_flagged_abusive/false_positive_rate"] \
        == 0.5
    assert flat["benchmark/hatexplain_normal_posts_with_a_slur_or_swear_word_flagged_abusive/n"] == 2
    assert flat["benchmark/edos_threats_vs_every_other_post_violence_precision/precision"] == pytest.approx(1 / 3)
    table = benchmark_table(list(out.values()))
    assert "goal <= 0.05" in table and "| 0.500 [" in table


def test_goal_measures_not_in_the_data_are_said_so():
    rows = run_benchmarks(scored_from(synthetic_split(50), np.full((50, 3), 0.3)), {p: 0.5 for p in POLICIES},
                          n_boot=20)
    absent = {r["benchmark"]: r for r in rows if r["published_status"] == NOT_IN_DATA}
    assert set(absent) == {DIALOCONAN_CN, DIALOCONAN_HS, HATEXPLAIN_SLICE, *(EDOS_ALL + m for m in
                                                                            ("F1", "precision", "recall")),
                           "CONAN counter-narratives flagged on any policy", "CONAN hate statements flagged abusive"}
    assert all(r["value"] is None and r["n"] == 0 for r in absent.values())
    assert "n/a" in benchmark_table(rows) and NOT_IN_DATA in benchmark_table(rows)
    flat = flat_metrics({"overall": {}, "per_source": {}, "ece": {}, "at_prevalence": {}, "benchmarks": rows}, "t")
    assert not any("dialoconan" in k for k in flat)


def test_goal_measures_compare_paired(tmp_path):
    from types import SimpleNamespace

    from training.evaluation.compare import compare, render_comparison

    split, probs = goal_split()

    def result(p):
        scored = scored_from(split, p)
        report = {"thresholds": {q: 0.5 for q in POLICIES}, "model": {"split": "test"}, "behaviour": None}
        report["benchmarks"] = run_benchmarks(scored, report["thresholds"], n_boot=100)
        return SimpleNamespace(scored=scored, report=report, train_sources=(), identity=SimpleNamespace(label="m"))

    a, b = result(probs), result(np.where(probs > 0.5, 0.4, probs))  # b flags nothing
    same = compare(a, a, n=100, seed=0)
    goal_rows = [r for r in same["rows"] if r["scope"].startswith(("benchmark DIALOCONAN", "benchmark HateXplain",
                                                                  "benchmark EDOS threats vs every"))]
    assert len(goal_rows) == 6 and same["not_in_data"] == []
    assert all(r["diff"] == 0 and r["ci_low"] == r["ci_high"] == 0 and not r["significant"] for r in goal_rows)
    rows = {r["scope"]: r for r in compare(a, b, n=100, seed=0)["rows"]}
    cn = rows[f"benchmark {DIALOCONAN_CN}"]
    assert (cn["a"], cn["b"], cn["diff"], cn["n"]) == (0.5, 0.0, -0.5, 4) and cn["ci_low"] <= -0.5 <= cn["ci_high"]
    assert rows[f"benchmark {EDOS_ALL}recall"]["b"] == 0.0
    assert "Not in this data" not in render_comparison(same)
    toy = SimpleNamespace(**{**vars(a), "scored": scored_from(synthetic_split(50), np.full((50, 3), 0.3)),
                             "report": {**a.report, "benchmarks": []}})
    absent = compare(toy, toy, n=50, seed=0)
    assert f"benchmark {DIALOCONAN_CN}" in absent["not_in_data"]
    assert "Not in this data: benchmark DIALOCONAN" in render_comparison(absent)


def test_easy_part_uses_the_ids_file(tmp_path):
    split = synthetic_split(100)
    solid = [i for i, s, sub in zip(split["id"], split["source"], split["subset"])
             if s == "solid_test_2020" and sub == "test_a"]
    # Unified ids look like "solid_test_2020:test_a/B0"; the easy file lists the native "B0".
    split = split.map(lambda r: {"id": r["id"].replace(":", ":test_a/B") if r["id"] in solid else r["id"]})
    solid_ids = [f"B{i.split(':')[1]}" for i in solid][:7]
    (tmp_path / "solid_test_2020").mkdir()
    (tmp_path / "solid_test_2020" / "test_a_labels_easy.csv").write_text("".join(f"{i},NOT\n" for i in solid_ids))
    rows = run_benchmarks(scored_from(split, np.full((100, 3), 0.3)), {p: 0.5 for p in POLICIES},
                          data_root=tmp_path, n_boot=20)
    easy = next(r for r in rows if r["benchmark"] == "OffensEval-2020 A (SOLID test, easy part)")
    assert easy["n"] == 7


def test_new_data_benchmarks_by_hand():
    """AbuseEval (macro-F1 and recall), EDOS threats (macro-F1 on sexist posts only) and swearing that attacks
    nobody (false-positive rate), on a split whose answers are worked out by hand."""
    A_ = "abuse={};subtask_a=OFF;subtask_b=;subtask_c="
    rows = [  # (source, subset, raw_label, abusive prob, violence prob)
        *[("olid", "test_a", A_.format(v), p, 0.1) for v, p in
          [("EXP", .9), ("IMP", .8), ("EXP", .7), ("IMP", .2)] + [("NOTABU", .9)] + [("NOTABU", .1)] * 5],
        ("olid", "train", A_.format("EXP"), 0.1, 0.1),  # a validation row carved from OLID train: not the test set
        *[("edos", "test", f"label_category={c};label_sexist=sexist;label_vector=x", 0.1, p) for c, p in
          [(EDOS_THREAT, .9), (EDOS_THREAT, .2), ("2. derogation", .8), ("3. animosity", .1),
           ("4. prejudiced discussions", .1), ("2. derogation", .1)]],
        *[("edos", "test", "label_category=none;label_sexist=not sexist;label_vector=none", 0.1, 0.9)] * 3,
        ("edos", "dev", f"label_category={EDOS_THREAT};label_sexist=sexist;label_vector=x", 0.1, 0.1),
        *[("vulgar_functions", "test", "aggression=0", p, 0.1) for p in (.9, .1, .1, .1, .1)],
        *[("vulgar_functions", "test", "aggression=1", .9, 0.1)] * 2,  # aggressive swearing: not in the rate
        ("vulgar_functions", "train", "aggression=0", .9, 0.1),  # not held out
    ]
    n = len(rows)
    split = datasets.Dataset.from_dict({
        "id": [f"{r[0]}:{i}" for i, r in enumerate(rows)], "text": ["t"] * n, "source": [r[0] for r in rows],
        "labels": [[-1, -1, -1]] * n, "subset": [r[1] for r in rows], "raw_label": [r[2] for r in rows]})
    probs = np.array([[r[3], 0.1, r[4]] for r in rows])
    out = {b["benchmark"]: b for b in run_benchmarks(scored_from(split, probs), {p: 0.5 for p in POLICIES},
                                                     n_boot=200)}
    abuse = out["AbuseEval (OLID test)"]  # tp 3, fn 1, fp 1, tn 5
    assert abuse["n"] == 10 and abuse["n_positive"] == 4 and abuse["metric"] == "macro_f1"
    assert abuse["macro_f1"] == abuse["value"] == pytest.approx((6 / 8 + 10 / 12) / 2)
    assert abuse["published_best"] == 0.765
    recall = out["AbuseEval abusive recall (EXP + IMP)"]
    assert (recall["metric"], recall["value"], recall["n"]) == ("recall", 0.75, 4) and "macro_f1" not in recall
    edos = out["EDOS threats vs other sexist posts"]  # not-sexist and dev rows left out: tp 1, fn 1, fp 1, tn 3
    assert edos["n"] == 6 and edos["n_positive"] == 2 and edos["policy"] == "violence"
    assert edos["value"] == pytest.approx(f1_score([1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], average="macro"))
    assert edos["published_best"] is None and edos["published_status"] == NOT_PUBLISHED
    swear = out["Swearing that attacks nobody (vulgar_functions held-out test)"]
    assert (swear["metric"], swear["value"], swear["n"]) == ("false_positive_rate", pytest.approx(0.2), 5)
    for b in (abuse, recall, edos, swear):
        assert b["ci_low"] <= b["value"] <= b["ci_high"]
    # the validation variants take only the rows carved from the sources' training data
    val_recall = out["AbuseEval abusive recall (OLID validation rows)"]
    val_swear = out["Swearing that attacks nobody (vulgar_functions validation rows)"]
    assert (val_recall["value"], val_recall["n"], val_swear["value"], val_swear["n"]) == (0.0, 1, 1.0, 1)
    assert "AbuseEval (OLID validation rows)" in out and val_swear["published_best"] is None
    # reported under the metric's own name: the report table, the CLI table and the MLflow metric keys
    text = benchmark_table(list(out.values()))
    swearing = "| Swearing that attacks nobody (vulgar_functions held-out test) | false-positive rate | 0.200 ["
    assert swearing in text
    keys = flat_metrics({"overall": {}, "per_source": {}, "ece": {}, "at_prevalence": {},
                         "benchmarks": list(out.values())}, "test")
    assert keys["benchmark/swearing_that_attacks_nobody_vulgar_functions_held_out_test/false_positive_rate"] == 0.2
    assert keys["benchmark/abuseeval_olid_test/macro_f1"] == pytest.approx(abuse["value"])
    # a report written before rows carried `metric` still compares
    old = {"overall": {}, "ece": {p: {"calibrated": float("nan")} for p in POLICIES},
           "benchmarks": [{"benchmark": "AbuseEval (OLID test)", "macro_f1": 0.6}]}
    assert "| AbuseEval (OLID test) macro-F1 | 0.600 |" in comparison_table(old, {**old, "benchmarks": [abuse]})


# -- bias ---------------------------------------------------------------------------------------------------
def test_shipped_identity_terms_cover_the_required_categories():
    terms = load_term_lists(REPO / "data" / "identity_terms.yaml")
    assert {"gender", "race_ethnicity", "religion", "sexual_orientation", "disability",
            "nationality_immigration"} <= terms.keys()


def test_slices_match_whole_words_after_normalization():
    terms = {"religion": {"muslim": ["muslim", "muslims"]}, "lgbt": {"lgbtq": ["lgbtq+"]}}
    masks = slice_masks(["MUSLIMS are here", "muslimsss", "@bob muslim", "love to lgbtq+ folks", "lgbtq"], terms)
    assert masks["religion/muslim"].tolist() == [True, False, True, False, False]
    assert masks["lgbt/lgbtq"].tolist() == [False, False, False, True, False]


def test_bias_metrics_by_hand():
    rng = np.random.default_rng(0)
    n = 400
    in_slice = np.arange(n) < 100
    y = rng.random(n) < 0.4
    p = np.where(y, 0.7, 0.3) + rng.normal(0, 0.15, n)
    p[in_slice & ~y] += 0.35  # benign mentions of the identity score like abuse: BPSN must drop
    labels = np.full((n, 3), -1)
    labels[:, A] = y
    probs = np.clip(np.stack([p, p, p], 1), 0, 1)
    tiny = np.zeros(n, bool)
    tiny[:3] = True
    rows = bias_slices(labels, probs, {"g/s": in_slice, "g/tiny": tiny}, min_support=5)
    s = next(r for r in rows if r["policy"] == "abusive" and r["slice"] == "g/s")
    assert s["n_pos"] == int((in_slice & y).sum()) and s["n_neg"] == int((in_slice & ~y).sum())
    assert s["subgroup_auc"] == pytest.approx(roc_auc_score(y[in_slice], probs[in_slice, A]))
    bpsn = (in_slice & ~y) | (~in_slice & y)
    assert s["bpsn_auc"] == pytest.approx(roc_auc_score(y[bpsn], probs[bpsn, A]))
    assert s["bpsn_auc"] < 0.75 < s["bnsp_auc"]
    assert next(r for r in rows if r["slice"] == "g/tiny" and r["policy"] == "abusive")["status"] == TOO_SMALL
    assert all(r["status"] == TOO_SMALL for r in rows if r["policy"] != "abusive")  # no known labels there
    worst = worst_slices(rows)
    assert [w["slice"] for w in worst] == ["g/s"] and worst[0]["worst_auc"] == s["bpsn_auc"]


# -- prevalence, errors ---------------------------------------------------------------------------------------
def test_precision_at_prevalence_by_hand():
    labels = np.array([[1, -1, -1]] * 10 + [[0, -1, -1]] * 10)
    probs = np.zeros((20, 3))
    probs[:8, A] = 0.9  # 8 of 10 positives flagged: TPR 0.8
    probs[10:12, A] = 0.9  # 2 of 10 negatives flagged: FPR 0.2
    out = precision_at_prevalence(labels, probs, {p: 0.5 for p in POLICIES}, 0.03)
    assert list(out) == ["abusive"]
    assert out["abusive"]["precision_on_split"] == pytest.approx(0.8)
    assert out["abusive"]["precision"] == pytest.approx(0.03 * 0.8 / (0.03 * 0.8 + 0.97 * 0.2))


@pytest.mark.parametrize("threshold", [0.5, 0.95])  # 0.95: nothing flagged
def test_precision_at_prevalence_agrees_with_masked_metrics(threshold):
    labels = np.array([[1, -1, -1]] * 10 + [[0, -1, -1]] * 10)
    probs = np.zeros((20, 3))
    probs[:8, A], probs[10:12, A] = 0.9, 0.9
    thresholds = {p: threshold for p in POLICIES}
    report = precision_at_prevalence(labels, probs, thresholds, 0.03)["abusive"]["precision"]
    metrics = masked_metrics(labels, probs, thresholds, prevalence=0.03)["abusive/precision_at_prevalence"]
    assert report == pytest.approx(metrics) and (threshold < 0.9 or report == 0.0)


def test_top_errors_are_the_most_confident_mistakes():
    split = synthetic_split(50)
    probs = np.random.default_rng(3).uniform(0.01, 0.99, size=(50, 3))
    errors = top_errors(scored_from(split, probs), k=3)["abusive"]
    labels = np.asarray(split["labels"])[:, A]
    assert [e["score"] for e in errors["false_positives"]] == sorted(probs[labels == 0, A], reverse=True)[:3]
    assert [e["score"] for e in errors["false_negatives"]] == sorted(probs[labels == 1, A])[:3]
    assert {"text", "source", "id", "score"} <= errors["false_positives"][0].keys()


# -- end to end ---------------------------------------------------------------------------------------------
def test_evaluate_registered_transformer_logs_linked_run(tmp_path, tiny_artifact, mlflow_uri, register_dir,
                                                           dir_digest):
    version = register_dir(tiny_artifact, mlflow_uri)
    registered = MlflowClient(mlflow_uri).get_model_version("tweetguard", version)
    before = dir_digest(tiny_artifact)
    cfg = load_config(None, FAST)
    result = evaluate("models:/tweetguard/1", cfg, out_dir=tmp_path / "rep", tracking_uri=mlflow_uri,
                      data=synthetic_split())
    assert dir_digest(tiny_artifact) == before
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {REPORT_JSON, REPORT_MD, "pr_roc.png", "reliability.png", "confusion.png",
            "slices_abusive.png"} <= files
    report = json.loads((tmp_path / "rep" / REPORT_JSON).read_text())
    assert report["model"]["model_version"] == "1" and report["model"]["kind"] == "transformer"
    assert {"abusive/roc_auc", "abusive/pr_auc", "abusive/f1", "abusive/n_pos"} <= report["overall"].keys()
    assert "abusive/roc_auc" in report["overall_ci"] and "olid" in report["per_source"]
    assert {b["benchmark"] for b in report["benchmarks"]} >= {"OffensEval-2019 A (OLID test)", "TweetEval hate"}
    assert report["ece"]["abusive"]["uncalibrated"] != report["ece"]["abusive"]["calibrated"]  # tiny card T=2
    assert any(r["status"] == "judged" for r in report["bias"])
    suite = report["behaviour"]  # the repo's behaviour suite, scored through the same scorer and thresholds
    assert suite["n"] >= 14 * 25 and 0 <= suite["pass_rate"] <= 1 and len(suite["capabilities"]) >= 14
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["model_version"] == "1" and run.data.tags["model_run_id"] == registered.run_id
    assert run.data.tags["tweetguard.run_type"] == "evaluation"
    assert "test/abusive/roc_auc" in run.data.metrics and "test/olid/abusive/pr_auc" in run.data.metrics
    assert run.data.metrics["behaviour/pass_rate"] == pytest.approx(suite["pass_rate"])
    assert "behaviour/threat_direct/violence/accuracy" in run.data.metrics
    assert {a.path for a in client.list_artifacts(result.run_id, "report")} >= {"report/report.md",
                                                                               "report/reliability.png"}
    assert client.get_model_version("tweetguard", "1").tags["evaluation.test.run_id"] == result.run_id
    # The version's model card now carries the test numbers, tiers included (the tiny card has both tiers).
    card_md = client.get_model_version("tweetguard", "1").description
    assert "test precision (95% CI)" in card_md and "Test (see the evaluation run" in card_md
    assert "| OffensEval-2019 A (OLID test) |" in (tmp_path / "rep" / REPORT_MD).read_text()
    assert "## Behaviour suite" in (tmp_path / "rep" / REPORT_MD).read_text()


def test_evaluating_a_logged_model_links_metrics_dataset_and_hub_card(tmp_path, tiny_artifact, mlflow_uri,
                                                                       register_pyfunc_dir):
    from huggingface_hub import ModelCard

    from training.tracking.versions import logged_model_id

    version = register_pyfunc_dir(tiny_artifact, mlflow_uri)
    model_id = logged_model_id("tweetguard", version, mlflow_uri)
    cfg = load_config(None, [*FAST, "evaluation.behaviour_suite=null"])
    result = evaluate(f"models:/tweetguard/{version}", cfg, out_dir=tmp_path / "rep", tracking_uri=mlflow_uri,
                      data=synthetic_split())
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    # MLflow 3's model view: the evaluation's metrics are the logged model's, measured on the test dataset input.
    linked = {m.key: m for m in client.get_logged_model(model_id).metrics}
    assert {k: m.value for k, m in linked.items()} == run.data.metrics and "test/abusive/roc_auc" in linked
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "tweetguard-test" and {t.key: t.value for t in dataset.tags}["rows"] == "200"
    assert {(m.dataset_name, m.dataset_digest, m.run_id) for m in linked.values()} == {
        ("tweetguard-test", dataset.dataset.digest, result.run_id)}
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
    # The version's Hub model card, logged with the test results: the model-index holds them exactly.
    path = client.download_artifacts(client.get_model_version("tweetguard", version).run_id,
                                     f"model_card/v{version}/README.md", str(tmp_path))
    results = ModelCard.load(path).data.eval_results
    test = {(r.metric_config, r.metric_type): r.metric_value for r in results if r.dataset_split == "test"}
    overall = result.report["overall"]
    assert test and test == {k: overall[f"{k[0]}/{k[1]}"] for k in test}
    assert {f"{p}/{m}" for p, m in test} == {k for k in overall if k.split("/")[0] in POLICIES
                                            and k.split("/")[1] in {"roc_auc", "pr_auc", "f1", "precision",
                                                                    "recall", "ece"}}


def test_tfidf_baseline_is_evaluated_by_the_same_code(tmp_path, toy):
    from training.fit.baseline import fit_baseline

    model_dir = fit_baseline(toy.dataset(), toy.cfg).save(tmp_path / "tfidf")
    result = evaluate(str(model_dir), load_config(None, FAST), data=toy.dataset()["test"],
                      out_dir=tmp_path / "rep", log_to_mlflow=False)
    assert result.kind == "tfidf" and result.run_id is None
    assert result.report["overall"]["abusive/roc_auc"] > 0.95  # the toy data is separable
    # no benchmark source in the toy split: only the goal measures, said to be not in this data
    assert {b["published_status"] for b in result.report["benchmarks"]} == {NOT_IN_DATA}


def test_cli_evaluate_on_tiny_data_config(tmp_path, tiny_artifact, mlflow_uri, capsys, write_tiny_train_config):
    from training.cli import main

    config = write_tiny_train_config(tmp_path)
    code = main(["evaluate", "--model", str(tiny_artifact), "--config", str(config), "--out", str(tmp_path / "r"),
                 "--split", "validation", *FAST])
    assert code == 0
    out = capsys.readouterr().out
    assert "on validation" in out and "MLflow evaluation run" in out
    assert (tmp_path / "r" / REPORT_MD).is_file()


def test_compare_pairs_two_models_on_the_same_rows(tmp_path, tiny_artifact, make_tiny_artifact):
    from serving.artifact import SourceRef
    from training.evaluation.compare import compare, render_comparison

    def ref(name):
        return SourceRef(name=name, license="test", content_hash="0" * 64)

    other = make_tiny_artifact(tmp_path / "other", seed=1, sources=[ref("olid"), ref("gab_hate_corpus"), ref("edos")])
    base = make_tiny_artifact(tmp_path / "base", seed=0, sources=[ref("olid"), ref("gab_hate_corpus")])
    cfg, data = load_config(None, FAST), synthetic_split()
    a = evaluate(str(base), cfg, data=data, out_dir=tmp_path / "a", log_to_mlflow=False)
    b = evaluate(str(other), cfg, data=data, out_dir=tmp_path / "b", log_to_mlflow=False)
    result = compare(a, b, n=200, seed=0)
    rows = {(r["scope"], r["metric"]): r for r in result["rows"]}
    for p in POLICIES:  # the point values are the two reports' own numbers
        for k in ("pr_auc", "roc_auc"):
            row = rows[("all", f"{p}/{k}")]
            assert row["a"] == pytest.approx(a.report["overall"][f"{p}/{k}"])
            assert row["b"] == pytest.approx(b.report["overall"][f"{p}/{k}"])
            assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    assert result["shared_sources"] == ["gab_hate_corpus", "olid"]
    shared = rows[("shared sources", "violence/pr_auc")]  # violence is labelled on gab rows only here
    assert shared["b"] == pytest.approx(b.report["per_source"]["gab_hate_corpus"]["violence/pr_auc"])
    bench = rows[("benchmark OffensEval-2019 A (OLID test)", "macro_f1")]
    published = {x["benchmark"]: x["value"] for x in b.report["benchmarks"]}
    assert bench["b"] == pytest.approx(published["OffensEval-2019 A (OLID test)"])
    assert rows[("behaviour all", "pass_rate")]["b"] == pytest.approx(b.report["behaviour"]["pass_rate"])
    assert ("behaviour threat_direct", "pass_rate") in rows
    same = compare(a, a, n=100, seed=0)  # a model against itself: every difference exactly 0, none significant
    assert all(r["diff"] == 0 and r["ci_low"] == r["ci_high"] == 0 and not r["significant"] for r in same["rows"])
    assert same["shared_sources"] == []
    assert "| all | abusive/pr_auc |" in render_comparison(result)
    with pytest.raises(ValueError, match="different rows"):
        compare(a, evaluate(str(other), cfg, data=synthetic_split(seed=1).select(range(50)),
                            out_dir=tmp_path / "c", log_to_mlflow=False))


def test_cli_evaluate_compare_to(tmp_path, tiny_artifact, make_tiny_artifact, capsys, write_tiny_train_config):
    from training.cli import main

    config = write_tiny_train_config(tmp_path)
    other = make_tiny_artifact(tmp_path / "other", seed=1)
    code = main(["evaluate", "--model", str(other), "--compare-to", str(tiny_artifact), "--config", str(config),
                 "--out", str(tmp_path / "r"), "--split", "validation", "--no-mlflow", *FAST])
    assert code == 0
    assert "B - A [95% CI]" in capsys.readouterr().out
    saved = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert saved["split"] == "validation" and saved["rows"]
    assert (tmp_path / "r" / "comparison.md").is_file() and (tmp_path / "r" / "compared-to" / REPORT_MD).is_file()
