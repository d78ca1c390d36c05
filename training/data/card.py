"""The data card: what went into the unified dataset, as JSON (for MLflow and code) and markdown (for people)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
from training.data.sources import coverage_line, is_non_commercial, is_research_only, load_sources

STAT_COLUMNS = (
    "read", "bad_rows_skipped", "empty_after_normalization", "merged_within_source", "merged_validation",
    "merged_train", "leak_removed_from_validation", "leak_removed_from_train", "label_conflicts",
    "capped_from_train", "near_duplicates_dropped",
)


@dataclass
class DataCard:
    data: dict[str, Any]

    @classmethod
    def from_json(cls, path: Path) -> "DataCard":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def sources(self) -> list[dict[str, str]]:
        return [{"name": s["name"], "license": s["license"], "content_hash": s["content_hash"]}
                for s in self.data["sources"]]

    @property
    def fitted_names(self) -> set[str]:
        """Sources a model is fit on: rows in train or validation (validation fits calibration and thresholds),
        or labels joined into such a source's rows (`labels_for`). A test-only source (DIALOCONAN, SOLID) only
        evaluates the model, so its license does not bind the model."""
        if "counts" not in self.data:  # a card without row counts: every source counts as fitted
            return {s["name"] for s in self.data["sources"]}
        fed = {c["source"] for c in self.data["counts"] if c["split"] in ("train", "validation") and c["rows"]}
        return {s["name"] for s in self.data["sources"] if s["name"] in fed or s.get("labels_for") in fed}

    @property
    def fitted_sources(self) -> list[dict[str, str]]:
        """`sources` limited to `fitted_names`: what a model's policy card lists as its training data."""
        return [s for s in self.sources if s["name"] in self.fitted_names]

    def write(self, json_path: Path, md_path: Path) -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        md_path.write_text(self.markdown, encoding="utf-8")

    @property
    def markdown(self) -> str:
        d = self.data
        out = [f"# Data card (dataset {d['fingerprint'][:16]})", ""]
        fitted = self.fitted_names  # a restriction binds a model only through the data it is fit on
        if nc := [s for s in d["sources"] if s.get("non_commercial") and s["name"] in fitted]:
            listed = ", ".join(f"{s['name']}: {s['license']}" for s in nc)
            out += [f"**Non-commercial**: includes data under a NonCommercial license "
                    f"({listed}); a model trained on it is for "
                    f"non-commercial use only. Leave it out with `data.exclude_licenses=["
                    f"{','.join(sorted({s['license'] for s in nc}))}]`.", ""]
        if ro := [s for s in d["sources"] if s.get("research_only") and s["name"] in fitted]:
            listed = ", ".join(f"{s['name']}: {s['license']}" for s in ro)
            out += [f"**Research only**: includes data for research use only, no redistribution (CONAN's license; "
                    f"{listed}); a model trained on it is for research only. Leave every non-commercial and "
                    f"research-only source out with `data.exclude_restricted=true` (configs/permissive.yaml).", ""]
        if cov := d.get("shared_coverage"):
            out += [f"Shared datasets: {coverage_line(cov)}.", ""]
        out += ["## Label counts (positive / negative / unknown)", "",
                "| source | split | rows | " + " | ".join(POLICIES) + " |",
                "|---|---|---:|" + "---|" * len(POLICIES)]
        for c in d["counts"]:
            cells = [f"{c[p]['pos']} / {c[p]['neg']} / {c[p]['unk']}" for p in POLICIES]
            out.append(f"| {c['source']} | {c['split']} | {c['rows']} | " + " | ".join(cells) + " |")
        if d.get("origins"):
            out += ["", "## Rows per origin (a source's files or sites)", "",
                    "| source | split | origin | rows | " + " | ".join(POLICIES) + " |",
                    "|---|---|---|---:|" + "---|" * len(POLICIES)]
            for c in d["origins"]:
                cells = [f"{c[p]['pos']} / {c[p]['neg']} / {c[p]['unk']}" for p in POLICIES]
                out.append(f"| {c['source']} | {c['split']} | {c['origin']} | {c['rows']} | " + " | ".join(cells)
                           + " |")
        out += ["", "## Cleaning per source (rows)", "",
                "| source | " + " | ".join(STAT_COLUMNS) + " |", "|---|" + "---:|" * len(STAT_COLUMNS)]
        for name, st in d["cleaning"].items():
            out.append(f"| {name} | " + " | ".join(str(st.get(k, 0)) for k in STAT_COLUMNS) + " |")
        out += ["", f"Duplicate texts inside official test splits (kept, for benchmark comparability): "
                    f"{d['test_duplicates_kept']}", "", "## Text length (characters; words)", "",
                "| split | rows | chars p5 / p50 / p95 / max | words p50 / p95 / max |", "|---|---:|---|---|"]
        for split, ln in d["lengths"].items():
            out.append(f"| {split} | {ln['rows']} | {ln['chars'][0]} / {ln['chars'][1]} / {ln['chars'][2]} / "
                       f"{ln['chars'][3]} | {ln['words'][1]} / {ln['words'][2]} / {ln['words'][3]} |")
        out += ["", "## Sources", "", "| source | license | domain | content hash | weak negatives on |",
                "|---|---|---|---|---|"]
        for s in d["sources"]:
            weak = ", ".join(s["weak_negatives"]) or "-"
            lic = s["license"] + (" (**non-commercial**)" if s.get("non_commercial") else "") + (
                " (**research only**)" if s.get("research_only") else "")
            domain = f"labels for {s['labels_for']}" if s.get("labels_for") else s["domain"]
            out.append(f"| {s['name']} | {lic} | {domain} | {s['content_hash'][:12]} | {weak} |")
        for name, why in d["excluded"].items():
            out.append(f"| ~~{name}~~ | excluded: {why} | | | |")
        extras = [(n, x) for n, xs in d["notes"].items() for x in xs]
        extras += [(n, f"known defect handled: {k} x{v}") for n, ds in d["defects"].items() for k, v in ds.items()]
        extras += [(n, f"skipped malformed row {b}") for n, bs in d["bad_rows"].items() for b in bs[:5]]
        if extras:
            out += ["", "## Notes", ""] + [f"- {n}: {x}" for n, x in extras]
        return "\n".join(out) + "\n"


def _counts(rows) -> dict[str, dict[str, int]]:
    out = {}
    for j, p in enumerate(POLICIES):
        c = Counter(r.labels[j] for r in rows)
        out[p] = {"pos": c[POSITIVE], "neg": c[NEGATIVE], "unk": c[UNKNOWN]}
    return out


def _lengths(rows) -> dict[str, Any]:
    if not rows:
        return {"rows": 0, "chars": [0, 0, 0, 0], "words": [0, 0, 0, 0]}
    chars = np.array([len(r.text) for r in rows])
    words = np.array([len(r.text.split()) for r in rows])
    q = lambda a: [int(np.percentile(a, 5)), int(np.median(a)), int(np.percentile(a, 95)), int(a.max())]  # noqa: E731
    return {"rows": len(rows), "chars": q(chars), "words": q(words)}


def build_card(specs, excluded, hashes, fingerprint, by_split, info, cfg) -> DataCard:
    stats = info["stats"]
    counts = []
    for spec in specs:
        for split, rows in by_split.items():
            part = [r for r in rows if r.source == spec.name]
            if part:
                counts.append({"source": spec.name, "split": split, "rows": len(part), **_counts(part)})
    for split, rows in by_split.items():
        counts.append({"source": "**all**", "split": split, "rows": len(rows), **_counts(rows)})
    by_origin: dict[tuple[str, str, str], list] = {}
    for split, rows in by_split.items():
        for r in rows:
            if r.origin:
                by_origin.setdefault((r.source, split, r.origin), []).append(r)
    rank = {spec.name: i for i, spec in enumerate(specs)}, {split: i for i, split in enumerate(by_split)}
    ordered = sorted(by_origin.items(), key=lambda kv: (rank[0][kv[0][0]], rank[1][kv[0][1]], kv[0][2]))
    origins = [{"source": source, "split": split, "origin": origin, "rows": len(part), **_counts(part)}
               for (source, split, origin), part in ordered]
    cleaning = {}
    for spec in specs:
        st = dict(stats[spec.name])
        st["bad_rows_skipped"] = len(info["bad_rows"].get(spec.name, []))
        st["empty_after_normalization"] = info["empty_after_normalization"].get(spec.name, 0)
        cleaning[spec.name] = st
    return DataCard({
        "fingerprint": fingerprint,
        "config": cfg.model_dump(mode="json"),
        "sources": [{
            "name": s.name, "license": s.license, "domain": s.domain, "content_hash": hashes[s.name],
            "non_commercial": is_non_commercial(s.license), "research_only": is_research_only(s.license),
            "labels_for": s.labels_for,
            "weak_negatives": [f"{p} <- {r.weak_negative.column} in {r.weak_negative.values}"
                               for p, r in s.policies.items() if r.weak_negative and r.weak_negative.enabled],
        } for s in specs],
        "excluded": _with_restored_rules(excluded, cfg),
        "counts": counts,
        "origins": origins,
        "cleaning": cleaning,
        "test_duplicates_kept": stats["_test"]["duplicate_texts_kept"],
        "lengths": {split: _lengths(rows) for split, rows in by_split.items()},
        "defects": info["defects"], "notes": info["notes"], "bad_rows": info["bad_rows"],
        "near_duplicates": info.get("near_duplicates", {}), "shared_coverage": info.get("shared_coverage"),
    })


def _with_restored_rules(excluded: dict[str, str], cfg) -> dict[str, str]:
    """The reasons sources were left out; a left-out label-only source (`labels_for`, e.g. AbuseEval) also says that
    the source it labels keeps its own rules for those policies (OLID's OFF, profanity included, for abusive)."""
    specs = {s.name: s for s in load_sources(cfg.sources_file)} if excluded else {}
    out = {}
    for name, why in excluded.items():
        spec = specs.get(name)
        if spec is not None and spec.labels_for and spec.labels_for not in excluded:
            why += (f"; {spec.labels_for} keeps its own labels for {', '.join(spec.policies)} (its own rules "
                    f"in {cfg.sources_file})")
        out[name] = why
    return out
