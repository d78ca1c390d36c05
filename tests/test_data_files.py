"""Every dataset fact under data/ that code reads loads through its own loader, and the paths they moved from
(configs/datasets.yaml, configs/identity_terms.yaml) still work, with a warning that names the new file."""

import hashlib
import subprocess
import sys
import warnings

import pytest
import yaml

from training.config import MOVED_DATA_FILES, Config, ConfigError, DataConfig, EvalConfig, load_config, repo_root
from training.data.sources import load_sources
from training.evaluation.behaviour import load_suite
from training.data.identity import load_term_lists
from training.evaluation.published import (
    BENCHMARKS,
    NOT_PUBLISHED,
    PUBLISHED,
    load_published,
    published_best,
    published_results,
)

REPO = repo_root()
DATA = REPO / "data"
# data/<file> -> the loader that code reads it with.
DATA_FILES = {"sources.yaml": load_sources, "identity_terms.yaml": load_term_lists,
              "slur_swear_terms.yaml": load_term_lists, "published.yaml": load_published,
              "behaviour_suite.yaml": load_suite}
# Frozen before any run that is measured with them (data/README.md): a change must be a reviewed decision.
FROZEN = {"slur_swear_terms.yaml": "e263a4c921c57ef97e504d756a0fead838e7ec84b955bccba7f64f7f2859c890"}
KEYS = {"configs/datasets.yaml": "data.sources_file", "configs/identity_terms.yaml": "evaluation.identity_terms"}


@pytest.mark.parametrize("name", sorted(DATA_FILES))
def test_data_file_loads_with_its_loader(name):
    assert DATA_FILES[name](DATA / name)


def test_every_data_file_is_covered():
    shipped = {p.name for p in DATA.iterdir() if p.is_file() and p.name != "README.md"}
    assert shipped == set(DATA_FILES), "a file under data/ without a loader test"


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_frozen_data_files_are_unchanged(name):
    digest = hashlib.sha256((DATA / name).read_bytes()).hexdigest()
    assert digest == FROZEN[name], f"data/{name} was frozen (data/README.md); a change is a new decision: say so "\
                                   "there, re-measure what it defines, then update the pin"


def test_config_default_names_the_slur_swear_list():
    assert Config().evaluation.slur_swear_terms == "data/slur_swear_terms.yaml"


def test_config_defaults_are_the_data_files():
    cfg = Config()
    assert (cfg.data.sources_file, cfg.evaluation.identity_terms) == ("data/sources.yaml", "data/identity_terms.yaml")
    assert set(MOVED_DATA_FILES.values()) == {cfg.data.sources_file, cfg.evaluation.identity_terms}
    assert all((REPO / new).is_file() and not (REPO / old).exists() for old, new in MOVED_DATA_FILES.items())


# -- published results ----------------------------------------------------------------------------------------
def test_every_benchmark_finds_its_published_row():
    table = published_results()
    for bench in BENCHMARKS:
        if bench.published_row is None:  # nothing published for this variant: the report and the note say so
            assert published_best(bench, table) == (None, NOT_PUBLISHED)
            assert "no published" in bench.note or bench.metric == "recall", bench.name
            continue
        assert bench.published_row in table, f"{bench.name}: no row {bench.published_row!r} in {PUBLISHED}"
        best, status = published_best(bench, table)
        assert best is not None and 0 < best < 1 and status, bench.name


def test_published_values_are_the_documented_numbers():
    rows = {r.benchmark: r for r in load_published().results}
    assert rows["TweetEval hate"].values == [0.523]  # TweetEval's 52.3 %, on the 0-1 scale
    assert rows["OffensEval-2019 B / C"].values == [0.755, 0.66]
    assert rows["OffensEval-2020 C"].approximate and not rows["OffensEval-2020 A"].approximate
    abuse_eval = dict(zip(rows["AbuseEval"].systems, rows["AbuseEval"].values))
    assert abuse_eval == {"BERT-base": 0.727, "HateBERT": 0.765}
    abuseval = next(b for b in BENCHMARKS if b.published_row == "AbuseEval")
    assert published_best(abuseval, published_results())[0] == 0.765  # compared with the best (HateBERT)


ROW = {"benchmark": "X", "test_set": "X test", "metric": "macro-F1", "values": [0.5], "source": "s", "status": "s"}


@pytest.mark.parametrize("change, error", [
    ({"value": 0.5}, "unknown config key 'results.0.value'"),
    ({"values": [52.3]}, "less than or equal to 1"),
    ({"values": [-0.1]}, "greater than or equal to 0"),
    ({"values": []}, "at least 1 item"),
    ({"systems": ["a", "b"]}, "2 systems for 1 values"),
    ({"source": None}, "source"),
], ids=["extra key", "percent", "negative", "no values", "systems", "no source"])
def test_published_schema_is_strict(tmp_path, change, error):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"results": [{**ROW, **change}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=error) as e:
        load_published(path)
    assert str(path) in str(e.value)


def test_published_rows_are_unique(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"results": [ROW, ROW]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="more than once"):
        load_published(path)


# -- the deprecated paths -------------------------------------------------------------------------------------
@pytest.mark.parametrize("old", sorted(MOVED_DATA_FILES))
@pytest.mark.parametrize("form", ["as given", "dot", "absolute"])
def test_old_path_reads_the_new_file_with_a_warning(monkeypatch, old, form):
    monkeypatch.chdir(REPO)
    given = {"as given": old, "dot": f"./{old}", "absolute": str(REPO / old)}[form]
    expected = {"as given": MOVED_DATA_FILES[old], "dot": MOVED_DATA_FILES[old],
                "absolute": str(REPO / MOVED_DATA_FILES[old])}[form]
    key = KEYS[old]
    with pytest.warns(FutureWarning, match=rf"{key}=.*{old} is deprecated: the file moved to {expected}") as rec:
        cfg = load_config(None, [f"{key}={given}"])
    assert len(rec) == 1
    section, field = key.split(".")
    assert getattr(getattr(cfg, section), field) == expected and (REPO / expected).is_file()


@pytest.mark.parametrize("old", sorted(MOVED_DATA_FILES))
def test_old_path_in_a_config_file_and_by_assignment(tmp_path, monkeypatch, old):
    monkeypatch.chdir(REPO)
    section, field = KEYS[old].split(".")
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({section: {field: old}}), encoding="utf-8")
    with pytest.warns(FutureWarning, match=KEYS[old]):
        assert getattr(getattr(load_config(config), section), field) == MOVED_DATA_FILES[old]
    cfg = Config()
    with pytest.warns(FutureWarning, match=KEYS[old]):
        setattr(getattr(cfg, section), field, old)
    assert getattr(getattr(cfg, section), field) == MOVED_DATA_FILES[old]


def test_other_paths_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "datasets.yaml").write_text("sources: []\n")  # someone's own file, still there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in ("configs/datasets.yaml", "data/datasets.yaml", "datasets.yaml", "my/identity_terms.yaml"):
            assert DataConfig(sources_file=path).sources_file == path
            assert EvalConfig(identity_terms=path).identity_terms == path


def test_cli_users_see_the_warning():
    out = subprocess.run([sys.executable, "-m", "training.cli", "config", "--config", "configs/quick.yaml", "show",
                          "data.sources_file=configs/datasets.yaml"], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert ("FutureWarning: data.sources_file=configs/datasets.yaml is deprecated: the file moved to "
            "data/sources.yaml") in out.stderr
    assert "sources_file: data/sources.yaml" in out.stdout
