"""Published-comparable numbers, computed the way the shared tasks compute them, beside the published best.

Each benchmark takes the rows of one official test set (by `source` / `subset`), reads the gold label from the
row's `raw_label` (the source's own label fields, so labels our policy mapping leaves unknown still count),
turns one policy's flag at the card's threshold into the benchmark's binary prediction and scores macro-F1
over both classes, as OffensEval and TweetEval do. Where our policy is not exactly the benchmark's task the
`note` says so; such numbers are indicative, not a leaderboard entry. A few benchmarks are a rate rather than
macro-F1 (`metric`): the false-positive rate on rows that are all negatives (swearing that attacks nobody), or
the recall on rows that are all positives. AbuseEval and the swearing rate also have validation variants
(rows carved from the sources' training data) so that tuning decisions never need the test set. Every value
comes with a bootstrap 95% CI (tweets resampled with `metrics.resample_counts`). A benchmark with no published
number (`published_row` None) says so.

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
from training.config import read_yaml, repo_root, validate
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
    policy: str  # whose flag is the prediction
    published_row: str | None  # `benchmark` of its row in data/published.yaml; None: nothing published to compare
    published_index: int  # which of that row's `values`
    note: str
    ids_file: str | None = None  # optional: restrict to ids in <data root>/<source>/<ids_file> (first column)
    # macro_f1: both classes' F1 averaged; false_positive_rate: share of the (negative) rows flagged, lower is
    # better; recall: share of the (positive) rows flagged.
    metric: Literal["macro_f1", "false_positive_rate", "recall"] = "macro_f1"


METRIC_NAMES = {"macro_f1": "macro-F1", "false_positive_rate": "false-positive rate", "recall": "recall"}
NOT_PUBLISHED = "no published number for this variant"
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


def benchmark_rows(bench: Benchmark, scored, data_root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices into `scored`, gold positive [bool]) of one benchmark; empty when the split lacks it."""
    rows = scored.sources == bench.source
    if bench.subset is not None:
        rows &= scored.subsets == bench.subset
    if bench.ids_file:
        ids = _ids_from(Path(data_root or "") / bench.source / bench.ids_file)
        if ids is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
        rows &= np.array([_native_id(i) in ids for i in scored.ids])
    gold = np.array([parse_raw_label(scored.raw_labels[i]).get(bench.field, "") for i in np.flatnonzero(rows)])
    known = np.isin(gold, list(bench.positive | bench.negative))
    return np.flatnonzero(rows)[known], np.isin(gold[known], list(bench.positive))


def benchmark_stat(bench: Benchmark, y: np.ndarray, flags: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The benchmark's metric under B row weightings w [B, n] -> [B]: macro-F1, or the share of rows flagged (a
    false-positive rate when its rows are negatives, a recall when they are positives)."""
    if bench.metric == "macro_f1":
        return _macro_f1(y, flags, w)
    return w @ flags.astype(np.float64) / w.sum(1)


def run_benchmarks(scored, thresholds: dict[str, float], data_root: str | Path | None = None,
                   n_boot: int = 1000, seed: int = 0, published: str | Path = PUBLISHED) -> list[dict]:
    """One row per benchmark present in the scored split: value, CI, n, published best and its status."""
    table = published_results(published)
    out = []
    for bench in BENCHMARKS:
        idx, y = benchmark_rows(bench, scored, data_root)
        if not len(idx):
            continue
        flags = scored.probs[idx, POLICIES.index(bench.policy)] >= thresholds[bench.policy]
        if bench.metric == "macro_f1":
            value, lo, hi = macro_f1_ci(y, flags, n=n_boot, seed=seed)
        else:
            value, lo, hi = rate_ci(flags, n=n_boot, seed=seed)
        best, status = published_best(bench, table)
        row = {"benchmark": bench.name, "metric": bench.metric, "value": value, "ci_low": lo, "ci_high": hi,
               "n": len(idx), "n_positive": int(y.sum()),
               "policy": bench.policy, "published_best": best, "published_status": status, "note": bench.note}
        if bench.metric == "macro_f1":
            row["macro_f1"] = value  # the key reports written before `metric` existed carry
        out.append(row)
    return out


def benchmark_value(row: dict) -> tuple[str, float]:
    """(metric, value) of a benchmark row, also of reports written before rows carried `metric` / `value`."""
    return row.get("metric", "macro_f1"), row.get("value", row.get("macro_f1"))
