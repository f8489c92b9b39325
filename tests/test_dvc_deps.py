"""dvc.yaml's deps: each stage depends on the genlab modules its script imports, and on no other.

A missing dep means an edit that changes a stage's outputs would not rerun it; an extra one means an edit that
cannot change them reruns it (for the training stages, 100 epochs). The omissions below are deliberate and
listed with their reason, so that a new import is a decision, not an accident.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

# Imported everywhere but never shape a stage's outputs: the version string and the OpenMP policy; parameter
# validation (the values themselves are tracked under params:); MLflow logging; the progress lines training prints.
NEVER_DEPS = {"src/genlab/__init__.py", "src/genlab/config.py", "src/genlab/tracking.py", "src/genlab/progress.py"}
# Imported for code the stage does not run: render.py only draws the MLflow preview images of training.
NOT_RUN = {
    "train_gan": {"src/genlab/render.py"},
    "train_vae": {"src/genlab/render.py"},
}

# Imported by genlab/__init__.py (whose imports are not followed): the CPU pins, set before torch loads. They decide
# which kernels run, so every stage depends on them.
EVERY_STAGE = {"src/genlab/cpu_pins.py"}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def genlab_imports(path: Path) -> set[str]:
    """Repository paths of the genlab modules `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "genlab":
                continue
            base = REPO / "src" / Path(*name.split("."))
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.exists():
                    found.add(candidate.relative_to(REPO).as_posix())
    return found


def imported_closure(script: str) -> set[str]:
    """Modules `script` imports, directly or through others; not followed through NEVER_DEPS, whose own imports
    serve them (config.py imports data.py to validate dataset names)."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        for module in genlab_imports(REPO / todo.pop()):
            if module not in seen:
                seen.add(module)
                if module not in NEVER_DEPS:
                    todo.append(module)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_exactly_the_modules_it_runs(stage: str):
    spec = STAGES[stage]
    script = re.search(r"pipeline/\w+\.py", spec["cmd"]).group(0)
    assert script in spec["deps"], f"{stage}: its script {script} is not a dep"
    declared = {d for d in spec["deps"] if d.startswith("src/")}
    expected = (imported_closure(script) | EVERY_STAGE) - NEVER_DEPS - NOT_RUN.get(stage, set())
    assert declared - expected == set(), f"{stage}: stale deps {sorted(declared - expected)}"
    assert expected - declared == set(), f"{stage}: imported but not deps {sorted(expected - declared)}"


def test_training_stages_do_not_depend_on_the_evaluation_metrics():
    for stage in ("train_gan", "train_vae"):
        assert "src/genlab/metrics.py" not in STAGES[stage]["deps"]
        assert "src/genlab/diagnostics.py" in STAGES[stage]["deps"]


def test_no_training_stage_depends_on_another_models_code():
    others = {
        "train_classifier": ("gan", "vae"),
        "train_gan": ("vae",),
        "train_vae": ("gan",),
    }
    for stage, models in others.items():
        for model in models:
            assert f"src/genlab/models/{model}.py" not in STAGES[stage]["deps"], stage
            assert f"src/genlab/{model}_trainer.py" not in STAGES[stage]["deps"], stage


def test_no_stage_depends_on_the_progress_lines_nor_gan_and_vae_on_the_classifiers_training():
    for stage, spec in STAGES.items():
        assert "src/genlab/progress.py" not in spec["deps"], stage  # an edit to what training prints reruns nothing
    for stage in ("train_gan", "train_vae"):
        assert "src/genlab/classifier_training.py" not in STAGES[stage]["deps"]
        assert "src/genlab/feature_extractor.py" in STAGES[stage]["deps"]  # they load it for the diagnostics
