"""Data layer: mapping, malformed input, dedup/leakage, splits, cache — on small fixture sources written here,
plus a check of the real shared files' row counts."""

import os
from pathlib import Path

import pytest
import yaml

from serving.policies import POLICIES
from training.config import ConfigError, DataConfig, repo_root
from training.data.prepare import DataError, merge_labels, prepare
from training.data.readers import read_source
from training.data.sources import load_sources

SHARED = repo_root() / "data" / "sources.yaml"
A, H, V = (POLICIES.index(p) for p in ("abusive", "harassment", "violence"))

TWEETS_SPEC = {
    "name": "tw",
    "description": "fixture tweets with an official test split",
    "license": "MIT",
    "reader": "table",
    "quoting": "none",
    "id_column": "id",
    "text_column": "tweet",
    "validation_from_train": True,
    "files": [
        {"path": "train.tsv", "split": "train", "subset": "train"},
        {"path": "test.tsv", "split": "test", "subset": "test", "labels": "test_labels.csv", "label_column": "a"},
    ],
    "policies": {
        "abusive": {"columns": ["a"], "positive": ["OFF"], "negative": ["NOT"]},
        "violence": {
            "columns": ["a"], "positive": [], "negative": [], "unknown": ["OFF", "NOT"],
            "weak_negative": {"column": "a", "values": ["NOT"], "enabled": False, "why": "fixture"},
        },
    },
}
NOSPLIT_SPEC = {
    "name": "ns",
    "description": "fixture comments without splits",
    "license": "GPL-3.0",
    "reader": "table",
    "delimiter": ",",
    "text_column": "text",
    "files": [{"path": "all.csv"}],
    "policies": {"harassment": {"columns": ["h"], "positive": ["1"], "negative": ["0"]}},
}


def write_sources(tmp_path, specs, files):
    root = tmp_path / "datasets"
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content.encode() if isinstance(content, str) else content)
    sources = tmp_path / "datasets.yaml"
    sources.write_text(yaml.safe_dump({"sources": specs}))
    return DataConfig(root=str(root), sources_file=str(sources), cache_dir=str(tmp_path / "cache"))


def base_files(train_rows=None, test_rows=None):
    train = train_rows or [f"{i}\tplain tweet number {i} about cats\tNOT" for i in range(40)] + [
        f"{100 + i}\t@USER you are a stupid idiot number {i} URL\tOFF" for i in range(20)
    ]
    test = test_rows or ["900\t@USER totally new text here\t", "901\tanother unseen tweet\t"]
    return {
        "tw/train.tsv": "id\ttweet\ta\n" + "\n".join(train) + "\n",
        "tw/test.tsv": "id\ttweet\n" + "\n".join(r.rsplit("\t", 1)[0] for r in test) + "\n",
        "tw/test_labels.csv": "900,OFF\n901,NOT\n",
        "ns/all.csv": "text,h\n" + "".join(f"\"comment {i}, with a comma\",{int(i % 3 == 0)}\n" for i in range(30)),
    }


def test_mapping_splits_and_unknowns(tmp_path):
    cfg = write_sources(tmp_path, [TWEETS_SPEC, NOSPLIT_SPEC], base_files())
    ds = prepare(cfg).dataset
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].column_names == ["id", "text", "source", "labels", "subset", "raw_label"]
    test = {r["id"]: r for r in ds["test"]}
    assert test["tw:test/900"]["labels"] == [1, -1, -1]  # harassment never labeled by tw: unknown
    assert test["tw:test/901"]["labels"] == [0, -1, -1]  # weak negative switched off: violence unknown
    ns = [r for split in ds.values() for r in split if r["source"] == "ns"]
    assert len(ns) == 30 and all(r["labels"][A] == -1 and r["labels"][V] == -1 for r in ns)
    assert {r["text"] for r in ns} == {f"comment {i}, with a comma" for i in range(30)}
    # split-less source split roughly 80/10/10; official train carved for validation; test untouched
    assert sum(r["source"] == "ns" for r in ds["test"]) == 3
    assert sum(r["source"] == "tw" for r in ds["validation"]) == 6
    assert sum(r["source"] == "tw" for r in ds["test"]) == 2


def test_weak_negative_switch(tmp_path):
    spec = yaml.safe_load(yaml.safe_dump(TWEETS_SPEC))
    spec["policies"]["violence"]["weak_negative"]["enabled"] = True
    cfg = write_sources(tmp_path, [spec], base_files())
    test = {r["id"]: r["labels"] for r in prepare(cfg).dataset["test"]}
    assert test["tw:test/901"][V] == 0 and test["tw:test/900"][V] == -1


def test_splits_are_seeded_and_deterministic(tmp_path):
    cfg = write_sources(tmp_path, [TWEETS_SPEC, NOSPLIT_SPEC], base_files())
    ids = lambda c: {s: sorted(d["id"]) for s, d in prepare(c, force=True).dataset.items()}  # noqa: E731
    first = ids(cfg)
    assert ids(cfg) == first
    assert ids(cfg.model_copy(update={"seed": 99})) != first


def test_dedup_merges_reformatted_copies_and_removes_leaks(tmp_path):
    train = [f"{i}\tfiller tweet {i} is fine\tNOT" for i in range(30)] + [
        "201\t@USER You are a LIAR URL\tOFF",
        "202\t@someone you are a liar\tOFF",
        "203\t@x @y you are a liar!!!\tNOT",  # 2 OFF vs 1 NOT -> OFF
        "204\t@someone this text is also in test\tNOT",
        "205\t@a tie text\tOFF",
        "206\t@b tie text\tNOT",  # 1 vs 1 -> unknown
    ]
    test = ["900\t@USER This text is ALSO in test URL\t", "901\tunrelated\t"]
    cfg = write_sources(tmp_path, [TWEETS_SPEC], base_files(train, test))
    prepared = prepare(cfg)
    rows = [r for s in ("train", "validation") for r in prepared.dataset[s]]
    liar = [r for r in rows if "liar" in r["text"].lower()]
    tie = [r for r in rows if "tie text" in r["text"]]
    assert len(liar) == 1 and liar[0]["labels"][A] == 1
    assert len(tie) == 1 and tie[0]["labels"][A] == -1
    assert not any("also in test" in r["text"] for r in rows)
    cleaning = prepared.card.to_dict()["cleaning"]["tw"]
    assert cleaning["merged_within_source"] == 3 and cleaning["leak_removed_from_train"] + cleaning.get(
        "leak_removed_from_validation", 0) == 1
    assert cleaning["label_conflicts"] == 2


def test_merge_labels_rule():
    assert merge_labels([(1, -1, 0), (1, 0, -1), (0, 1, -1)]) == ((1, -1, 0), True)
    assert merge_labels([(-1, -1, -1), (1, -1, -1)]) == ((1, -1, -1), False)


@pytest.mark.parametrize(
    "train_row, reason",
    [
        ("77\ttoo\tmany\tfields", "4 fields, header has 3"),
        ("77\tsome tweet\tMAYBE", "unmapped abusive label a='MAYBE'"),
        ("77\t   \tOFF", "empty text"),
        ("id\ttweet\ta", "header line repeated mid-file"),
        (b"77\tbad \xff\xfe bytes\tOFF".decode("latin-1"), "not valid UTF-8"),
    ],
)
def test_malformed_rows_fail_naming_file_and_line(tmp_path, train_row, reason):
    files = base_files()
    lines = files["tw/train.tsv"].splitlines()
    lines.insert(3, train_row)
    body = "\n".join(lines) + "\n"
    files["tw/train.tsv"] = body.encode("latin-1") if "bytes" in train_row else body
    cfg = write_sources(tmp_path, [TWEETS_SPEC], files)
    with pytest.raises(DataError) as e:
        prepare(cfg)
    assert f"tw/train.tsv:4: {reason}" in str(e.value)
    # the explicit option skips and counts; nothing disappears silently
    prepared = prepare(cfg.model_copy(update={"on_bad_rows": "skip"}))
    assert prepared.card.to_dict()["cleaning"]["tw"]["bad_rows_skipped"] == 1
    assert f"tw/train.tsv:4: {reason}" in prepared.card.markdown


def test_declared_repeated_header_is_handled_and_counted(tmp_path):
    spec = dict(TWEETS_SPEC, known_defects={"repeated_header": 1})
    files = base_files()
    files["tw/train.tsv"] = files["tw/train.tsv"].replace("\n5\t", "\nid\ttweet\ta\n5\t", 1)
    cfg = write_sources(tmp_path, [spec], files)
    card = prepare(cfg).card.to_dict()
    assert card["defects"]["tw"] == {"repeated_header": 1}


def test_missing_file_and_column_are_named(tmp_path):
    files = base_files()
    del files["tw/test_labels.csv"]
    cfg = write_sources(tmp_path, [TWEETS_SPEC], files)
    with pytest.raises(FileNotFoundError, match=r"source tw: file not found: .*tw/test_labels.csv"):
        prepare(cfg)
    spec = dict(TWEETS_SPEC, text_column="body")
    cfg = write_sources(tmp_path, [spec], base_files())
    with pytest.raises(ValueError, match=r"column 'body' not in .*tw/train.tsv"):
        prepare(cfg)
    with pytest.raises(FileNotFoundError, match="data.root"):
        prepare(cfg.model_copy(update={"root": str(tmp_path / "nowhere")}))


def test_bad_source_declaration_is_named(tmp_path):
    spec = dict(TWEETS_SPEC, policies={"toxicity": {"columns": ["a"]}})
    cfg = write_sources(tmp_path, [spec], base_files())
    with pytest.raises(ConfigError, match="unknown policy 'toxicity'"):
        prepare(cfg)
    spec = dict(TWEETS_SPEC, encoding="latin-1")
    cfg = write_sources(tmp_path, [spec], base_files())
    with pytest.raises(ConfigError, match=r"unknown config key 'sources\.0\.encoding'"):
        prepare(cfg)


def test_license_exclusion_and_selection(tmp_path):
    cfg = write_sources(tmp_path, [TWEETS_SPEC, NOSPLIT_SPEC], base_files())
    prepared = prepare(cfg.model_copy(update={"exclude_licenses": ["GPL-3.0"]}))
    assert set(prepared.dataset["train"]["source"]) == {"tw"}
    assert "GPL-3.0" in prepared.card.to_dict()["excluded"]["ns"]
    with pytest.raises(DataError, match="unknown source 'nope'"):
        prepare(cfg.model_copy(update={"exclude": ["nope"]}))


def test_cache_is_keyed_by_content(tmp_path):
    files = base_files()
    cfg = write_sources(tmp_path, [TWEETS_SPEC], files)
    first = prepare(cfg)
    entry = first.path.parent  # <cache_dir>/<fingerprint[:16]>: a build replaces the whole folder
    assert entry == Path(cfg.cache_dir) / first.fingerprint[:16]
    marker = entry / "marker"  # survives only if the entry is served, not rebuilt
    marker.touch()
    # Same bytes, newer mtime: no change, so the cached entry is served.
    labels = Path(cfg.root) / "tw/test_labels.csv"
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    again = prepare(cfg)
    assert again.fingerprint == first.fingerprint and again.path == first.path
    assert marker.exists(), "unchanged sources were prepared again instead of served from the cache"
    # Changed content: another key, a new entry built from the new labels; the old entry is left alone.
    labels.write_text("900,NOT\n901,NOT\n")
    second = prepare(cfg)
    assert second.fingerprint != first.fingerprint and second.path.parent != entry
    assert {r["id"]: r["labels"][A] for r in second.dataset["test"]}["tw:test/900"] == 0
    # The first content again: its key again, and its entry is served.
    labels.write_text(files["tw/test_labels.csv"])
    third = prepare(cfg)
    assert third.fingerprint == first.fingerprint and marker.exists()
    assert {r["id"]: r["labels"][A] for r in third.dataset["test"]}["tw:test/900"] == 1


def test_hf_reader_reads_a_local_datasets_directory(tmp_path):
    hf_dir = tmp_path / "datasets" / "hfsrc"
    hf_dir.mkdir(parents=True)
    (hf_dir / "train.csv").write_text("content,tox\n" + "".join(f"hf text {i},{i % 2}\n" for i in range(20)))
    (hf_dir / "test.csv").write_text("content,tox\nheld out one,1\nheld out two,0\n")
    spec = {
        "name": "hfsrc", "description": "a hub-style dataset read from a local directory", "license": "MIT",
        "reader": "hf", "hf_dataset": "hfsrc", "text_column": "content",
        "files": [{"path": "train", "split": "train"}, {"path": "test", "split": "test"}],
        "validation_from_train": True,
        "policies": {"abusive": {"columns": ["tox"], "positive": ["1"], "negative": ["0"]}},
    }
    cfg = write_sources(tmp_path, [spec], {})
    ds = prepare(cfg).dataset
    assert sorted(ds["test"]["text"]) == ["held out one", "held out two"]
    assert len(ds["train"]) + len(ds["validation"]) == 20


# Row counts of the real shared files, as their SOURCE.md files state them.
REAL_COUNTS = {
    "olid": {"train": 13240, "test_a": 860},
    "solid_test_2020": {"test_a": 5993, "test_c": 1546},
    "tweeteval_hate": {"train": 9000 - 7, "validation": 1000 - 1, "test": 2970},  # 8 blank texts, declared
    "davidson_hate_offensive": {"all": 24783},
    "latent_hatred": {"all": 21480 + 52},  # + stage-2 posts that match no stage-1 post
    "ethos": {"all": 998},
    "gab_hate_corpus": {"train": 22036, "test": 5510},
    "hateval_trial": {"trial": 100},
}


def test_real_shared_sources_row_counts(data_root):
    if not data_root.is_dir():
        pytest.skip(f"needs the shared datasets at {data_root} (TWEETGUARD_DATA_ROOT)")
    specs = load_sources(SHARED)
    assert sorted(s.name for s in specs) == sorted(REAL_COUNTS)
    for spec in specs:
        result = read_source(spec, data_root)
        assert not result.bad, (spec.name, [str(b) for b in result.bad[:3]])
        counts = {}
        for row in result.rows:
            if row.text.strip():
                part = row.subset or row.split or "all"
                counts[part] = counts.get(part, 0) + 1
        assert counts == REAL_COUNTS[spec.name], spec.name
