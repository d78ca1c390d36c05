"""Published-comparable numbers, computed the way the shared tasks compute them, beside the published best.

Each benchmark takes the rows of one official test set (by `source` / `subset`), reads the gold label from the
row's `raw_label` (the source's own label fields, so labels our policy mapping leaves unknown still count),
turns one policy's flag at the card's threshold into the benchmark's binary prediction and scores macro-F1
over both classes, as OffensEval and TweetEval do. Where our policy is not exactly the benchmark's task the
`note` says so; such numbers are indicative, not a leaderboard entry. A few benchmarks are a rate rather than
macro-F1 (`metric`): the false-positive rate on rows that are all negatives (swearing that attacks nobody), or
the recall on rows that are all positives; or F1 / precision / recall of the positive class. AbuseEval and the
swearing rate also have validation variants
(rows carved from the sources' training data) so that tuning decisions never need the test set. Every value
comes with a bootstrap 95% CI (tweets resampled with `metrics.resample_counts`). A benchmark with no published
number (`published_row` None) says so.

Goal measures (`goal` set: issue 34's DIALOCONAN turns, HateXplain normal posts with a slur or swear word, EDOS
threats vs every other post) use the same mechanism, with three more options: the gold may be the row's own
unified label of a policy (`gold="labels"`: the sources' declared mapping, e.g. DIALOCONAN's HS / CN turns, so the
raw field is not spelled twice), the prediction may be "flagged on any policy" (`policy=ANY`), and the rows may be
restricted to the slur-and-swear slice (`term_slice`, `evaluation.slur_swear_terms`, the identity slices' matcher).
A goal measure whose source is not in the scored data is reported as `NOT_IN_DATA`, not left out.

Published bests are read from data/published.yaml (the one place they are written down), validated by
`PublishedTable`.
OffensEval-2019 B (targeted vs untargeted) is left out: none of our policies is "targeted" (abusive covers
both, harassment only individuals), so any mapping would be invented.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.policies import POLICIES
from training.config import EvalConfig, read_yaml, repo_root, validate
from training.data.identity import load_term_lists, slice_masks
from training.metrics import resample_counts

PUBLISHED = repo_root() / "data" / "published.yaml"


@dataclass(frozen=True)
class Benchmark:
    name: str
    source: str
    subset: str | None  # None: every row of the source in the split
    field: str  # raw_label field holding the gold label
    positive: frozenset[str]
    negative: frozenset[str]
    policy: str  # whose flag is the prediction; ANY: flagged on any policy
    published_row: str | None  # `benchmark` of its row in data/published.yaml; None: nothing published to compare
    published_index: int  # which of that row's `values`
    note: str
    ids_file: str | None = None  # optional: restrict to ids in <data root>/<source>/<ids_file> (first column)
    # macro_f1: both classes' F1 averaged; false_positive_rate: share of the negative rows flagged, lower is
    # better; recall: share of the positive rows flagged; f1 / precision: of the positive class.
    metric: Literal["macro_f1", "false_positive_rate", "recall", "f1", "precision"] = "macro_f1"
    gold: Literal["raw_label", "labels"] = "raw_label"  # labels: `field` is a policy, its unified label "1" / "0"
    negative_rest: bool = False  # every other non-empty value of `field` is negative (`negative` unused)
    term_slice: bool = False  # only rows with a word of evaluation.slur_swear_terms
    goal: str | None = None  # a goal measure (the issue's goal, as text): reported as NOT_IN_DATA when absent


METRIC_NAMES = {"macro_f1": "macro-F1", "false_positive_rate": "false-positive rate", "recall": "recall",
                "f1": "F1", "precision": "precision"}
NOT_PUBLISHED = "no published number for this variant"
NOT_IN_DATA = "not in this data"
ANY = "any"  # Benchmark.policy: flagged on any policy
EDOS_THREAT = "1. threats, plans to harm and incitement"
EDOS_OTHER_SEXIST = ("2. derogation", "3. animosity", "4. prejudiced discussions")


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("OffensEval-2019 A (OLID test)", "olid", "test_a", "subtask_a", frozenset({"OFF"}),
              frozenset({"NOT"}), "abusive", "OffensEval-2019 A", 0,
              "official test set and metric (macro-F1 OFF vs NOT) from the abusive flag"),
    Benchmark("OLID C-like: IND vs GRP/OTH (binary)", "olid", "test_a", "subtask_c", frozenset({"IND"}),
              frozenset({"GRP", "OTH"}), "harassment", "OffensEval-2019 B / C", 1,
              "binary IND vs rest from the harassment flag; the official C metric is 3-way macro-F1 "
              "(IND/GRP/OTH), so the published number is not directly comparable"),
    Benchmark("OffensEval-2020 A (SOLID test, all)", "solid_test_2020", "test_a", "subtask_a", frozenset({"OFF"}),
              frozenset({"NOT"}), "abusive", "OffensEval-2020 A", 0,
              "all 5,993 extended-test tweets (easy + hard); the official 3,887-tweet test is roughly the easy part"),
    Benchmark("OffensEval-2020 A (SOLID test, easy part)", "solid_test_2020", "test_a", "subtask_a",
              frozenset({"OFF"}), frozenset({"NOT"}), "abusive", "OffensEval-2020 A", 0,
              "the 3,832-tweet easy part, an approximation of the official 3,887-tweet test (not the same "
              "set, and likely easier: treat a gap to the published best with care); needs "
              "test_a_labels_easy.csv under the data root",
              ids_file="test_a_labels_easy.csv"),
    Benchmark("OffensEval-2020 C-like: IND vs GRP/OTH (binary)", "solid_test_2020", "test_c", "subtask_c",
              frozenset({"IND"}), frozenset({"GRP", "OTH"}), "harassment", "OffensEval-2020 C", 0,
              "binary IND vs rest from the harassment flag; the official C metric is 3-way macro-F1"),
    Benchmark("TweetEval hate", "tweeteval_hate", None, "label", frozenset({"1"}), frozenset({"0"}), "abusive",
              "TweetEval hate", 0,
              "abusive flag vs hate: our abusive policy is broader than hate against women/immigrants, so "
              "insults that are not hate count as false positives here"),
    Benchmark("AbuseEval (OLID test)", "olid", "test_a", "abuse", frozenset({"EXP", "IMP"}), frozenset({"NOTABU"}),
              "abusive", "AbuseEval", 1,
              "OLID's test tweets relabelled by AbuseEval: abusive (explicit + implicit) vs not abusive, macro-F1 "
              "from the abusive flag (published: BERT-base 0.727, HateBERT 0.765); needs the abuseval source"),
    Benchmark("AbuseEval abusive recall (EXP + IMP)", "olid", "test_a", "abuse", frozenset({"EXP", "IMP"}),
              frozenset(), "abusive", None, 0,
              "share of AbuseEval's abusive (explicit + implicit) OLID test tweets flagged abusive; reported "
              "beside the swearing false-positive rate (flagging less swearing must not cost this)",
              metric="recall"),
    Benchmark("EDOS threats vs other sexist posts", "edos", "test", "label_category", frozenset({EDOS_THREAT}),
              frozenset(EDOS_OTHER_SEXIST), "violence", None, 0,
              "EDOS test sexist posts only: category 1 (threats, plans to harm, incitement) vs categories 2-4, "
              "macro-F1 from the violence flag; no published number for this binary variant (EDOS Task B is "
              "4-way)"),
    Benchmark("Swearing that attacks nobody (vulgar_functions held-out test)", "vulgar_functions", "test",
              "aggression", frozenset(), frozenset({"0"}), "abusive", None, 0,
              "held-out 20% (by tweet-id hash) of Vulgar Functions tweets none of whose vulgar words is "
              "aggression: share flagged abusive (lower is better); no published abuse benchmark on this data",
              metric="false_positive_rate"),
)


def _on_validation(name: str, test_name: str) -> Benchmark:
    """The rule of test benchmark `test_name` on the validation rows our splitter carved from the source's training
    data (subset "train"), so a tuning decision reads it from `tweetguard evaluate --split validation` /
    `--compare-to` without touching a test set. Nothing published is comparable."""
    bench = next(b for b in BENCHMARKS if b.name == test_name)
    return replace(bench, name=name, subset="train", published_row=None, published_index=0,
                   note=f"validation variant of {test_name!r}, for tuning: no published number for these rows")


BENCHMARKS += (
    _on_validation("AbuseEval (OLID validation rows)", "AbuseEval (OLID test)"),
    _on_validation("AbuseEval abusive recall (OLID validation rows)", "AbuseEval abusive recall (EXP + IMP)"),
    _on_validation("Swearing that attacks nobody (vulgar_functions validation rows)",
                   "Swearing that attacks nobody (vulgar_functions held-out test)"),
)


_EDOS_ALL = Benchmark("EDOS threats vs every other post", "edos", "test", "label_category", frozenset({EDOS_THREAT}),
                      frozenset(), "violence", None, 0,
                      "EDOS test, every post: category 1 (threats, plans to harm, incitement) vs every other post, "
                      "not-sexist ones included, from the violence flag at the card's threshold; no published "
                      "number for this variant", negative_rest=True, goal="reported")

_DIALOCONAN_CN = Benchmark(
    "DIALOCONAN counter-narrative turns flagged on any policy", "dialoconan", None, "abusive", frozenset(),
    frozenset({"0"}), ANY, None, 0,
    "held-out DIALOCONAN (test only): counter-narrative turns (0 on every policy) flagged on any policy (lower is "
    "better); no published number for this measure", metric="false_positive_rate", gold="labels", goal="<= 0.05")
_DIALOCONAN_HS = Benchmark(
    "DIALOCONAN hate-speech turns flagged abusive", "dialoconan", None, "abusive", frozenset({"1"}), frozenset(),
    "abusive", None, 0,
    "held-out DIALOCONAN (test only): hate-speech turns (abusive 1) flagged abusive; no published number for this "
    "measure", metric="recall", gold="labels", goal=">= 0.80")

BENCHMARKS += (
    _DIALOCONAN_CN,
    _DIALOCONAN_HS,
    Benchmark("HateXplain normal posts with a slur or swear word flagged abusive", "hatexplain", None, "abusive",
              frozenset(), frozenset({"0"}), "abusive", None, 0,
              "HateXplain rows of the scored split (its official test with --split test) labelled normal (abusive "
              "0) that hold a word of evaluation.slur_swear_terms: share flagged abusive (lower is better); n is "
              "the slice size; no published number for this slice",
              metric="false_positive_rate", gold="labels", term_slice=True, goal="reported"),
    # The DIALOCONAN goals' analogues on CONAN's own rows of the scored split (validation: what screens and
    # decisions read, since DIALOCONAN is test only; CONAN is opt-in, so "not in this data" without it).
    replace(_DIALOCONAN_CN, name="CONAN counter-narratives flagged on any policy", source="conan", goal="reported",
            note="CONAN rows of the scored split (opt-in source): counter-narratives (0 on every policy) flagged on "
            "any policy (lower is better); the validation analogue of the DIALOCONAN goal; no published number"),
    replace(_DIALOCONAN_HS, name="CONAN hate statements flagged abusive", source="conan", goal="reported",
            note="CONAN rows of the scored split (opt-in source): hate statements (abusive 1) flagged abusive; no "
            "published number"),
    replace(_EDOS_ALL, name="EDOS threats vs every other post: violence F1", metric="f1"),
    replace(_EDOS_ALL, name="EDOS threats vs every other post: violence precision", metric="precision"),
    replace(_EDOS_ALL, name="EDOS threats vs every other post: violence recall", metric="recall"),
)


def parse_raw_label(raw: str) -> dict[str, str]:
    """'subtask_a=OFF;subtask_b=TIN' -> {'subtask_a': 'OFF', 'subtask_b': 'TIN'}."""
    return dict(part.split("=", 1) for part in raw.split(";") if "=" in part)


class PublishedResult(BaseModel):
    """One row of data/published.yaml: the best published number(s) on one benchmark."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmark: str = Field(min_length=1, description="the name a Benchmark.published_row refers to")
    test_set: str = Field(min_length=1, description="the test set the number was measured on")
    metric: str = Field(min_length=1, description="e.g. macro-F1 (both classes' F1 averaged) or F1")
    values: list[Annotated[float, Field(ge=0, le=1)]] = Field(min_length=1, description="on the 0-1 scale")
    systems: list[str] | None = Field(None, description="what each value is (a system or subtask), in order")
    approximate: bool = Field(False, description="only an approximate value is known")
    source: str = Field(min_length=1, description="where the number comes from")
    status: str = Field(min_length=1, description="how far it was checked; shown in the report as written")

    @model_validator(mode="after")
    def _one_system_per_value(self):
        if self.systems is not None and len(self.systems) != len(self.values):
            raise ValueError(f"{len(self.systems)} systems for {len(self.values)} values")
        return self


class PublishedTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results: list[PublishedResult] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_benchmarks(self):
        names = [r.benchmark for r in self.results]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"benchmark listed more than once: {repeated}")
        return self


def load_published(path: str | Path = PUBLISHED) -> PublishedTable:
    """data/published.yaml, validated: unknown keys, values outside [0, 1] and repeated rows are a ConfigError
    naming the file and the entry."""
    return validate(PublishedTable, read_yaml(path), str(path))


def published_results(path: str | Path = PUBLISHED) -> dict[str, tuple[list[float], str]]:
    """{benchmark: ([values], status)} from data/published.yaml; {} if the file is not there."""
    if not Path(path).is_file():
        return {}
    return {r.benchmark: (list(r.values), r.status) for r in load_published(path).results}


def published_best(bench: Benchmark, table: dict) -> tuple[float | None, str]:
    if bench.published_row is None:
        return None, NOT_PUBLISHED
    values, status = table.get(bench.published_row, ([], ""))
    if len(values) > bench.published_index:
        return values[bench.published_index], status
    return None, "not in data/published.yaml"


def _macro_f1(y: np.ndarray, yhat: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary macro-F1 (mean of both classes' F1) under B row weightings w [B, n] -> [B]."""
    tp, fp, fn = w @ (y & yhat), w @ (~y & yhat), w @ (y & ~yhat)
    tn = w.sum(1) - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(tn > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    return (f1_pos + f1_neg) / 2


def macro_f1_ci(y: np.ndarray, yhat: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(macro-F1, 95% CI low, high); the CI resamples tweets with replacement."""
    y, yhat = np.asarray(y, bool), np.asarray(yhat, bool)
    point = float(_macro_f1(y, yhat, np.ones((1, len(y))))[0])
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, n, 100):  # 100 resamples at a time: [100, N] weights stay small
        samples.append(_macro_f1(y, yhat, resample_counts(rng, len(y), min(100, n - start))))
    lo, hi = np.percentile(np.concatenate(samples), [2.5, 97.5])
    return point, float(lo), float(hi)


def rate_ci(flags: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(share of rows flagged, 95% CI low, high): a false-positive rate on negatives, a recall on positives; the
    CI resamples tweets with replacement, as `macro_f1_ci`."""
    flags = np.asarray(flags, np.float64)
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, n, 100):
        w = resample_counts(rng, len(flags), min(100, n - start))
        samples.append(w @ flags / w.sum(1))
    lo, hi = np.percentile(np.concatenate(samples), [2.5, 97.5])
    return float(flags.mean()), float(lo), float(hi)


def _ids_from(path: Path) -> set[str] | None:
    """The source's own ids (first CSV column) listed in `path`; None if the file is not there."""
    if not path.is_file():
        return None
    return {line.split(",")[0].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _native_id(row_id: str) -> str:
    # Unified ids are "<source>:<native id>", where a multi-file source's native id is "<subset>/<id>".
    return row_id.split(":", 1)[-1].rsplit("/", 1)[-1]


def _term_mask(texts: list[str], slur_swear_terms: str | Path | None) -> np.ndarray:
    """Which texts hold a word of the slur-and-swear list (`evaluation.slur_swear_terms`; None: its default)."""
    path = Path(slur_swear_terms or EvalConfig().slur_swear_terms)
    path = path if path.is_absolute() or path.is_file() else repo_root() / path
    masks = slice_masks(texts, load_term_lists(path, "evaluation.slur_swear_terms"))
    return np.any(np.stack(list(masks.values())), axis=0) if texts else np.zeros(0, dtype=bool)


def _gold_values(bench: Benchmark, scored, idx: np.ndarray) -> np.ndarray:
    if bench.gold == "labels":  # the row's unified label of policy `field`: "1", "0" or "" (unknown)
        col = scored.labels[idx, POLICIES.index(bench.field)]
        return np.where(col == 1, "1", np.where(col == 0, "0", ""))
    return np.array([parse_raw_label(scored.raw_labels[i]).get(bench.field, "") for i in idx], dtype=object)


def benchmark_rows(bench: Benchmark, scored, data_root: str | Path | None = None,
                   slur_swear_terms: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices into `scored`, gold positive [bool]) of one benchmark; empty when the split lacks it."""
    rows = scored.sources == bench.source
    if bench.subset is not None:
        rows &= scored.subsets == bench.subset
    if bench.ids_file:
        ids = _ids_from(Path(data_root or "") / bench.source / bench.ids_file)
        if ids is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        rows &= np.array([_native_id(i) in ids for i in scored.ids])
    idx = np.flatnonzero(rows)
    gold = _gold_values(bench, scored, idx).astype(str)
    positive = np.isin(gold, list(bench.positive))
    known = (positive | (gold != "")) if bench.negative_rest else np.isin(gold, list(bench.positive | bench.negative))
    idx, positive = idx[known], positive[known]
    if bench.term_slice and len(idx):
        in_slice = _term_mask([scored.texts[i] for i in idx], slur_swear_terms)
        idx, positive = idx[in_slice], positive[in_slice]
    return idx, positive


def benchmark_flags(bench: Benchmark, probs: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """The benchmark's prediction per row of `probs` [n, P]: its policy's flag at the card's threshold, or (ANY)
    a flag on any policy."""
    if bench.policy == ANY:
        return (probs >= np.array([thresholds[p] for p in POLICIES])).any(axis=1)
    return probs[:, POLICIES.index(bench.policy)] >= thresholds[bench.policy]


def benchmark_stat(bench: Benchmark, y: np.ndarray, flags: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The benchmark's metric under B row weightings w [B, n] -> [B]: macro-F1; F1 / precision of the positive
    class (0 when undefined, as scikit-learn's zero_division=0); recall = share of the positive rows flagged,
    false-positive rate = share of the negative rows flagged (NaN for a weighting without such rows)."""
    if bench.metric == "macro_f1":
        return _macro_f1(y, flags, w)
    y, flags = np.asarray(y, bool), np.asarray(flags, bool)
    tp, fp, fn = w @ (y & flags), w @ (~y & flags), w @ (y & ~flags)
    with np.errstate(invalid="ignore", divide="ignore"):
        if bench.metric == "f1":
            return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if bench.metric == "precision":
            return np.where(tp > 0, tp / (tp + fp), 0.0)
        if bench.metric == "recall":
            return tp / (tp + fn)
        return fp / (w @ ~y)  # false_positive_rate


def benchmark_ci(bench: Benchmark, y: np.ndarray, flags: np.ndarray, n: int = 1000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(value, 95% CI low, high): tweets resampled with replacement (as `macro_f1_ci` / `rate_ci`, the same draws);
    resamples where the metric is undefined (no positive row for a recall) are left out of the interval."""
    y, flags = np.asarray(y, bool), np.asarray(flags, bool)
    point = float(benchmark_stat(bench, y, flags, np.ones((1, len(y))))[0])
    rng = np.random.default_rng(seed)
    samples = np.concatenate([benchmark_stat(bench, y, flags, resample_counts(rng, len(y), min(100, n - start)))
                              for start in range(0, n, 100)])
    samples = samples[~np.isnan(samples)]
    lo, hi = np.percentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan)
    return point, float(lo), float(hi)


def run_benchmarks(scored, thresholds: dict[str, float], data_root: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0, published: str | Path = PUBLISHED,
                   slur_swear_terms: str | Path | None = None) -> list[dict]:
    """One row per benchmark present in the scored split: value, CI, n, published best and its status; a goal
    measure whose rows are not in the split is a row with no value and status NOT_IN_DATA."""
    table = published_results(published)
    out = []
    for bench in BENCHMARKS:
        idx, y = benchmark_rows(bench, scored, data_root, slur_swear_terms)
        common = {"benchmark": bench.name, "metric": bench.metric, "policy": bench.policy, "note": bench.note,
                  **({"goal": bench.goal} if bench.goal else {})}
        if not len(idx):
            if bench.goal:
                out.append({**common, "value": None, "ci_low": None, "ci_high": None, "n": 0, "n_positive": 0,
                            "published_best": None, "published_status": NOT_IN_DATA})
            continue
        value, lo, hi = benchmark_ci(bench, y, benchmark_flags(bench, scored.probs[idx], thresholds), n_boot, seed)
        best, status = published_best(bench, table)
        row = {**common, "value": value, "ci_low": lo, "ci_high": hi, "n": len(idx), "n_positive": int(y.sum()),
               "published_best": best, "published_status": status}
        if bench.metric == "macro_f1":
            row["macro_f1"] = value  # the key reports written before `metric` existed carry
        out.append(row)
    return out


def benchmark_value(row: dict) -> tuple[str, float]:
    """(metric, value) of a benchmark row, also of reports written before rows carried `metric` / `value`."""
    return row.get("metric", "macro_f1"), row.get("value", row.get("macro_f1"))
