"""The CONAN family, DIALOCONAN and HateXplain (issue 34): their readers, the pair group split, the test-only
hold-out, the near-duplicate rule, opt-in sources and the shared-folder count — on tiny files written here, plus
one integration test over the real shared files (data/README.md, "CONAN and HateXplain")."""

import json

import pytest
import yaml

from training.config import ConfigError, DataConfig, repo_root
from training.data.prepare import DataError, prepare
from training.data.readers import read_source
from training.data.sources import load_sources, text_key

SIDES = {"abusive": {"columns": ["type"], "positive": ["HS"], "negative": ["CN"]},
         "harassment": {"columns": ["type"], "negative": ["CN"], "unknown": ["HS"]},
         "violence": {"columns": ["type"], "negative": ["CN"], "unknown": ["HS"]}}
CONAN = {"name": "conan", "description": "fixture pairs", "license": "research-only", "domain": "expert",
         "reader": "conan", "delimiter": ",", "group_split": "pairs",
         "files": [{"path": "CONAN.csv", "subset": "conan"}, {"path": "Multitarget-CONAN.csv", "subset": "mt"},
                   {"path": "multitarget_KN_grounded_CN.csv", "subset": "kn"}],
         "policies": SIDES}
DIALO = {"name": "dialoconan", "description": "fixture dialogues", "license": "research-only", "domain": "expert",
         "folder": "conan", "reader": "conan", "delimiter": ",",
         "files": [{"path": "DIALOCONAN.csv", "split": "test", "subset": "test"}], "policies": SIDES}
HATEX = {"name": "hatexplain", "description": "fixture", "license": "MIT", "domain": "tweets+gab",
         "reader": "hatexplain", "split_ids": "post_id_divisions.json",
         "files": [{"path": "train.csv", "split": "train", "subset": "train"},
                   {"path": "val.csv", "split": "validation", "subset": "val"},
                   {"path": "test.csv", "split": "test", "subset": "test"}],
         "policies": {"abusive": {"columns": ["label"], "positive": ["1"], "negative": ["0"]}}}
GAB = {"name": "gab", "description": "fixture Gab posts", "license": "CC-BY-4.0", "domain": "gab",
       "delimiter": ",", "text_column": "text",
       "files": [{"path": "train.csv", "split": "train"}, {"path": "test.csv", "split": "test"}],
       "policies": {"abusive": {"columns": ["hd"], "positive": ["1"], "negative": ["0"]}}}


def write(tmp_path, specs, files, **cfg):
    root = tmp_path / "datasets"
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": specs}))
    return DataConfig(root=str(root), sources_file=str(sources), cache_dir=str(tmp_path / "cache"), **cfg)


def rows_by_id(prepared):
    return {r["id"]: dict(r, split=split) for split, ds in prepared.dataset.items() for r in ds}


# -- CONAN ----------------------------------------------------------------------------------------------------
def conan_files(pairs=40):
    conan = "cn_id,hateSpeech,counterSpeech,hsType,hsSubType,cnType,age,gender,educationLevel\n" + "".join(
        f'{cid},"Muslims are a problem, number {n}","Reply {n}, calmly",Islamophobia,x,facts,30,f,BA\n'
        for n, cid in enumerate(["EN0001", "FR0001", "FR0001T1", "IT0002", "IT0002T1", "ENT1ST0003"]))
    multi = "INDEX,HATE_SPEECH,COUNTER_NARRATIVE,TARGET,VERSION\n" + "".join(
        f"{i},hate statement {i % 10},counter narrative {i},JEWS,V1\n" for i in range(pairs))
    kn = 'hate_speech,knowledge_sentence,counter_narrative,target\n"Women are weak.","A fact,\nover lines.",No.,WOMEN\n'
    return {"conan/CONAN.csv": conan, "conan/Multitarget-CONAN.csv": multi,
            "conan/multitarget_KN_grounded_CN.csv": kn}


def test_conan_reader_keeps_english_rows_and_yields_both_sides(tmp_path):
    prepared = prepare(write(tmp_path, [CONAN], conan_files()))
    rows = rows_by_id(prepared)
    conan = {i.split(":", 1)[1] for i in rows if i.startswith("conan:CONAN/")}
    # EN* or *T1 only: FR0001 and IT0002 (the French / Italian originals) are left out, and noted
    assert conan == {f"CONAN/{c}/{s}" for c in ("EN0001", "FR0001T1", "IT0002T1", "ENT1ST0003") for s in ("HS", "CN")}
    assert "CONAN.csv: 2 French / Italian rows left out" in prepared.card.markdown
    hs, cn = rows["conan:CONAN/EN0001/HS"], rows["conan:CONAN/EN0001/CN"]
    assert hs["labels"] == [1, -1, -1] and cn["labels"] == [0, 0, 0] and hs["raw_label"] == "type=HS"
    assert hs["text"] == "Muslims are a problem, number 0" and hs["subset"] == "conan"
    assert rows["conan:multitarget_KN_grounded_CN/2/CN"]["text"] == "No."  # KN: pair id = the file line
    # each hate statement of Multitarget appears 4 times: merged into one row per text
    assert prepared.card.to_dict()["cleaning"]["conan"]["merged_within_source"] == 30
    origins = {(o["origin"]) for o in prepared.card.to_dict()["origins"]}
    assert origins == {"CONAN.csv", "Multitarget-CONAN.csv", "multitarget_KN_grounded_CN.csv"}
    assert "| conan | train | Multitarget-CONAN.csv |" in prepared.card.markdown


def test_pair_group_split_never_straddles_splits(tmp_path):
    # 300 pairs: 60 hate statements x 5 replies, replies reused across statements (chains), paraphrases that
    # normalise to one key
    body = "INDEX,HATE_SPEECH,COUNTER_NARRATIVE,TARGET,VERSION\n"
    for i in range(300):
        hate = f"Hate statement {i // 5}" + ("!!" if i % 7 == 0 else "")  # '!!' normalises away
        body += f"{i},{hate},reply {i if i % 11 else i // 33},X,V1\n"
    spec = dict(CONAN, files=[{"path": "Multitarget-CONAN.csv"}])
    cfg = write(tmp_path, [spec], {"conan/Multitarget-CONAN.csv": body})
    prepared = prepare(cfg)
    split_of = {text_key(r["text"]): r["split"] for r in rows_by_id(prepared).values()}
    assert len(set(split_of.values())) == 3  # all three splits used
    # every pair's two texts, and so every connected component, lie in one split
    for line in body.splitlines()[1:]:
        _, hate, reply, _, _ = line.split(",")
        assert split_of[text_key(hate)] == split_of[text_key(reply)], line
    # seeded: the same again, another data.seed another assignment
    again = {text_key(r["text"]): r["split"] for r in rows_by_id(prepare(cfg, force=True)).values()}
    assert again == split_of
    other = prepare(cfg.model_copy(update={"seed": 7}))
    assert {text_key(r["text"]): r["split"] for r in rows_by_id(other).values()} != split_of


def test_group_split_declaration_is_checked(tmp_path):
    spec = dict(CONAN, files=[{"path": "Multitarget-CONAN.csv", "split": "train"}])
    with pytest.raises(ConfigError, match="group_split is for split-less sources"):
        prepare(write(tmp_path, [spec], conan_files()))


# -- DIALOCONAN -----------------------------------------------------------------------------------------------
def test_dialoconan_is_test_only_and_its_turns_leak_out_of_other_sources(tmp_path):
    dialo = "text,TARGET,dialogue_id,turn_id,type,source\n" + "".join(
        f'"Turn {t} of dialogue {d}, said",MIGRANTS,{d},{t},{"HS" if t % 2 == 0 else "CN"},session_1\n'
        for d in range(3) for t in range(4))
    files = conan_files() | {"conan/DIALOCONAN.csv": dialo}
    # a Multitarget pair whose reply is a DIALOCONAN turn (re-punctuated): removed from train / validation
    files["conan/Multitarget-CONAN.csv"] += "99,another hate statement,TURN 1 of dialogue 2 said!,X,V1\n"
    prepared = prepare(write(tmp_path, [CONAN, DIALO], files))
    rows = rows_by_id(prepared)
    dialogue = {i: r for i, r in rows.items() if r["source"] == "dialoconan"}
    assert len(dialogue) == 12 and {r["split"] for r in dialogue.values()} == {"test"}
    assert rows["dialoconan:2:0"]["labels"] == [1, -1, -1] and rows["dialoconan:2:1"]["labels"] == [0, 0, 0]
    leaked = rows.get("conan:Multitarget-CONAN/99/CN")
    cleaning = prepared.card.to_dict()["cleaning"]["conan"]
    if leaked is None:  # its component went to train or validation: the copy of the test turn is removed
        assert cleaning.get("leak_removed_from_train", 0) + cleaning.get("leak_removed_from_validation", 0) == 1
    else:  # its component went to test: kept (test parts are never altered), counted as a test duplicate
        assert leaked["split"] == "test" and prepared.card.to_dict()["test_duplicates_kept"] == 1
    # the same leak with the pair pinned in train: a plain train source
    plain = {"name": "tw", "description": "fixture", "license": "MIT", "delimiter": ",",
             "files": [{"path": "t.csv", "split": "train"}],
             "policies": {"abusive": {"columns": ["a"], "positive": ["1"], "negative": ["0"]}}}
    files = {"conan/DIALOCONAN.csv": dialo, "tw/t.csv": "text,a\nturn 0 of dialogue 1 said,1\nsomething else,0\n"}
    prepared = prepare(write(tmp_path / "b", [DIALO, plain], files))
    assert prepared.dataset["train"]["text"] == ["something else"]
    assert prepared.card.to_dict()["cleaning"]["tw"]["leak_removed_from_train"] == 1


# -- HateXplain -----------------------------------------------------------------------------------------------
def hatexplain_files(extra_train=""):
    train = ("id,post,label,target\n"
             "1_twitter,<user> <user> hello , there , <number> times <url>,0,None\n"
             "2_gab,they are <censored> and <happy> at <percent>,1,African\n"
             "3_twitter,plain post,1,Other\n") + extra_train
    return {"hatexplain/train.csv": train,
            "hatexplain/val.csv": "id,post,label,target\n4_gab,a validation post,0,None\n",
            "hatexplain/test.csv": "id,post,label,target\n5_twitter,a test post,1,Women\n",
            "hatexplain/post_id_divisions.json": json.dumps(
                {"train": ["1_twitter", "2_gab", "3_twitter", "7_reddit", "9_gab"], "val": ["4_gab", "6_gab"],
                 "test": ["5_twitter"]})}


def test_hatexplain_reader_splits_on_first_and_last_two_commas_and_replaces_placeholders(tmp_path):
    prepared = prepare(write(tmp_path, [HATEX], hatexplain_files()))
    rows = rows_by_id(prepared)
    assert rows["hatexplain:train/1_twitter"]["text"] == "@USER @USER hello , there , number times URL"
    assert rows["hatexplain:train/2_gab"]["text"] == "they are censored and happy at percent"
    assert rows["hatexplain:train/2_gab"]["labels"] == [1, -1, -1]
    assert rows["hatexplain:train/1_twitter"]["labels"] == [0, -1, -1]
    assert rows["hatexplain:val/4_gab"]["split"] == "validation" and rows["hatexplain:val/4_gab"]["subset"] == "val"
    assert rows["hatexplain:test/5_twitter"]["split"] == "test"
    card = prepared.card.to_dict()
    assert {(o["split"], o["origin"]): o["rows"] for o in card["origins"]} == {
        ("train", "twitter"): 2, ("train", "gab"): 1, ("validation", "gab"): 1, ("test", "twitter"): 1}
    assert "3 ids of post_id_divisions.json have no row" in prepared.card.markdown


@pytest.mark.parametrize("line, reason", [
    ("7_twitter,too few commas", "expected id,post,label,target (split on the first comma and the last two)"),
    ("7_reddit,a post,1,None", "id '7_reddit' does not end in _twitter or _gab"),
    ("6_gab,in the val list,1,None", "id 6_gab is in the 'val' list of post_id_divisions.json, not 'train'"),
    ("8_gab,in no list,1,None", "id 8_gab is in no list of post_id_divisions.json, not 'train'"),
    ("2_gab,again,1,None", "duplicate id 2_gab"),
    ("9_gab,a post,maybe,None", "unmapped abusive label label='maybe'"),
])
def test_hatexplain_malformed_rows_name_file_and_line(tmp_path, line, reason):
    cfg = write(tmp_path, [HATEX], hatexplain_files(extra_train=line + "\n"))
    with pytest.raises(DataError) as e:
        prepare(cfg)
    assert f"hatexplain/train.csv:5: {reason}" in str(e.value)
    assert prepare(cfg.model_copy(update={"on_bad_rows": "skip"})).card.to_dict()["cleaning"]["hatexplain"][
        "bad_rows_skipped"] == 1


def test_hatexplain_near_duplicates_of_gab_are_dropped(tmp_path):
    words = "the quick brown fox jumps over the lazy dog and then some more words here"
    gab_train = "text,hd\n" + "".join(f'"{t}",0\n' for t in [
        "An EXACT copy, of a gab post!",  # equal text key
        words,  # similar: same first 8 words, Jaccard 14/15 >= 0.8
        "one two three four five six seven eight a b c d e f g h",  # same first 8 words, Jaccard 8/24 < 0.8
    ]) + "".join(f"filler post {i},0\n" for i in range(20))
    extra = ("10_gab,an exact copy of a gab post,1,None\n"
             f"11_gab,{words} extra,1,None\n"
             "12_gab,one two three four five six seven eight nine,0,None\n")
    files = hatexplain_files(extra) | {"gab/train.csv": gab_train, "gab/test.csv": "text,hd\ngab test post,1\n"}
    files["hatexplain/post_id_divisions.json"] = json.dumps(
        {"train": ["1_twitter", "2_gab", "3_twitter", "10_gab", "11_gab", "12_gab"], "val": ["4_gab"],
         "test": ["5_twitter"]})
    spec = dict(HATEX, near_duplicates_of={"of": "gab", "prefix_words": 8, "jaccard": 0.8})
    cfg = write(tmp_path, [spec, GAB], files)
    prepared = prepare(cfg)
    ids = set(rows_by_id(prepared))
    assert "hatexplain:train/12_gab" in ids and not {"hatexplain:train/10_gab", "hatexplain:train/11_gab"} & ids
    card = prepared.card.to_dict()
    assert card["cleaning"]["hatexplain"]["near_duplicates_dropped"] == 2
    assert card["near_duplicates"]["hatexplain"]["equal"] == 1 and card["near_duplicates"]["hatexplain"]["similar"] == 1
    assert "2 near-duplicates of gab dropped" in prepared.card.markdown
    # the rule holds when the run leaves the Gab source out (the same HateXplain rows in every run)
    without = prepare(cfg.model_copy(update={"exclude": ["gab"]}))
    assert {i for i in rows_by_id(without) if i.startswith("hatexplain")} == {i for i in ids if i.startswith("hatexplain")}


# -- opt-in sources and the shared-folder count ---------------------------------------------------------------
def test_opt_in_sources_are_used_only_when_named(tmp_path):
    files = hatexplain_files() | conan_files()
    cfg = write(tmp_path, [dict(HATEX, opt_in=True), CONAN], files)
    default = prepare(cfg)
    assert set(default.dataset["train"]["source"]) == {"conan"}
    assert default.card.to_dict()["excluded"]["hatexplain"] == "opt-in, not in data.opt_in"
    named = prepare(cfg.model_copy(update={"opt_in": ["hatexplain"]}))
    assert set(named.dataset["train"]["source"]) == {"conan", "hatexplain"}
    with pytest.raises(ConfigError, match="data.opt_in: 'hatexplian' is not declared"):
        prepare(cfg.model_copy(update={"opt_in": ["hatexplian"]}))
    with pytest.raises(ConfigError, match="data.opt_in: 'conan' is not an opt-in source"):
        prepare(cfg.model_copy(update={"opt_in": ["conan"]}))


def test_the_card_counts_declared_shared_folders(tmp_path):
    files = hatexplain_files() | conan_files() | {"conan/DIALOCONAN.csv": "text,TARGET,dialogue_id,turn_id,type\n"
                                                  "a turn,X,0,0,HS\n"}
    files |= {f"{name}/SOURCE.md": "# a source\n" for name in ("conan", "hatexplain", "newcomer")}
    files["no_source_md/x.csv"] = "a\n"
    prepared = prepare(write(tmp_path, [HATEX, DIALO], files))
    assert prepared.card.to_dict()["shared_coverage"] == {"shared": 3, "declared": 2, "undeclared": ["newcomer"]}
    assert "Shared datasets: 2 of 3 shared sources declared (not declared: newcomer)." in prepared.card.markdown


# -- the real shared files ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_real_conan_dialoconan_hatexplain_counts(data_root, tmp_path):
    """Row counts against the SOURCE.md files: CONAN EN+T1 6,645 pairs, Multitarget 5,003, KN 195 (two rows a
    pair); DIALOCONAN 16,625 turns; HateXplain 15,383 / 1,922 / 1,924 before the near-duplicate drop."""
    if not (data_root / "conan").is_dir() or not (data_root / "hatexplain").is_dir():
        pytest.skip(f"needs the shared datasets (conan, hatexplain) at {data_root} (TWEETGUARD_DATA_ROOT)")
    specs = {s.name: s for s in load_sources(repo_root() / "data" / "sources.yaml")}
    counts = {}
    for name in ("conan", "dialoconan", "hatexplain"):
        result = read_source(specs[name], data_root)
        assert not result.bad, (name, [str(b) for b in result.bad[:3]])
        for row in result.rows:
            part = (name, row.subset, row.fields.get("type", row.fields.get("label")))
            counts[part] = counts.get(part, 0) + 1
    pairs = {sub: counts[("conan", sub, "HS")] for sub in ("conan", "multitarget_conan", "kn_grounded_cn")}
    assert pairs == {"conan": 6645, "multitarget_conan": 5003, "kn_grounded_cn": 195}
    assert all(counts[("conan", sub, "CN")] == n for sub, n in pairs.items())
    assert counts[("dialoconan", "test", "HS")] == 8314 and counts[("dialoconan", "test", "CN")] == 8311
    hx = {sub: counts[("hatexplain", sub, "0")] + counts[("hatexplain", sub, "1")] for sub in ("train", "val", "test")}
    assert hx == {"train": 15383, "val": 1922, "test": 1924}
    assert (counts[("hatexplain", "train", "0")], counts[("hatexplain", "train", "1")]) == (6251, 9132)
