"""pyproject.toml declares what src/ needs: `pip install .` in a clean environment gives a working genlab."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

import yaml

from .conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports() -> dict[str, str]:
    """Top-level module -> the first src/ file that imports it, for modules neither genlab's nor the stdlib's."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("genlab", "__future__"):
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_of_src_is_a_declared_dependency():
    declared = {normalise(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in PYPROJECT["project"]["dependencies"]}
    provided_by = packages_distributions()
    imports = third_party_imports()
    assert {"torch", "torchmetrics", "mlflow", "PIL"} <= set(imports)  # the scan sees what src/ really imports
    missing = {
        module: where
        for module, where in imports.items()
        if not {normalise(d) for d in provided_by.get(module, [module])} & declared
    }
    assert missing == {}, f"imported by src/ but not in pyproject.toml's dependencies: {missing}"


def test_the_version_is_written_once():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "genlab.__version__"}


def test_pre_commit_runs_what_make_lint_runs():
    makefile = (REPO / "Makefile").read_text()
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, flags=re.M).group(1)
    commands = [line.strip() for line in lint.splitlines()]
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    entries = " ; ".join(h["entry"].replace(".venv/bin/", "") for h in hooks)
    for command in commands:
        assert command.replace("cd tools/actionlint && ", "") in entries or command in entries, command
