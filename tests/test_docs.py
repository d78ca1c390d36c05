"""The documentation: README.md stays a short door, the MkDocs site builds strictly, and the facts the docs
state once (policy definitions, subcommands) are the ones the code holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.policies import DESCRIPTIONS, POLICIES
from training.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 200
PAGE_MAX_LINES = 400
EXPERIMENT_MAX_LINES = 80


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): " \
                                           "move the detail to a page under docs/"


def test_no_docs_page_is_too_long():
    long = {}
    for page in DOCS.rglob("*.md"):
        limit = EXPERIMENT_MAX_LINES if page.parent.name == "experiments" and page.name != "index.md" \
            else PAGE_MAX_LINES
        n = len(page.read_text(encoding="utf-8").splitlines())
        if n > limit:
            long[str(page.relative_to(ROOT))] = (n, limit)
    assert not long, f"pages over their limit (lines, limit): {long}"


def test_readme_links_point_at_files_that_exist_or_are_generated():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    generated = {"docs/reference/cli.md", "docs/reference/http.md"}  # docs/gen_reference.py writes them
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t}
    missing = sorted(t for t in targets if t and t not in generated and not (ROOT / t).exists())
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_cli_table_names_every_subcommand():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `tweetguard (\w+)", text, flags=re.M)
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(listed) == sorted(commands), "README.md's CLI table and training.cli's parser disagree"


def test_policies_page_states_the_code_definitions():
    """docs/policies.md's table is the policies of serving/policies.py, in order, word for word."""
    text = (DOCS / "policies.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|$", text, flags=re.M)
    assert [name for name, _ in rows] == list(POLICIES)
    assert dict(rows) == DESCRIPTIONS


def test_mkdocs_build_strict(tmp_path):
    """The site builds with every warning an error: broken links and anchors, pages missing from the nav, a
    missing snippet (data/README.md is included, not copied), a failing reference generator."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail(f"{mkdocs} not found: install the docs extra (make install)")
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    for page in ("policies", "data", "reference/cli", "reference/http", "experiments"):
        assert (site / page / "index.html").exists(), page
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "tweetguard evaluate" in cli and "--compare-to" in cli
    http = (site / "reference" / "http" / "index.html").read_text(encoding="utf-8")
    assert "/v1/moderations" in http and "/classify" in http
