"""Data layer: mapping, malformed input, dedup/leakage, splits, cache — on small fixture sources written here,
plus a check of the real shared files' row counts."""

import os
from pathlib import Path

import pytest
import yaml

from serving.policies import POLICIES
from training.config import ConfigError, DataConfig, repo_root
from training.data.prepare import DataError, prepare
from training.data.readers import read_label_table, read_source
from training.data.sources import load_sources
from training.data.splits import merge_labels

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


def test_train_share_samples_one_sources_train_rows_only(tmp_path):
    """data.train_share keeps a seeded share of one source's train rows (a learning curve, or a big source brought
    in by sampling); its validation and test rows and every other source stay whole; a name that is not a
    prepared source is refused."""
    cfg = write_sources(tmp_path, [TWEETS_SPEC, NOSPLIT_SPEC], base_files())
    full = prepare(cfg).dataset
    count = lambda ds, split, src: sum(r["source"] == src for r in ds[split])  # noqa: E731
    half = prepare(cfg.model_copy(update={"train_share": {"tw": 0.5}})).dataset
    assert count(half, "train", "tw") == round(count(full, "train", "tw") * 0.5)
    for split, src in (("train", "ns"), ("validation", "tw"), ("test", "tw"), ("validation", "ns")):
        assert count(half, split, src) == count(full, split, src)
    kept = {r["id"] for r in half["train"]}
    assert kept <= {r["id"] for r in full["train"]}
    with pytest.raises(ValueError, match=r"train_share names \['nope'\]"):
        prepare(cfg.model_copy(update={"train_share": {"nope": 0.5}}))
    with pytest.raises(ValueError, match="must be in"):
        DataConfig(train_share={"tw": 0})


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


# -- label-only sources (labels_for), split columns, id-hash test hold-out, the vulgar_functions reader ---------
OVERLAY_SPEC = {
    "name": "relabel", "description": "fixture: abusive labels for tw's tweets", "license": "CC-BY-NC-SA-4.0",
    "labels_for": "tw", "id_column": "id",
    "files": [{"path": "train.tsv", "subset": "train"}, {"path": "test.tsv", "subset": "test"}],
    "policies": {"abusive": {"columns": ["abuse"], "positive": ["EXP", "IMP"], "negative": ["NOTABU"]}},
}


def overlay_files(skip_train_id=None, extra_test=""):
    files = base_files()
    train_ids = [i for i in [*range(40), *range(100, 120)] if i != skip_train_id]
    # every OFF tweet (ids 100-119) is NOTABU except 100 (EXP); NOT tweets are NOTABU
    files["relabel/train.tsv"] = "id\tabuse\n" + "".join(f"{i}\t{'EXP' if i == 100 else 'NOTABU'}\n"
                                                        for i in train_ids)
    files["relabel/test.tsv"] = "id\tabuse\n900\tNOTABU\n901\tNOTABU\n" + extra_test
    return files


def test_label_only_source_replaces_the_rule_of_the_source_it_labels(tmp_path):
    tw = dict(TWEETS_SPEC, policies={**TWEETS_SPEC["policies"], "harassment": {
        "columns": ["a"], "positive": ["OFF"], "negative": ["NOT"]}})
    cfg = write_sources(tmp_path, [tw, OVERLAY_SPEC], overlay_files())
    prepared = prepare(cfg)
    rows = {r["id"]: r for split in prepared.dataset.values() for r in split}
    assert not any(r["source"] == "relabel" for r in rows.values())  # one row per tweet: nothing counted twice
    # OFF in tw, NOTABU in the label-only source: abusive 0, harassment still tw's own
    assert rows["tw:test/900"]["labels"][A] == 0 and rows["tw:test/900"]["labels"][H] == 1
    assert rows["tw:train/100"]["labels"][A] == 1 and rows["tw:train/101"]["labels"][A] == 0
    # both label sets stay in raw_label (published-comparable benchmarks read tw's own `a`)
    assert rows["tw:test/900"]["raw_label"] == "a=OFF;abuse=NOTABU"
    card = prepared.card.to_dict()
    assert card["sources"][1]["non_commercial"] and card["sources"][1]["labels_for"] == "tw"
    assert "**Non-commercial**" in prepared.card.markdown
    assert "exclude_licenses=[CC-BY-NC-SA-4.0]" in prepared.card.markdown
    # left out by license: tw's own rule again, and no non-commercial notice
    without = prepare(cfg.model_copy(update={"exclude_licenses": ["CC-BY-NC-SA-4.0"]}))
    rows = {r["id"]: r for split in without.dataset.values() for r in split}
    assert rows["tw:test/900"]["labels"][A] == 1 and "relabel" in without.card.to_dict()["excluded"]
    assert "Non-commercial" not in without.card.markdown
    # the validation carve is stratified by tw's own labels: the label-only source moves no row between splits
    assert all(sorted(prepared.dataset[s]["id"]) == sorted(without.dataset[s]["id"]) for s in prepared.dataset)


def test_exclude_restricted_leaves_out_every_non_commercial_and_research_only_source(tmp_path):
    """configs/permissive.yaml's choice, on tiny sources: whatever the license spelling, no restricted source is
    prepared, and a left-out label-only source restores the rules of the source it labels (said in the card)."""
    from training.data.sources import is_restricted

    research = dict(NOSPLIT_SPEC, name="rs", license="unverified:research-only")
    files = {**overlay_files(), "rs/all.csv": overlay_files()["ns/all.csv"]}
    cfg = write_sources(tmp_path, [TWEETS_SPEC, NOSPLIT_SPEC, OVERLAY_SPEC, research], files)
    everything = prepare(cfg).card.to_dict()
    assert [s["research_only"] for s in everything["sources"]] == [False, False, False, True]
    assert "**Research only**" in prepare(cfg).card.markdown
    permissive = prepare(cfg.model_copy(update={"exclude_restricted": True}))
    card = permissive.card.to_dict()
    assert [s["name"] for s in card["sources"]] == ["tw", "ns"]
    assert not any(is_restricted(s["license"]) for s in card["sources"])
    assert set(card["excluded"]) == {"relabel", "rs"}
    assert "data.exclude_restricted" in card["excluded"]["rs"]
    assert "tw keeps its own labels for abusive" in card["excluded"]["relabel"]
    rows = {r["id"]: r for split in permissive.dataset.values() for r in split}
    assert rows["tw:test/900"]["labels"][A] == 1 and not any(r["source"] == "rs" for r in rows.values())
    assert "Research only" not in permissive.card.markdown and "Non-commercial" not in permissive.card.markdown


def test_label_only_source_reports_missing_and_unmatched_ids(tmp_path):
    files = overlay_files(skip_train_id=7, extra_test="999\tEXP\n")
    cfg = write_sources(tmp_path, [TWEETS_SPEC, OVERLAY_SPEC], files)
    with pytest.raises(DataError) as e:
        prepare(cfg)
    assert "tw/train.tsv:9: id train/7 has no relabel label" in str(e.value)
    assert "relabel/test.tsv:4: id test/999 matches no tw row" in str(e.value)
    card = prepare(cfg.model_copy(update={"on_bad_rows": "skip"})).card.to_dict()
    assert card["cleaning"]["tw"]["bad_rows_skipped"] == 1 and card["cleaning"]["relabel"]["bad_rows_skipped"] == 1


def test_label_only_source_declaration_is_checked(tmp_path):
    cfg = write_sources(tmp_path, [TWEETS_SPEC, dict(OVERLAY_SPEC, labels_for="nope")], overlay_files())
    with pytest.raises(ConfigError, match="labels_for 'nope' is not a declared source"):
        prepare(cfg)


SPLITCOL_SPEC = {
    "name": "sc", "description": "fixture: the split is a column", "license": "CC0-1.0", "domain": "reddit+gab",
    "delimiter": ",", "id_column": "rid", "text_column": "text", "split_column": "split",
    "split_values": {"train": "train", "dev": "validation", "test": "test"},
    "text_replace": {"[USER]": "@USER", "[URL]": "URL"},
    "files": [{"path": "all.csv"}],
    "policies": {"violence": {"columns": ["cat"], "positive": ["1. threats"], "negative": ["2. derogation"],
                              "unknown": ["none"]}},
}


def test_split_column_and_text_replace(tmp_path):
    body = "rid,text,cat,split\n" + "".join(
        f"r{i},[USER] post number {i} [URL],{['none', '1. threats', '2. derogation'][i % 3]},"
        f"{['train', 'train', 'dev', 'test'][i % 4]}\n" for i in range(40))
    cfg = write_sources(tmp_path, [SPLITCOL_SPEC], {"sc/all.csv": body})
    ds = prepare(cfg).dataset
    assert [len(ds[s]) for s in ("train", "validation", "test")] == [20, 10, 10]
    assert set(ds["validation"]["subset"]) == {"dev"} and "sc:test/r3" in ds["test"]["id"]
    assert ds["test"][0]["text"] == "@USER post number 3 URL"
    cfg = write_sources(tmp_path, [SPLITCOL_SPEC], {"sc/all.csv": body + "r99,a new post,none,val\n"})
    with pytest.raises(DataError, match=r"sc/all.csv:42: unknown split split='val'"):
        prepare(cfg)


VULGAR_SPEC = {
    "name": "vf", "description": "fixture: vulgar words by function", "license": "none-stated",
    "reader": "vulgar_functions", "quoting": "none", "id_column": "tweet_id", "text_column": "tweet",
    "text_replace": {"<USER>": "@USER", "<URL>": "URL"}, "known_defects": {"mangled_id": 2},
    "test_holdout": {"fraction": 0.2, "seed": 7}, "validation_from_train": True, "files": [{"path": "v.tsv"}],
    "policies": {"abusive": {"columns": ["aggression"], "negative": ["0"], "unknown": ["1"]}},
}
VULGAR_HEADER = "tweet_id\tuser_id\ttweet\ttarget_word\tFunction\n"


def vulgar_rows(n=200):
    rows = [f"{1000 + i}\t1\t<USER> this is <b>damn</b> good number {i} &amp; more\tdamn\t{i % 5 + 1}"
            for i in range(n)]
    rows += ["5\t1\t<b>fuck</b> you and your <b>shit</b> <URL>\tfuck\t0",  # two words, one aggression
             "5\t1\t<b>fuck</b> you and your <b>shit</b> <URL>\tshit\t2",
             "8.86E+17\t1\tfirst <b>shitty</b> tweet\tshitty\t1",  # a mangled id shared by two tweets
             "8.86E+17\t1\tanother <b>hell</b> of a tweet\thell\t2"]
    return rows


def test_vulgar_functions_reader_merges_per_tweet(tmp_path):
    cfg = write_sources(tmp_path, [VULGAR_SPEC], {"vf/v.tsv": VULGAR_HEADER + "\n".join(vulgar_rows()) + "\n"})
    prepared = prepare(cfg)
    rows = {r["id"]: r for split in prepared.dataset.values() for r in split}
    assert len(rows) == 200 + 1 + 2
    assert rows["vf:5"]["text"] == "fuck you and your shit URL" and rows["vf:5"]["labels"][A] == -1
    assert rows["vf:5"]["raw_label"] == "aggression=1"
    assert rows["vf:1000"]["text"] == "@USER this is damn good number 0 & more"
    assert rows["vf:1000"]["labels"][A] == 0
    assert {rows["vf:8.86E+17~1"]["text"], rows["vf:8.86E+17~2"]["text"]} == {"first shitty tweet",
                                                                            "another hell of a tweet"}
    assert prepared.card.to_dict()["defects"]["vf"] == {"mangled_id": 2}
    # an undeclared mangled id or a function code outside 0-5 is a malformed row, never dropped silently
    bad = vulgar_rows() + ["77\t1\t<b>darn</b>\tdarn\t9"]
    cfg = write_sources(tmp_path, [dict(VULGAR_SPEC, known_defects={})],
                        {"vf/v.tsv": VULGAR_HEADER + "\n".join(bad)})
    with pytest.raises(DataError) as e:
        prepare(cfg)
    assert "vf/v.tsv:204: tweet id '8.86E+17' is not a number" in str(e.value)
    assert "vf/v.tsv:206: Function '9' is not one of 0-5" in str(e.value)


def test_id_hash_holdout_is_stable_and_kept_out_of_train_and_validation(tmp_path):
    rows = vulgar_rows()
    cfg = write_sources(tmp_path, [VULGAR_SPEC], {"vf/v.tsv": VULGAR_HEADER + "\n".join(rows) + "\n"})
    first = {s: set(d["id"]) for s, d in prepare(cfg).dataset.items()}
    assert 0.1 < len(first["test"]) / sum(map(len, first.values())) < 0.3
    assert not first["test"] & (first["train"] | first["validation"]) and first["validation"]
    # the same test part whatever the row order or data.seed (train/validation may move, test never)
    shuffled = rows[::-1]
    cfg2 = write_sources(tmp_path / "b", [VULGAR_SPEC], {"vf/v.tsv": VULGAR_HEADER + "\n".join(shuffled) + "\n"})
    again = {s: set(d["id"]) for s, d in prepare(cfg2.model_copy(update={"seed": 99})).dataset.items()}
    assert again["test"] == first["test"]
    assert again["train"] | again["validation"] == first["train"] | first["validation"]
    assert set(prepare(cfg).dataset["test"]["subset"]) == {"test"}


def test_non_commercial_license_marks_the_model_card():
    from serving.artifact import PolicyCard, SourceRef
    from training.data.sources import is_non_commercial
    from training.evaluation.modelcard import model_card_markdown

    assert is_non_commercial("CC-BY-NC-SA-4.0") and is_non_commercial("unverified:CC-BY-NC-4.0")
    assert not any(map(is_non_commercial, ["CC-BY-4.0", "none-stated", "CC0-1.0", "GPL-3.0", "MIT"]))
    refs = [SourceRef(name="olid", license="none-stated", content_hash="0" * 64),
            SourceRef(name="abuseval", license="CC-BY-NC-SA-4.0", content_hash="1" * 64)]
    assert "Non-commercial: trained on CC BY-NC-* data (abuseval)" in model_card_markdown(PolicyCard(sources=refs))
    assert "non-commercial" not in model_card_markdown(PolicyCard(sources=refs[:1])).lower()


def test_research_only_license_marks_the_model_card_beside_non_commercial():
    from serving.artifact import PolicyCard, SourceRef
    from training.data.sources import is_non_commercial, is_research_only, is_restricted
    from training.evaluation.modelcard import model_card_markdown

    assert all(map(is_research_only, ["research-only", "unverified:research-only", "Research_Only",
                                      "research only no-redistribution"]))
    assert not any(map(is_research_only, ["CC-BY-NC-SA-4.0", "none-stated", "MIT", "research", "only-research"]))
    assert not is_non_commercial("research-only")  # two flags, each for what it says
    assert is_restricted("research-only") and is_restricted("CC-BY-NC-4.0") and not is_restricted("MIT")
    refs = [SourceRef(name="olid", license="none-stated", content_hash="0" * 64),
            SourceRef(name="abuseval", license="CC-BY-NC-SA-4.0", content_hash="1" * 64),
            SourceRef(name="conan", license="research-only", content_hash="2" * 64)]
    text = model_card_markdown(PolicyCard(sources=refs))  # also the registry description (attach_model_card)
    assert "Non-commercial: trained on CC BY-NC-* data (abuseval)" in text
    assert "research use only, no redistribution (CONAN's license): conan: research-only" in text
    assert "data.exclude_restricted=true" in text
    assert "research only" not in model_card_markdown(PolicyCard(sources=refs[:2])).lower()


# Row counts of the real shared files, as their SOURCE.md files state them.
REAL_COUNTS = {
    "olid": {"train": 13240, "test_a": 860},
    "abuseval": {"train": 13240, "test_a": 860},  # label-only: every OLID train and test id
    "solid_test_2020": {"test_a": 5993, "test_c": 1546},
    "tweeteval_hate": {"train": 9000 - 7, "validation": 1000 - 1, "test": 2970},  # 8 blank texts, declared
    "davidson_hate_offensive": {"all": 24783},
    "latent_hatred": {"all": 21480 + 52},  # + stage-2 posts that match no stage-1 post
    "ethos": {"all": 998},
    "gab_hate_corpus": {"train": 22036, "test": 5510},
    "hateval_trial": {"trial": 100},
    "edos": {"train": 14000, "dev": 2000, "test": 4000},
    "vulgar_functions": {"all": 7794 + 2},  # + 2 tweets behind a spreadsheet-mangled id shared with another tweet
    "conan": {"conan": 2 * 6645, "multitarget_conan": 2 * 5003, "kn_grounded_cn": 2 * 195},  # two rows a pair
    "dialoconan": {"test": 16625 - 2},  # 2 blank turns, declared (empty_text)
    "hatexplain": {"train": 15383, "val": 1922, "test": 1924},  # before the near-duplicate drop
}


def test_real_shared_sources_row_counts(data_root):
    if not data_root.is_dir():
        pytest.skip(f"needs the shared datasets at {data_root} (TWEETGUARD_DATA_ROOT)")
    # shipped (data/contrast): tests/test_contrast.py; feedback (snapshots, not shared): tests/test_feedback_source.py
    specs = [s for s in load_sources(SHARED) if not s.shipped and s.reader != "feedback"]
    assert sorted(s.name for s in specs) == sorted(REAL_COUNTS)
    for spec in specs:
        if spec.labels_for:
            labels, result = read_label_table(spec, data_root / spec.name)
            parts = [key.split("/", 1)[0] for key in labels]
        else:
            result = read_source(spec, data_root)
            parts = [row.subset or row.split or "all" for row in result.rows if row.text.strip()]
        assert not result.bad, (spec.name, [str(b) for b in result.bad[:3]])
        counts = {}
        for part in parts:
            counts[part] = counts.get(part, 0) + 1
        assert counts == REAL_COUNTS[spec.name], spec.name
        declared = {k: v for k, v in spec.known_defects.items() if k != "empty_text"}  # empty_text: counted later
        assert all(result.defects.get(k) == v for k, v in declared.items()), spec.name


def test_real_olid_abusive_comes_from_abuseval(data_root, tmp_path):
    """OLID 90194 ("Go home you're drunk!!!") is OFF/TIN/IND in OLID but NOTABU in AbuseEval; test 15923 is
    OFF/TIN/OTH and NOTABU: abusive 0 from AbuseEval, harassment from OLID's targeting labels."""
    if not data_root.is_dir():
        pytest.skip(f"needs the shared datasets at {data_root} (TWEETGUARD_DATA_ROOT)")
    cfg = DataConfig(root=str(data_root), sources_file=str(SHARED), include=["olid", "abuseval"],
                     cache_dir=str(tmp_path / "cache"))
    rows = {r["id"]: dict(r, split=name) for name, split in prepare(cfg).dataset.items() for r in split}
    drunk = rows["olid:train/90194"]
    assert drunk["split"] == "train" and drunk["labels"][:2] == [0, 1] and "subtask_a=OFF" in drunk["raw_label"]
    assert rows["olid:test_a/15923"]["labels"][:2] == [0, 0]
    assert rows["olid:test_a/15923"]["raw_label"] == "abuse=NOTABU;subtask_a=OFF;subtask_b=TIN;subtask_c=OTH"
    assert not any(r["source"] == "abuseval" for r in rows.values())
    # without AbuseEval (a commercial release) OLID's own OFF/NOT rule, and the very same splits
    without = prepare(cfg.model_copy(update={"exclude_licenses": ["CC-BY-NC-SA-4.0"]})).dataset
    assert {r["id"]: r["labels"][:2] for r in without["train"]}["olid:train/90194"] == [1, 1]
    for split in without:
        assert sorted(without[split]["id"]) == sorted(r["id"] for r in rows.values() if r["split"] == split)


def test_real_vulgar_functions_holdout_is_fixed(data_root, tmp_path):
    if not data_root.is_dir():
        pytest.skip(f"needs the shared datasets at {data_root} (TWEETGUARD_DATA_ROOT)")
    cfg = DataConfig(root=str(data_root), sources_file=str(SHARED), include=["vulgar_functions"],
                     cache_dir=str(tmp_path / "cache"))
    ds = prepare(cfg).dataset
    ids = {s: set(d["id"]) for s, d in ds.items()}
    assert len(ids["test"]) == 1520 and not ids["test"] & (ids["train"] | ids["validation"])
    # pinned: the hash must not move
    assert "vulgar_functions:852903968409825283" in ids["train"] | ids["validation"]
    assert "vulgar_functions:456051241970573312" in ids["test"]
    other = prepare(cfg.model_copy(update={"seed": 5}))
    assert set(other.dataset["test"]["id"]) == ids["test"]


def test_a_test_only_source_binds_no_model():
    """A model's policy card lists the sources it is fit on (train or validation rows, or labels joined into such
    a source): a test-only research-only source (DIALOCONAN) evaluates it but does not restrict it."""
    from training.data.card import DataCard

    src = [{"name": n, "license": lic, "content_hash": "0" * 64, "research_only": "research" in lic,
            "non_commercial": "NC" in lic, "labels_for": lf}
           for n, lic, lf in (("olid", "none-stated", None), ("abuseval", "CC-BY-NC-SA-4.0", "olid"),
                              ("dialoconan", "research-only", None))]
    counts = [{"source": "olid", "split": "train", "rows": 10}, {"source": "olid", "split": "test", "rows": 5},
              {"source": "dialoconan", "split": "test", "rows": 7}]
    card = DataCard({"fingerprint": "f" * 64, "sources": src, "counts": counts})
    assert card.fitted_names == {"olid", "abuseval"}
    assert [s["name"] for s in card.fitted_sources] == ["olid", "abuseval"]
