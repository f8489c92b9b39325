"""End to end: the real `dvc repro` on a tiny profile in a scratch copy of the repository, and the
kill -9 / resume guarantee of the training stages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from genlab.config import FLOOR, load_params

from .conftest import MNIST_MIRROR, bin_path, make_idx_files, make_project, tiny_params

pytestmark = pytest.mark.slow


def stage_env(mirror: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GENLAB_", "MLFLOW_"))}
    env.update(
        GENLAB_DATA_MIRROR=str(mirror),
        GENLAB_OFFLINE="1",
        GENLAB_THREADS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mlflow_runs(project: Path):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("genlab")
    assert exp is not None, "no genlab experiment in the project's mlflow.db"
    return exp, mlflow.search_runs(experiment_ids=[exp.experiment_id])


def test_dvc_repro_end_to_end(tmp_path, tiny_mirror):
    mirror, sha = tiny_mirror
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2))
    env = stage_env(mirror)
    dvc = bin_path("dvc")
    run([dvc, "repro"], project, env)

    params = load_params(project / "params.yaml")
    p, names = params.paths, list(params.models)
    assert names == ["gan", "vae", "cgan", "cvae"]
    for name in names:
        for path in (p.model(name), p.snapshots(name), p.history(name), p.summary(name), p.evaluation(name)):
            assert (project / path).stat().st_size > 0, path
        figures = sorted(f.name for f in (project / p.figures_of(name)).iterdir())
        assert figures == ["epoch_001.png", "epoch_002.png", "progression.png"], name
    assert (project / p.evaluation(FLOOR)).stat().st_size > 0

    # dvc metrics show reads the evaluations and the final training metrics.
    shown = json.loads(run([dvc, "metrics", "show", "--json"], project, env).stdout)
    (workspace,) = shown.values()  # keyed "" (the workspace) by DVC 3.67
    files = workspace["data"]
    evaluation = {name: files[str(p.evaluation(name))]["data"] for name in [*names, FLOOR]}
    for gan in ("gan", "cgan"):
        assert 0 <= evaluation[gan]["discriminator_accuracy"] <= 1
    for vae in ("vae", "cvae"):
        assert evaluation[vae]["mse_per_pixel"] > 0 and evaluation[vae]["test_loss"] > 0
    for conditional in ("cgan", "cvae"):  # the conditional metrics, for conditional models only
        assert (
            0 <= evaluation[conditional]["conditional_accuracy_min"] <= evaluation[conditional]["conditional_accuracy"]
        )
        assert len(evaluation[conditional]["fid_by_class"]) == 10
        assert "conditional_accuracy" in files[str(p.summary(conditional))]["data"]
    assert "conditional_accuracy" not in evaluation["gan"] and "conditional_accuracy" not in evaluation[FLOOR]
    assert files[str(p.summary("gan"))]["data"]["epoch"] == 2
    # The plots resolve (CSV histories with x = epoch, each model's figures).
    plots = json.loads(run([dvc, "plots", "show", "--json"], project, env).stdout)
    plots = plots.get("data", plots)
    assert {str(p.history(n)) for n in names} | {f"{p.figures_of(n)}/progression.png" for n in names} <= set(plots)

    # Both runs are in the repo's own mlflow.db, with metrics, images, figures, the model and the tags.
    exp, all_runs = mlflow_runs(project)
    assert sorted(all_runs["tags.genlab.model"]) == ["cgan", "classifier", "cvae", "gan", "vae"]
    classifier = all_runs[all_runs["tags.genlab.model"] == "classifier"].iloc[0]
    assert classifier["metrics.eval/test_accuracy"] >= 0.5
    runs = all_runs[all_runs["tags.genlab.model"] != "classifier"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    client = MlflowClient()
    for _, r in runs.iterrows():
        name = r["tags.genlab.model"]
        assert r["tags.mlflow.runName"] == name and r["tags.genlab.kind"] == params.models[name]
        assert r["tags.git.commit"] == head and r["tags.git.dirty"] == "false"
        assert r["tags.data.sha256"] and r["tags.genlab.checkpoint_sha256"] == sha256(project / p.model(name))
        assert [
            m.step
            for m in client.get_metric_history(r.run_id, "train/loss")
            or client.get_metric_history(r.run_id, "train/loss_d")
        ] == [1, 2]
        assert any(k.startswith("metrics.eval/") and r[k] == r[k] for k in runs.columns)
        # Sample metrics, the real-data floor beside them, the feature extractor they were computed in.
        for key in ("eval/fid", "eval/recall", "eval/classes_present", "floor/fid", "eval/classifier_test_accuracy"):
            assert r[f"metrics.{key}"] == r[f"metrics.{key}"], key
        assert r["tags.genlab.classifier_sha256"] == classifier["tags.genlab.weights_sha256"]
        # Per-epoch diagnostics, logged while training.
        assert [m.step for m in client.get_metric_history(r.run_id, "train/classes_present")] == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(r.run_id)}
        assert {"figures", "history", "images"} <= artifacts, artifacts
        assert r["status"] == "FINISHED"
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert sorted(m.name for m in models) == ["cgan_sampler", "cvae_sampler", "gan_sampler", "vae_sampler"]
    check_logged_samplers(models, tmp_path)
    # No run ids, timestamps or absolute paths leak into DVC-tracked files.
    for tracked in (p.summary("cgan"), p.evaluation("cgan"), p.history("gan"), "dvc.lock"):
        text = (project / tracked).read_text()
        assert str(tmp_path) not in text and not any(rid in text for rid in runs["run_id"])

    # The comparison report shows the values of evaluate.json (what `dvc metrics show` reads) unchanged.
    check_compare_report(project, env, runs, evaluation)

    # Up to date, and changing only the render section re-runs only render.
    assert "up to date" in run([dvc, "status"], project, env).stdout
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["render"]["scale"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([dvc, "repro"], project, env).stdout
    assert all(f"Running stage 'render@{n}'" in out for n in names)
    assert "Running stage 'train@" not in out and "Running stage 'evaluate" not in out

    # A change to one model's section reruns that model's stages only.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["cvae"]["lr"] = 2e-3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([dvc, "repro"], project, env).stdout
    ran = sorted(re.findall(r"Running stage '([^']+)'", out))
    assert ran == ["evaluate@cvae", "render@cvae", "train@cvae"], ran


def check_logged_samplers(models, out_dir: Path) -> None:
    """Every logged sampler returns images in [0, 1]; a conditional one draws the digit asked for by a label column;
    `genlab generate --model-uri` draws from each."""
    import pandas as pd
    from click.testing import CliRunner

    from genlab.__main__ import main as genlab

    for m in models:
        digit = ["--digit", "7"] if m.name.startswith("c") else []
        out = out_dir / f"{m.name}.npy"
        result = CliRunner().invoke(
            genlab, ["generate", "--model-uri", m.model_uri, *digit, "--n", "3", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert np.load(out).shape == (3, 28, 28)

    for m in models:
        loaded = mlflow.pyfunc.load_model(m.model_uri)
        if m.name.startswith("c"):
            out = loaded.predict(pd.DataFrame({"label": [7, 7, 1], "seed": [0, 0, 0]}))
            assert out.shape == (3, 784) and 0 <= out.min() and out.max() <= 1
            assert np.allclose(out[0], out[1]) and not np.allclose(out[0], out[2])  # same seed; another digit
        else:
            latent = np.zeros((2, loaded.metadata.get_input_schema().inputs[0].shape[-1]), dtype=np.float32)
            out = loaded.predict(latent)
            assert out.shape == (2, 1, 28, 28) and 0 <= out.min() and out.max() <= 1


def check_compare_report(project: Path, env: dict[str, str], runs, evaluation: dict) -> None:
    from genlab.report import FLOOR, SAMPLE_METRICS, build_report, run_label  # noqa: F811

    out = run([sys.executable, "scripts/compare.py"], project, env).stdout
    assert "wrote" in out
    md = (project / "reports" / "compare" / "report.md").read_text()
    page = (project / "reports" / "compare" / "report.html").read_text()
    images = sorted((project / "reports" / "compare" / "images").iterdir())
    assert sorted(i.name.split("_", 1)[1] for i in images) == ["epoch_002.png"] * 4
    assert page.count("data:image/png;base64,") == 4 and all(f"images/{i.name}" in md for i in images)
    assert evaluation["gan"]["feature_extractor"]["weights_sha256"][:12] in md

    report = build_report(runs, {})
    for _, r in runs.iterrows():
        model, label = r["tags.genlab.model"], run_label(r)
        for row, name in SAMPLE_METRICS:
            assert report.metrics.loc[row, label] == evaluation[model][name], (model, name)
            assert report.metrics.loc[row, FLOOR] == evaluation["real"][name], name


def test_killed_training_resumes_bit_identical(tmp_path):
    mirror = tmp_path / "mirror"
    sha = make_idx_files(mirror, n_train=3000, n_test=100)
    params = tiny_params(sha, epochs=6)
    env = {**stage_env(mirror), "GENLAB_CHECKPOINT_EVERY": "1", "PYTHONPATH": "src"}
    train = [sys.executable, "pipeline/train.py", "gan"]

    straight = make_project(tmp_path / "straight", params)
    killed = make_project(tmp_path / "killed", params)
    for project in (straight, killed):
        for stage in ("download", "train_classifier"):
            run([sys.executable, f"pipeline/{stage}.py"], project, env)
    run(train, straight, env)

    proc = subprocess.Popen(train, cwd=killed, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state_dir = killed / ".genlab" / "state"
    deadline = time.monotonic() + 120
    while not list(state_dir.glob("gan-*.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    paths = load_params(killed / "params.yaml").paths
    assert not (killed / paths.model("gan")).exists(), "the run finished before it was killed; the test proves nothing"

    resumed = run(train, killed, env)
    assert "resumed from" in resumed.stdout
    for path in (paths.model("gan"), paths.snapshots("gan"), paths.history("gan"), paths.summary("gan")):
        assert sha256(straight / path) == sha256(killed / path), path
    assert not list(state_dir.glob("gan-*")), "finished runs leave no resumable state behind"
    _, runs = mlflow_runs(killed)
    runs = runs[runs["tags.genlab.model"] == "gan"].reset_index()
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"  # the resumed run continued the same MLflow run


@pytest.mark.skipif(not MNIST_MIRROR.exists(), reason="local MNIST mirror not present")
def test_short_run_on_real_mnist(tmp_path):
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["models"] = {"gan": "gan", "vae": "vae"}  # the conditional models have their own tests on tiny data
    del params["cgan"], params["cvae"]
    params["gan"]["epochs"] = params["vae"]["epochs"] = 1
    params["render"]["epochs"] = [1]
    # A 1-epoch classifier (about 98%) and a smaller evaluation keep this under two minutes.
    params["classifier"].update(epochs=1, min_test_accuracy=0.95)
    params["evaluate"].update(num_samples=2000, c2st_epochs=1, iwae_samples=10)
    project = make_project(tmp_path / "project", params)
    env = {**stage_env(MNIST_MIRROR), "GENLAB_THREADS": "0"}
    run([bin_path("dvc"), "repro"], project, env)
    paths = load_params(project / "params.yaml").paths
    evaluation = {name: json.loads((project / paths.evaluation(name)).read_text()) for name in ("gan", "vae", FLOOR)}
    assert evaluation["vae"]["num_images"] == 10000
    # One epoch on real MNIST already gets the VAE well below the ~540 nats of an untrained model.
    assert evaluation["vae"]["test_loss"] < 200
    assert 0 <= evaluation["gan"]["discriminator_accuracy"] <= 1 and evaluation["gan"]["num_generated"] == 10000
    # Real digits score near the ideal; one epoch of either model is far from it.
    real, gan, vae = evaluation["real"], evaluation["gan"], evaluation["vae"]
    assert evaluation["gan"]["feature_extractor"]["test_accuracy"] >= 0.95
    assert real["classes_present"] == 10 and real["classifier_score"] > 9 and 0.45 < real["c2st_accuracy"] < 0.6
    for model in (gan, vae):
        assert model["num_samples"] == 2000
        assert model["fid"] > 5 * real["fid"] and model["c2st_accuracy"] > real["c2st_accuracy"]
    assert 0 < vae["bce_floor_per_image"] < vae["test_nll_iwae"] <= vae["test_loss"] + 1


def experiments_of(shown) -> dict[str, dict]:
    """{experiment name: its 'data'} from `dvc exp show --json`, at any depth."""
    found: dict[str, dict] = {}
    if isinstance(shown, list):
        for item in shown:
            found.update(experiments_of(item))
    elif isinstance(shown, dict):
        for exp in shown.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") and rev.get("data"):
                    found[rev["name"]] = rev["data"]
    return found


def test_queued_sweep_logs_one_run_per_experiment_to_the_repo_mlflow(tmp_path, tiny_mirror):
    """`dvc exp run --queue` with a grid, then `dvc queue start -j 2`: two experiments run at once in temporary
    copies, and both land in the repository's own mlflow.db, tagged with their names, with the same numbers."""
    mirror, sha = tiny_mirror
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2, models=("gan", "vae")))
    env = stage_env(mirror)
    dvc = bin_path("dvc")
    run([dvc, "exp", "run", "--queue", "-S", "gan.lr=1e-4,2e-4"], project, env)
    run([dvc, "queue", "start", "-j", "2"], project, env)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = run([dvc, "queue", "status"], project, env).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    logs = "".join(p.read_text() for p in (project / ".dvc" / "tmp" / "exps").rglob("*.out"))
    assert "database is locked" not in logs

    exps = experiments_of(json.loads(run([dvc, "exp", "show", "--json"], project, env).stdout))
    assert len(exps) == 2, exps.keys()
    _, runs = mlflow_runs(project)
    gan_runs = runs[runs["tags.genlab.model"] == "gan"].set_index("tags.dvc.exp_name")
    assert sorted(gan_runs.index) == sorted(exps)
    for name, data in exps.items():
        evaluation = data["metrics"]["metrics/gan_eval.json"]["data"]
        lr = data["params"]["params.yaml"]["data"]["gan"]["lr"]
        row = gan_runs.loc[name]
        assert float(row["params.gan.lr"]) == lr
        assert row["metrics.eval/discriminator_accuracy"] == evaluation["discriminator_accuracy"]
        assert row["metrics.eval/d_fake"] == evaluation["d_fake"]
        assert row["status"] == "FINISHED"
