"""The code's layering, as contracts that run in `make test`.

1. import-linter's contracts in pyproject.toml (`[tool.importlinter]`): `serving` never imports `training`, and
   `training`'s stages import only the stages before them (imports inside functions included).
2. No private name (leading underscore) is imported from another module of `training` or `serving`: what a module
   shares is public, so the seams between modules stay visible.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "serving")


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.is_file(), f"{lint_imports} missing: install the dev extra (import-linter)"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"lint-imports failed:\n{done.stdout}\n{done.stderr}"


def private_imports(path: Path) -> list[str]:
    """`from <training|serving>... import _name` lines of one file, as "file:line: module._name"."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            out += [f"{path.relative_to(REPO)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_")]
    return out


def test_no_private_names_imported_across_modules() -> None:
    found = [line for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
             for line in private_imports(path)]
    assert not found, "private names imported from another module (make them public or move them):\n" + "\n".join(found)
