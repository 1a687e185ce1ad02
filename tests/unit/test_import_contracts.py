"""The import contracts in pyproject.toml ``[tool.importlinter]`` hold (import-linter, on grimp).

* layers ``serve_apps → deployments → pipelines → common``: a lower layer never imports a higher one
  (``common`` is infrastructure and domain logic, usable without Ray Serve or the HTTP layer);
* no import cycle between sibling modules or packages at any depth, deferred imports included (grimp
  reads imports inside functions too, so a cycle cannot be hidden by moving an import into one);
* only ``common.knowledge.vectorstore`` imports a Qdrant library.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_contracts_are_declared() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    kinds = {contract["type"] for contract in config["contracts"]}
    assert {"layers", "acyclic_siblings", "forbidden"} <= kinds
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    assert layers["layers"] == ["serve_apps", "deployments", "pipelines", "common"]


def test_import_contracts_kept() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
