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
# validation (the values themselves are tracked under params:); MLflow logging; the progress lines training prints;
# the failures' types and what a failing stage prints.
NEVER_DEPS = {
    "src/genlab/__init__.py",
    "src/genlab/config.py",
    "src/genlab/tracking.py",
    "src/genlab/progress.py",
    "src/genlab/errors.py",
    "src/genlab/entry.py",
}
# Imported for code the stage does not run: render.py only draws the MLflow preview images of training.
NOT_RUN = {"train": {"src/genlab/render.py"}}

# Imported by genlab/__init__.py (whose imports are not followed): the CPU pins, set before torch loads. They decide
# which kernels run, so every stage depends on them.
EVERY_STAGE = {"src/genlab/cpu_pins.py"}
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def expand(value, variables: dict[str, str]):
    """dvc.yaml's ${...} interpolation, for the variables the stages use (${key}, ${item}, ${paths.*})."""
    if isinstance(value, str):
        return re.sub(r"\$\{([\w.]+)\}", lambda m: str(variables[m.group(1)]), value)
    if isinstance(value, list):
        return [expand(v, variables) for v in value]
    if isinstance(value, dict):
        return {expand(k, variables): expand(v, variables) for k, v in value.items()}
    return value


def expanded_stages() -> dict[str, dict]:
    """The stages as DVC runs them: each foreach stage once per model (train@gan, ...), ${...} filled in."""
    variables = {f"paths.{k}": v for k, v in PARAMS["paths"].items()}
    stages = {}
    for name, spec in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in spec:
            assert spec["foreach"] == "${models}", name
            for key, item in PARAMS["models"].items():
                stages[f"{name}@{key}"] = expand(spec["do"], {**variables, "key": key, "item": item})
        else:
            stages[name] = expand(spec, variables)
    return stages


STAGES = expanded_stages()


def kind_of(stage: str) -> str | None:
    return PARAMS["models"][stage.split("@")[1]] if "@" in stage else None


def py_files(directory: str) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (REPO / directory).rglob("*.py")}


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
    declared = set()
    for dep in spec["deps"]:
        if dep.startswith("src/"):
            declared |= py_files(dep) if (REPO / dep).is_dir() else {dep}
    imported = imported_closure(script)
    kind = kind_of(stage)
    if kind is not None and "src/genlab/registry.py" in imported:
        # genlab.registry imports the model's kind package at run time (importlib): the whole package is one dep,
        # with what its modules import.
        package = py_files(f"src/genlab/models/{kind}")
        imported |= package
        for module in package:
            imported |= imported_closure(module)
    expected = (imported | EVERY_STAGE) - NEVER_DEPS - NOT_RUN.get(stage.split("@")[0], set())
    assert declared - expected == set(), f"{stage}: stale deps {sorted(declared - expected)}"
    assert expected - declared == set(), f"{stage}: imported but not deps {sorted(expected - declared)}"


TRAINING = [s for s in STAGES if s.startswith("train@")]


def test_every_model_gets_its_train_render_and_evaluate_stages():
    for name in PARAMS["models"]:
        assert {f"train@{name}", f"render@{name}", f"identity@{name}", f"evaluate@{name}"} <= set(STAGES)


def test_model_files_in_dvc_yaml_are_where_the_code_writes_them():
    from genlab.config import FLOOR, load_params

    params = load_params(REPO / "params.yaml")
    paths = params.paths
    for name in params.models:
        train = STAGES[f"train@{name}"]
        outs = {*train["outs"], *(next(iter(m)) for m in train["metrics"]), *(next(iter(p)) for p in train["plots"])}
        assert outs == {str(paths.model(name)), str(paths.snapshots(name)), str(paths.summary(name)),
                        str(paths.history(name))}  # fmt: skip
        assert STAGES[f"render@{name}"]["plots"] == [str(paths.figures_of(name))]
        identity = STAGES[f"identity@{name}"]
        plots = [p if isinstance(p, str) else next(iter(p)) for p in identity["plots"]]
        assert plots == [str(paths.identity_of(name)), str(paths.identity_history(name))]
        assert [next(iter(m)) for m in identity["metrics"]] == [str(paths.identity_summary(name))]
        assert [next(iter(m)) for m in STAGES[f"evaluate@{name}"]["metrics"]] == [str(paths.evaluation(name))]
    assert [next(iter(m)) for m in STAGES["evaluate_floor"]["metrics"]] == [str(paths.evaluation(FLOOR))]


def test_training_stages_do_not_depend_on_the_evaluation_metrics():
    for stage in TRAINING:
        assert "src/genlab/metrics.py" not in STAGES[stage]["deps"]
        assert "src/genlab/diagnostics.py" in STAGES[stage]["deps"]


def test_no_stage_depends_on_another_kinds_code():
    for stage, spec in STAGES.items():
        for kind in ("gan", "vae"):
            if kind_of(stage) != kind:
                assert f"src/genlab/models/{kind}" not in spec["deps"], stage
    assert all(not d.startswith("src/genlab/models/") or d.endswith("classifier.py") or d.endswith("base.py")
               for d in STAGES["train_classifier"]["deps"])  # fmt: skip


def test_no_stage_depends_on_the_progress_lines_nor_training_on_the_classifiers_training():
    for stage, spec in STAGES.items():
        assert "src/genlab/progress.py" not in spec["deps"], stage  # an edit to what training prints reruns nothing
    for stage in TRAINING:
        assert "src/genlab/classifier_training.py" not in STAGES[stage]["deps"]
        assert "src/genlab/feature_extractor.py" in STAGES[stage]["deps"]  # they load it for the diagnostics
