"""Entry points import genlab before torch, so OpenMP's wait policy is set before libgomp loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

ENTRY_POINTS = sorted((REPO / "pipeline").glob("*.py")) + [REPO / "bench" / "train_speed.py"]


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: p.name)
def test_genlab_is_imported_before_anything_that_loads_torch(path: Path):
    modules = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            modules += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
    third_party = [m for m in modules if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"]
    assert third_party[0] == "genlab", f"{path.name}: import genlab before {third_party[0]}"


def test_importing_genlab_sets_a_passive_wait_policy_unless_the_user_chose():
    code = "import genlab, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_every_pipeline_script_has_main():
    for path in (REPO / "pipeline").glob("*.py"):
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), path.name
