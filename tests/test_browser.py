"""The MLflow UI as a user sees it: the real `mlflow server` on loopback over a store that a real `dvc repro`
filled, driven by headless Chromium (Debian's `chromium`, through Playwright). Saves the screenshots the README
shows when GENLAB_SCREENSHOTS names a directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from genlab.__main__ import experiment_page
from genlab.tracking import Tracker, mlflow_server

from .conftest import REPO, bin_path, make_project, tiny_params
from .test_pipeline import run, stage_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test-e2e` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI and this machine run as root in a container, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_the_run_list_tells_runs_apart_and_a_run_opens_on_its_final_images(tmp_path, tiny_mirror, browser):
    mirror, sha = tiny_mirror
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2, models=("gan", "cgan")))
    env = stage_env(mirror)
    run([bin_path("dvc"), "repro"], project, env)

    tracker = Tracker(f"sqlite:///{project / 'mlflow.db'}", "genlab", root=project)
    trained = tracker.runs_frame("tags.`genlab.stage` = 'train'")
    names = sorted(trained["tags.mlflow.runName"])
    assert len(names) == 2 and len(set(names)) == 2
    shots = Path(os.environ["GENLAB_SCREENSHOTS"]) if os.environ.get("GENLAB_SCREENSHOTS") else None

    with mlflow_server(tracker.tracking_uri, cwd=project) as url:
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(experiment_page(url, tracker.experiment.experiment_id))
        for name in names:  # each training run by its own name, in the model-training view
            page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
        assert page.get_by_role("link", name="Models").count() >= 1  # the model-training sidebar, not GenAI's
        if shots:
            page.screenshot(path=shots / "mlflow_runs.png")

        cgan = trained[trained["tags.genlab.model"] == "cgan"].iloc[0]
        run_page = f"{url}/#/experiments/{tracker.experiment.experiment_id}/runs/{cgan['run_id']}/model-metrics"
        page.goto(f"{run_page}?workflowType=machine_learning")
        # The card of the final grid opens at its one step, the last epoch, with the image shown.
        final = page.locator("img[src*='cgan~final%2Bstep%2B2%2B']")
        final.first.wait_for(state="visible", timeout=90_000)
        assert final.first.evaluate("img => img.complete && img.naturalWidth > 0")
        if shots:
            page.screenshot(path=shots / "mlflow_run.png")

        # `genlab plots`: DVC's plots page with vega inlined. Offline (every request off the machine is refused
        # here), its line charts still draw and every figure of a diff is on the page.
        shutil.copytree(REPO / "tools" / "dvc-plots", project / "tools" / "dvc-plots",
                        ignore=shutil.ignore_patterns("node_modules"))  # fmt: skip
        run([bin_path("genlab"), "plots"], project, env)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        blocked: list[str] = []

        def local_only(route) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", local_only)
        page.goto((project / "build" / "plots" / "index.html").as_uri())
        charts = page.locator(".vega-embed svg, .vega-embed canvas")
        charts.first.wait_for(timeout=30_000)
        assert charts.count() >= 2 and blocked == []  # both models' curves, and nothing fetched from a CDN
        grid = page.locator("img[src*='epoch_002']").first
        assert grid.evaluate("img => img.getBoundingClientRect().right <= window.innerWidth")  # not clipped
        if shots:
            page.screenshot(path=shots / "dvc_plots.png")

        # `genlab plots HEAD`: a diff of the committed run and a re-render at another scale. Each revision's
        # figures are on the page, none past its right edge (DVC's own page put the second revision off-screen).
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
        run(["git", "add", "-A"], project, env)
        run([*git, "commit", "-qm", "a run"], project, env)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["render"]["scale"] = 3
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run([bin_path("dvc"), "repro"], project, env)
        run([bin_path("genlab"), "plots", "HEAD"], project, env)
        page.goto((project / "build" / "plots" / "index.html").as_uri())
        page.locator(".vega-embed svg, .vega-embed canvas").first.wait_for(timeout=30_000)
        grids = page.locator("img[src*='epoch_002']")
        assert grids.count() >= 4  # two models, two revisions
        edges = grids.evaluate_all("imgs => imgs.map(i => i.getBoundingClientRect().right)")
        assert max(edges) <= page.evaluate("window.innerWidth"), edges
        assert blocked == []
