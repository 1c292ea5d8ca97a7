"""The import contracts in pyproject.toml fail the build when a room reaches where it must not.

Each case copies the rooms to a temporary directory, adds one forbidden import there and runs `lint-imports`
(as `make lint` does), which must exit non-zero naming the broken contract. The unmodified copy must pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
ROOMS = CONFIG["root_packages"]
CONTRACT_NAMES = {contract["id"]: contract["name"] for contract in CONFIG["contracts"]}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_rooms(target: Path) -> Path:
    for room in ROOMS:
        shutil.copytree(ROOT / room, target / room, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def _add_import(tree: Path, room: str, statement: str) -> Path:
    """Append `statement` to the room's first module (not a package __init__), so the case survives moves."""
    module = next(p for p in sorted((tree / room).rglob("*.py")) if p.name != "__init__.py")
    module.write_text(module.read_text() + f"\n{statement}  # added by test_contracts\n")
    return module


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path, so it reads the copy, not the installed tree.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=tree, capture_output=True,
                          text=True, timeout=120, check=False)


def test_every_room_is_under_contract():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == set(ROOMS), "a new top-level package needs a place in [tool.importlinter]"


def test_the_tree_as_it_is_keeps_every_contract(tmp_path):
    result = _lint_imports(_copy_rooms(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACT_NAMES.values():
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize("room, statement, contract", [
    ("core", "import storage", "core-pure"),
    ("core", "import sqlalchemy", "core-pure"),
    ("core", "from starlette.responses import Response", "core-pure"),
    ("storage", "import bot", "rooms-independent"),
    ("ussd", "import gateways", "rooms-independent"),
    ("gateways", "import web", "web-is-root"),
    ("sandbox", "import core", "sandbox-alone"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, room, statement, contract):
    tree = _copy_rooms(tmp_path)
    module = _add_import(tree, room, statement)
    result = _lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert f"{CONTRACT_NAMES[contract]} BROKEN" in result.stdout
    dotted = ".".join(module.relative_to(tree).with_suffix("").parts)
    assert dotted in result.stdout  # the report names the offending module
