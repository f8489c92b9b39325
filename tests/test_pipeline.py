"""End to end: the real `dvc repro` on a tiny profile in a scratch copy of the repository, and the
kill -9 / resume guarantee of the training stages."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from genlab import cpu_pins
from genlab.config import FLOOR, load_params

from .conftest import MNIST_MIRROR, bin_path, make_idx_files, make_project, run_queue, stage_env, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


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
    # System metrics sampled every 0.2 s (genlab's default is 5 s), so runs of a second hold some.
    env = {**stage_env(mirror), "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}
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
        assert sorted(f.name for f in (project / p.identity_of(name)).iterdir()) == IDENTITY_FIGURES, name
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
    # The plots resolve: each model's training curves through its kind's template, and its figures.
    plots = check_training_plots(project, env, params.models)
    assert {f"{p.figures_of(n)}/progression.png" for n in names} <= set(plots)
    check_identity(project, files, plots, params)

    # One identity per run in the repo's own mlflow.db: per model a training run, and a render and an evaluate run
    # nested under it, each named for what it is and where it ran.
    exp, all_runs = mlflow_runs(project)
    classifier = all_runs[all_runs["tags.genlab.model"] == "classifier"].iloc[0]
    assert classifier["metrics.eval/test_accuracy"] >= 0.5
    runs = all_runs[all_runs["tags.genlab.model"] != "classifier"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert sorted(runs["tags.mlflow.runName"]) == sorted(
        f"{n}{'-' + v if v else ''} · {head[:7]}{stage}"
        for n, v in ((n, getattr(params.model(n), "variant", None)) for n in names)
        for stage in ("", " · render", " · identity", " · evaluate")
    ), "every run named <model>[-<variant>] · <commit>[ · <stage>]"
    assert (runs["status"] == "FINISHED").all()
    client = MlflowClient()
    trained = runs[runs["tags.genlab.stage"] == "train"].set_index("tags.genlab.model")
    for name, r in trained.iterrows():
        assert r["tags.genlab.kind"] == params.models[name] and r["tags.genlab.experiment"] == head[:7]
        assert r["tags.git.commit"] == head and r["tags.git.dirty"] == "false"
        assert r["tags.data.sha256"] and r["tags.genlab.checkpoint_sha256"] == sha256(project / p.model(name))
        assert f"Trains {name}" in r["tags.mlflow.note.content"]
        # Its params are its config (hashes are tags): what the image card's caption and the compare view list.
        logged = client.get_run(r.run_id).data.params
        assert logged and all(k == "seed" or k.startswith(f"{name}.") for k in logged), sorted(logged)
        assert r["tags.genlab.classifier_sha256"] and r["tags.genlab.data_sha256"] == r["tags.data.sha256"]
        assert [
            m.step
            for m in client.get_metric_history(r.run_id, "train/loss")
            or client.get_metric_history(r.run_id, "train/loss_d")
        ] == [1, 2]
        # Per-epoch diagnostics, logged while training; nothing evaluated here.
        assert [m.step for m in client.get_metric_history(r.run_id, "train/classes_present")] == [1, 2]
        assert not any(k.startswith("metrics.eval/") and r[k] == r[k] for k in runs.columns)
        assert {"history", "images"} <= {a.path for a in client.list_artifacts(r.run_id)}
        assert client.get_metric_history(r.run_id, "system/cpu_utilization_percentage")  # the machine's load
        (dataset,) = client.get_run(r.run_id).inputs.dataset_inputs
        assert (dataset.dataset.name, dataset.dataset.digest) == (params.data.dataset, r["tags.data.sha256"][:16])
    for stage in ("render", "identity", "evaluate"):
        children = runs[runs["tags.genlab.stage"] == stage].set_index("tags.genlab.model")
        assert sorted(children.index) == sorted(names)
        for name, r in children.iterrows():
            assert r["tags.mlflow.parentRunId"] == trained.loc[name, "run_id"]
            assert r["tags.genlab.checkpoint_sha256"] == trained.loc[name, "tags.genlab.checkpoint_sha256"]
            # Its own duration: it did not re-open the training run, which ended before it started.
            assert r["start_time"] >= trained.loc[name, "end_time"]
    evaluations = runs[runs["tags.genlab.stage"] == "evaluate"].set_index("tags.genlab.model")
    for name, r in evaluations.iterrows():
        # Sample metrics, the real-data floor beside them, the feature extractor they were computed in.
        for key in (
            "eval/fid",
            "eval/knn_recall",
            "eval/classes_present",
            "floor/fid",
            "eval/classifier_test_accuracy",
        ):
            assert r[f"metrics.{key}"] == r[f"metrics.{key}"], key
        assert r["tags.genlab.classifier_sha256"] == classifier["tags.genlab.weights_sha256"]
        assert r[f"params.{name}.epochs"] == "2" and r["params.evaluate.num_samples"]  # the model's config too
    for _, r in runs[runs["tags.genlab.stage"] == "render"].iterrows():
        assert {a.path for a in client.list_artifacts(r.run_id, "figures")} >= {"figures/progression.png"}
    for _, r in runs[runs["tags.genlab.stage"] == "identity"].iterrows():
        logged = {a.path for a in client.list_artifacts(r.run_id, "identity")}
        assert logged >= {f"identity/{f}" for f in IDENTITY_FIGURES}
        # The identity's per-epoch columns as metrics with the epoch as step (flips from the second epoch).
        assert [m.step for m in client.get_metric_history(r.run_id, "identity/identity_flips")] == [2]
        assert [m.step for m in client.get_metric_history(r.run_id, "identity/settled_share")] == [1, 2]
        assert r["metrics.identity/settle_epoch"] in (1, 2) and r["params.identity.settled_share"] == "0.9"
    runs = evaluations.reset_index()
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert sorted(m.name for m in models) == ["cgan_sampler", "cvae_sampler", "gan_sampler", "vae_sampler"]
    check_logged_samplers(models, tmp_path)
    # The same seed draws the same images from a checkpoint and from its logged model.
    uri = next(m.model_uri for m in models if m.name == "cgan_sampler")
    drawn = []
    for source in (["--model", "cgan"], ["--model-uri", uri]):
        out = tmp_path / f"drawn{len(drawn)}.npy"
        run([bin_path("genlab"), "generate", *source, "--digit", "7", "--n", "3", "--out", str(out)], project, env)
        drawn.append(np.load(out).astype(int))
    assert np.abs(drawn[0] - drawn[1]).max() <= 1  # uint8 grey levels; eager and exported kernels round alike
    # `genlab promote` moves the alias that clients load by; bad input gets one line and a non-zero exit.
    out = run([bin_path("genlab"), "promote", "cgan", head[:7]], project, env).stdout
    assert "models:/genlab-cgan@champion -> version 1" in out
    assert client.get_model_version_by_alias("genlab-cgan", "champion").run_id == trained.loc["cgan", "run_id"]
    champion = mlflow.pyfunc.load_model("models:/genlab-cgan@champion")
    assert champion.predict(pd.DataFrame({"label": [3], "seed": [0]})).shape == (1, 1, 28, 28)
    bad = subprocess.run([bin_path("genlab"), "promote", "cgan", "no-such-exp"], cwd=project, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "names no trained cgan" in bad.stderr and "Traceback" not in bad.stderr
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
    assert sorted(re.findall(r"Running stage '([^']+)'", out)) == sorted(f"render@{n}" for n in names)
    # And the identity section only the identity stages: they read neither render.scale nor what they do not draw.
    params["identity"]["gif_ms"] = 200
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([dvc, "repro"], project, env).stdout
    assert sorted(re.findall(r"Running stage '([^']+)'", out)) == sorted(f"identity@{n}" for n in names)

    # A change to one model's section reruns that model's stages only.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["cvae"]["lr"] = 2e-3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([dvc, "repro"], project, env).stdout
    ran = sorted(re.findall(r"Running stage '([^']+)'", out))
    assert ran == ["evaluate@cvae", "identity@cvae", "render@cvae", "train@cvae"], ran


IDENTITY_FIGURES = ["drift.png", "grid.gif", "strips.png"]  # identity@<name>: genlab.identity


def check_identity(project: Path, metrics: dict, plots: dict, params) -> None:
    """Every model's fixed inputs' identity over training: the per-epoch CSV drawn by the identity template, the
    summary among DVC's metrics, the GIF with a frame per epoch; the conditional models' inputs carry the digit
    asked for."""
    p = params.paths
    for name in params.models:
        conditional = params.model(name).conditional
        rows = list(csv.DictReader((project / p.identity_history(name)).open()))
        assert [r["epoch"] for r in rows] == ["1", "2"] and rows[0]["identity_flips"] == ""
        assert 0 <= float(rows[1]["identity_flips"]) <= 1 and float(rows[1]["settled_share"]) == 1.0
        assert ("asked_share" in rows[0]) == conditional, name
        summary = metrics[str(p.identity_summary(name))]["data"]
        assert summary["settle_epoch"] in (1, 2) and summary["num_inputs"] > 0
        assert ("final_asked_share" in summary) == conditional, name
        (plot,) = plots[str(p.identity_history(name))]
        assert plot["content"]["usermeta"]["genlab_template"] == "identity"
        with Image.open(project / p.identity_of(name) / "grid.gif") as gif:
            assert gif.n_frames == 2
    drifting = json.loads((project / p.identity_summary("gan")).read_text())["most_drifting"]
    assert len(drifting) == params.identity.most_drifting and {"input", "path"} <= set(drifting[0])


def check_training_plots(project: Path, env: dict[str, str], models: dict[str, str]) -> dict:
    """`dvc plots show --json`: every model's history CSV is drawn by its kind's template (plots.json in the kind's
    package), with the explicit y and every column of the CSV folded into a panel. Returns the plots."""
    out = run([bin_path("dvc"), "plots", "show", "--json", "-o", str(project / "build" / "plots")], project, env)
    shown = json.loads(out.stdout)
    assert not shown.get("errors"), shown["errors"]
    # Read as YAML, not load_params: a plug-in kind of the scratch project is not a kind of this test process.
    metrics_dir = yaml.safe_load((project / "params.yaml").read_text())["paths"]["metrics_dir"]
    for name, kind in models.items():
        history = f"{metrics_dir}/{name}_train.csv"  # genlab.config.PathsConfig.history
        (plot,) = shown["data"][history]
        spec = plot["content"]
        assert spec["usermeta"] == {"genlab_template": f"{kind}-training", "x": "epoch", "y": "classifier_score"}
        rows = spec["data"]["values"]
        assert rows and all(r["field"] == "classifier_score" for r in rows)
        folded = {c for panel in spec["vconcat"] for t in panel["transform"] if "fold" in t for c in t["fold"]}
        header = (project / history).read_text().splitlines()[0].split(",")
        assert set(header) - {"epoch"} <= folded, f"{name}: columns no panel draws: {set(header) - folded}"
    return shown["data"]


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
        assert loaded.metadata.metadata["output"] == "images [N, 1, 28, 28], float32 in [0, 1]"
        (output,) = loaded.metadata.get_output_schema().inputs
        assert output.shape == (-1, 1, 28, 28) and output.type == np.dtype(np.float32)
        # No float input to match exactly (a latent tensor's dtype had to): integer columns of any width pass.
        table = pd.DataFrame({"seed": np.array([0, 0, 1], dtype=np.int32)})
        if m.name.startswith("c"):
            table.insert(0, "label", np.array([7, 7, 1], dtype=np.int32))
        out = loaded.predict(table)
        assert out.shape == (3, 1, 28, 28) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        # Same seed (and label), same image, up to the last bits a row's place in the batch may change.
        assert np.allclose(out[0], out[1], atol=1e-6) and not np.allclose(out[0], out[2], atol=1e-3)
        # Each training run registered its sampler as a version of genlab-<name>.
        (version,) = MlflowClient().search_model_versions(f"name = 'genlab-{m.name.removesuffix('_sampler')}'")
        assert version.source == m.model_uri


def check_compare_report(project: Path, env: dict[str, str], runs, evaluation: dict) -> None:
    from genlab.report import FLOOR, SAMPLE_METRICS, build_report, run_label  # noqa: F811

    out = run([bin_path("genlab"), "compare"], project, env).stdout
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


def test_bf16_training_on_the_cpu_repeats_bit_for_bit_or_is_refused(tmp_path):
    """precision: bf16 trains in oneDNN's bf16 kernels (the stage restarts itself without genlab's AVX2 cap on
    oneDNN), the same bits run to run; a CPU without native bf16 gets one line saying so."""
    mirror = tmp_path / "mirror"
    sha = make_idx_files(mirror)
    params = tiny_params(sha, epochs=2, models=("vae",), vae__precision="bf16")
    env = {**stage_env(mirror), "PYTHONPATH": "src"}
    projects = [make_project(tmp_path / name, params) for name in ("a", "b")]
    for project in projects:
        for stage in ("download", "train_classifier"):
            run([sys.executable, f"pipeline/{stage}.py"], project, env)
    train = [sys.executable, "pipeline/train.py", "vae"]
    if not cpu_pins.native_bf16():
        out = subprocess.run(train, cwd=projects[0], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 1 and "has no native bf16 arithmetic" in out.stderr, out.stderr
        return
    for project in projects:
        run(train, project, env)
    paths = load_params(projects[0] / "params.yaml").paths
    for path in (paths.model("vae"), paths.snapshots("vae"), paths.history("vae")):
        assert sha256(projects[0] / path) == sha256(projects[1] / path), path
    fp32 = make_project(tmp_path / "fp32", tiny_params(sha, epochs=2, models=("vae",)))
    for stage in ("download", "train_classifier", "train"):
        run([sys.executable, f"pipeline/{stage}.py", *(["vae"] if stage == "train" else [])], fp32, env)
    assert sha256(fp32 / paths.model("vae")) != sha256(projects[0] / paths.model("vae"))  # bf16 did run
    _, runs = mlflow_runs(projects[0])
    assert runs.loc[0, "params.vae.precision"] == "bf16" and runs.loc[0, "status"] == "FINISHED"


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


def test_a_queued_grid_sweep_keeps_every_experiments_numbers_on_its_own_runs(tmp_path, tiny_mirror):
    """A 2x2 grid (`dvc exp run --queue -S gan.lr=a,b -S vae.lr=c,d`, `dvc queue start -j 2`): experiments that
    share a byte-identical checkpoint each keep their own evaluate run, and every run's metrics appear exactly once,
    on the run of the experiment they belong to, in the repository's own mlflow.db."""
    mirror, sha = tiny_mirror
    project = make_project(tmp_path / "project", tiny_params(sha, epochs=2, models=("gan", "vae")))
    env = stage_env(mirror)
    dvc = bin_path("dvc")
    run([dvc, "exp", "run", "--queue", "-S", "gan.lr=1e-4,2e-4", "-S", "vae.lr=1e-3,2e-3"], project, env)
    status = run_queue(project, env, timeout=500)
    assert status.count("Success") == 4, status
    logs = "".join(p.read_text() for p in (project / ".dvc" / "tmp" / "exps").rglob("*.out"))
    assert "database is locked" not in logs

    exps = experiments_of(json.loads(run([dvc, "exp", "show", "--json"], project, env).stdout))
    assert len(exps) == 4, exps.keys()
    _, runs = mlflow_runs(project)
    runs = runs[runs["tags.genlab.model"] != "classifier"]
    assert (runs["status"] == "FINISHED").all()
    evaluations = runs[runs["tags.genlab.stage"] == "evaluate"]
    # One evaluate run per (experiment, model) whose evaluate stage ran: DVC restores a stage whose inputs it has
    # seen from its run cache without running it ("is cached - skipping run"), so no code ran and no run is logged;
    # its numbers are those of the identical evaluation that did run.
    pairs = list(zip(evaluations["tags.genlab.experiment"], evaluations["tags.genlab.model"], strict=True))
    assert len(pairs) == len(set(pairs)) and set(pairs) <= {(e, m) for e in exps for m in ("gan", "vae")}
    for model in ("gan", "vae"):
        ran = logs.count(f"Running stage 'evaluate@{model}'")
        assert ran + logs.count(f"Stage 'evaluate@{model}' is cached") == 4
        assert sum(m == model for _, m in pairs) == ran
    for name, data in exps.items():
        for model in ("gan", "vae"):
            if (name, model) not in pairs:  # restored from the run cache: the same numbers as a twin that ran
                evaluation = data["metrics"][f"metrics/{model}_eval.json"]["data"]
                twins = [exps[e]["metrics"][f"metrics/{model}_eval.json"]["data"] for e, m in pairs if m == model]
                assert evaluation in twins
    client = MlflowClient()
    for _, r in evaluations.iterrows():
        name, model = r["tags.genlab.experiment"], r["tags.genlab.model"]
        data = exps[name]
        evaluation = data["metrics"][f"metrics/{model}_eval.json"]["data"]
        lr = data["params"]["params.yaml"]["data"][model]["lr"]
        assert float(r[f"params.{model}.lr"]) == lr
        assert r["tags.mlflow.runName"] == f"{model}{'-faithful' if model == 'gan' else ''} · {name} · evaluate"
        key = "eval/discriminator_accuracy" if model == "gan" else "eval/test_loss"
        assert r[f"metrics.{key}"] == evaluation[key.removeprefix("eval/")]
        # Logged once: a second evaluation of a shared checkpoint went to its own run, not to its twin's.
        assert len(client.get_metric_history(r["run_id"], key)) == 1
        # Nested under a training run of the same weights (the one that made them, maybe in another experiment).
        parent = runs.set_index("run_id").loc[r["tags.mlflow.parentRunId"]]
        assert parent["tags.genlab.stage"] == "train"
        assert parent["tags.genlab.checkpoint_sha256"] == r["tags.genlab.checkpoint_sha256"]
    # No run holds evaluation metrics but the evaluate runs; training runs hold no eval/ values at all.
    eval_columns = [c for c in runs.columns if c.startswith("metrics.eval/")]
    assert runs[runs["tags.genlab.stage"] != "evaluate"][eval_columns].isna().all().all()

    # `genlab exp`: a row per experiment and model, the columns people compare, the params that differ.
    table = run([bin_path("genlab"), "exp"], project, env).stdout
    assert max(len(line) for line in table.splitlines()) <= 120, table
    for name, data in exps.items():
        gan_lr = data["params"]["params.yaml"]["data"]["gan"]["lr"]
        assert re.search(rf"{name}\s+gan\s.*lr={gan_lr}", table), (name, table)
    assert "knn_precision" in table and "fid" in table
    # `genlab compare <experiment>`: that experiment's evaluations, whichever experiment ran them.
    name = next(e for e in exps if {(e, "gan"), (e, "vae")} <= set(pairs))  # one that ran both evaluations
    report = run([bin_path("genlab"), "compare", name], project, env).stdout
    assert report.count(f" · {name} · ") >= 2 and "(2 runs)" in report, report
