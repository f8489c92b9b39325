"""The `genlab` command (installed by the package; also `python -m genlab`).

    genlab generate --model cgan --digit 7 --n 64 --out sevens.png
    genlab generate --model gan --out samples.npy          # uint8 [N, 28, 28]
    genlab generate --model-uri models:/m-0123... --digit 3 --out threes.png
    genlab compare                                  # the newest evaluations side by side
    genlab compare brisk-lamb 1a2b3c HEAD~1         # DVC experiments, run ids, git revisions
    genlab plots [brisk-lamb HEAD]                  # training curves and figures, an offline HTML page
    genlab promote gan brisk-lamb                   # models:/genlab-gan@champion -> that experiment's GAN

It loads the workspace's trained model (params.yaml's paths) or an MLflow model, so it needs no DVC or MLflow run
of its own. genlab is imported first: the CPU pins and OpenMP's wait policy are set before torch loads.
"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets the process environment before torch loads (genlab/__init__.py)

# isort: split

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from genlab.errors import GenlabError
from genlab.models.base import NUM_CLASSES

FORMATS = (".png", ".npy")


class Commands(click.Group):
    """genlab's commands; a GenlabError (a bad params.yaml, a GENLAB_* variable, a missing file) is printed as
    click's one-line error, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GenlabError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """genlab: reproducible generative models on MNIST (DVC stages, MLflow runs)."""


@main.command()
@click.option("--model", "name", default=None, help="A model of params.yaml's `models` (gan, vae, cgan, cvae, ...).")
@click.option("--model-uri", default=None, help="An MLflow model URI (models:/..., runs:/...) instead of --model.")
@click.option(
    "--digit", type=int, default=None, help="The digit to draw (conditional models only). Default: 0-9 cycling."
)
@click.option("--n", "n", type=int, default=64, show_default=True, help="How many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the input noise.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE.png (a grid) or FILE.npy."
)
@click.option("--nrow", type=int, default=None, help="Images per grid row. Default: 10 for cycling digits, else 8.")
@click.option("--scale", type=click.IntRange(1, 16), default=2, show_default=True, help="Pixel size in the grid.")
@click.option("--params", "params_path", type=Path, default=Path("params.yaml"), show_default=True)
def generate(
    name: str | None,
    model_uri: str | None,
    digit: int | None,
    n: int,
    seed: int,
    out: Path,
    nrow: int | None,
    scale: int,
    params_path: Path,
) -> None:
    """Draw images from a trained model into a PNG grid or a .npy array."""
    if (name is None) == (model_uri is None):
        raise click.UsageError("give exactly one of --model NAME or --model-uri URI")
    if n <= 0:
        raise click.BadParameter(f"{n}: give a positive number of images", param_hint="--n")
    if digit is not None and not 0 <= digit < NUM_CLASSES:
        raise click.BadParameter(f"{digit}: a digit is 0-{NUM_CLASSES - 1}", param_hint="--digit")
    if out.suffix not in FORMATS:
        raise click.BadParameter(f"{out}: write a .png grid or a .npy array", param_hint="--out")

    import torch

    sample, conditional, what = load_sampler(name, model_uri, params_path)
    if digit is not None and not conditional:
        raise click.BadParameter(
            f"{what} is unconditional: it cannot draw a chosen digit; drop --digit", param_hint="--digit"
        )
    labels = None
    if conditional:
        labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % NUM_CLASSES
    images = sample(n, labels, seed)  # [n, 1, 28, 28] in [0, 1]
    write_images(images, out, nrow=nrow or (NUM_CLASSES if conditional and digit is None else 8), scale=scale)
    asked = f"digit {digit}" if digit is not None else ("digits 0-9 cycling" if conditional else "unconditional")
    click.echo(f"genlab generate: {n} images from {what} ({asked}, seed {seed}) -> {out}")


# sample(n, labels or None, seed) -> images [n, 1, 28, 28] in [0, 1]
Sampler = Callable[[int, Any, int], Any]


def load_sampler(name: str | None, model_uri: str | None, params_path: Path) -> tuple[Sampler, bool, str]:
    """(sample(n, labels, seed) -> images [n, 1, 28, 28] in [0, 1], conditional?, a description)."""
    import torch

    if model_uri is not None:
        from genlab.tracking import load_logged_sampler

        try:
            logged, conditional = load_logged_sampler(model_uri)
        except Exception as e:  # MLflow raises several types for a bad URI; all mean the same to the user
            raise click.ClickException(f"cannot load the MLflow model {model_uri}: {e}") from None
        return logged, conditional, model_uri

    from genlab import registry
    from genlab.config import load_params

    params = load_params(params_path)
    if name not in params.models:
        raise click.BadParameter(
            f"unknown model {name!r}; {params_path} has {sorted(params.models)}", param_hint="--model"
        )
    path = params.paths.model(name)
    if not path.exists():
        raise click.ClickException(f"{path} is missing: train it first (dvc repro train@{name}, or dvc pull)")
    model, _ = registry.load_model(path)

    def sample(n: int, labels, seed: int):
        # Row i's noise from seed + i, as the logged MLflow sampler draws it (genlab/sampler_pyfunc.py): the same
        # seed gives the same images from the checkpoint and from its MLflow model.
        latent = torch.cat([model.sample_latent(1, torch.Generator().manual_seed(seed + i)) for i in range(n)])
        with torch.no_grad():
            return model.generate(latent, labels)

    return sample, model.conditional, f"{name} ({path})"


@main.command()
@click.argument("selectors", nargs=-1)
@click.option("--max", "limit", type=click.IntRange(1), default=6, show_default=True,
              help="With no SELECTORS: the newest this many evaluations.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/compare"),
              show_default=True, help="Writes report.md (images beside it) and report.html here.")  # fmt: skip
@click.option("--list", "list_only", is_flag=True, help="List the evaluated runs one can name, and stop.")
def compare(selectors: tuple[str, ...], limit: int, out: Path, list_only: bool) -> None:
    """A report of evaluated runs side by side. SELECTORS: DVC experiment names, git revisions, run ids (6+
    digits). None: the newest evaluations."""
    import shutil
    import tempfile

    from genlab.comparison import SelectionError, evaluated_runs, render_run_of, select
    from genlab.config import load_runtime
    from genlab.io import atomic_write_text
    from genlab.report import build_report, run_label
    from genlab.tracking import Tracker

    runtime = load_runtime()
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    frame = tracker.runs_frame()
    if list_only:
        for _, r in evaluated_runs(frame).iterrows():
            click.echo(f"{r['run_id'][:8]}  {run_label(r)}")
        return

    try:
        runs = select(frame, selectors, _git_commit)
    except SelectionError as e:
        raise click.ClickException(str(e)) from None
    if runs.empty:
        raise click.ClickException("no evaluated runs yet: run the pipeline first (make run, or dvc exp run)")
    if not selectors:
        runs = runs.head(limit)
    images = out / "images"
    grids = {}
    for _, evaluation in runs.iterrows():
        render = render_run_of(frame, evaluation)
        epochs = [p for p in tracker.artifact_paths(render, "figures") if "epoch_" in p] if render else []
        if epochs:  # the last rendered epoch's grid
            short = evaluation["run_id"][:8]
            with tempfile.TemporaryDirectory() as tmp:
                path = tracker.download_artifact(render, epochs[-1], tmp)  # type: ignore[arg-type]
                images.mkdir(parents=True, exist_ok=True)
                grids[evaluation["run_id"]] = Path(shutil.move(path, images / f"{short}_{path.name}"))
    report = build_report(runs, grids, image_dir="images")
    atomic_write_text(out / "report.md", report.markdown + "\n")
    atomic_write_text(out / "report.html", report.html)
    click.echo(report.markdown)
    click.echo(f"\ngenlab compare: wrote {out / 'report.md'} and {out / 'report.html'} ({len(runs)} runs)")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def exp(dvc_args: tuple[str, ...]) -> None:
    """The experiments side by side, one row per experiment and model: the headline evaluation metrics and the
    params that differ. Extra arguments go to `dvc exp show` (e.g. -A for every commit, -n 5)."""
    import json
    import subprocess

    import pandas as pd

    from genlab.comparison import experiments_table

    done = subprocess.run([_dvc(), "exp", "show", "--json", *dvc_args], capture_output=True, text=True)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        raise click.ClickException(f"dvc exp show failed: {last[0].strip()}")
    table = experiments_table(json.loads(done.stdout))
    if table.empty:
        raise click.ClickException("no evaluated experiments: run the pipeline first (make run, or dvc exp run)")
    with pd.option_context("display.max_colwidth", 60, "display.float_format", "{:.4g}".format):
        click.echo(table.to_string(index=False, line_width=120))  # wider tables continue in a block below


@main.command()
@click.argument("name")
@click.argument("which")
@click.option("--alias", default="champion", show_default=True)
def promote(name: str, which: str, alias: str) -> None:
    """Point models:/genlab-NAME@ALIAS at one version of NAME's sampler. WHICH: a version number, or what
    `genlab compare` takes (a DVC experiment name, a git revision, a run id) naming one trained NAME."""
    import pandas as pd

    from genlab.comparison import CHECKPOINT, SelectionError, select, trained_checkpoints
    from genlab.config import load_runtime
    from genlab.tracking import TAG_CHECKPOINT, Tracker

    runtime = load_runtime()
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    registered = f"genlab-{name}"
    versions = tracker.model_versions(registered)
    if not versions:
        raise click.ClickException(f"no versions of {registered}: train {name} first (dvc repro train@{name})")
    if which.isdigit() and len(which) < 6:
        version = int(which)
        if version not in {v for v, _ in versions}:
            raise click.BadParameter(f"{registered} has versions {sorted(v for v, _ in versions)}", param_hint="WHICH")
    else:
        frame = tracker.runs_frame()
        frame = frame[frame.get("tags.genlab.model", pd.Series(index=frame.index, dtype=str)) == name]
        try:  # what it names among the evaluations (as compare reads it), else among the training runs
            chosen = select(frame, [which], _git_commit)
            checkpoints = set(chosen[CHECKPOINT])
        except SelectionError:
            checkpoints = trained_checkpoints(frame, which, _git_commit)
        if not checkpoints:
            raise click.ClickException(
                f"{which!r} names no trained {name}: give a version number, a DVC experiment name, a git revision"
                " or a run id (genlab compare --list)"
            )
        if len(checkpoints) != 1:
            raise click.ClickException(f"{which!r} names {len(checkpoints)} trained {name} models; name one")
        trained = frame.set_index("run_id")[f"tags.{TAG_CHECKPOINT}"]
        matching = [v for v, run_id in versions if trained.get(run_id) in checkpoints]
        if not matching:
            raise click.ClickException(f"no version of {registered} was logged with the weights {which!r} names")
        version = matching[0]  # byte-identical weights trained twice: the newest version of them
    tracker.set_alias(registered, alias, version)
    click.echo(f"genlab promote: models:/{registered}@{alias} -> version {version}")


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True, help="0: any free port.")
@click.option("--open/--no-open", "open_browser", default=True, help="Open the page in the default browser.")
def ui(port: int, open_browser: bool) -> None:
    """The MLflow UI on 127.0.0.1 against this repository's runs, opened at the experiment's model-training view
    (MLflow 3.17 opens experiments in its GenAI view unless the URL asks otherwise). Ctrl-C stops it."""
    import signal
    import time
    import webbrowser

    from genlab.config import load_runtime
    from genlab.tracking import Tracker, mlflow_server

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM (a service manager, a test's terminate()) stops it as Ctrl-C does. Python's default would exit at
    # once, skipping mlflow_server's cleanup and leaving the server and its job workers running.
    signal.signal(signal.SIGTERM, stop)
    runtime = load_runtime()
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    try:
        with mlflow_server(tracker.tracking_uri, cwd=tracker.root, port=port) as url:
            page = experiment_page(url, tracker.experiment.experiment_id)
            click.echo(f"genlab ui: {page}  (Ctrl-C stops the server)")
            if open_browser:
                webbrowser.open(page)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("genlab ui: stopped")
    except RuntimeError as e:  # the server did not start: its own last lines say why
        raise click.ClickException(str(e)) from None


def experiment_page(url: str, experiment_id: str) -> str:
    """The runs table of an experiment in the classic model-training view: `workflowType` in the URL overrides
    the UI's stored choice, which defaults to GenAI in MLflow 3.17."""
    return f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _dvc() -> str:
    """The environment's own dvc, also when the environment is not activated; else the one on PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.exists() else shutil.which("dvc") or "dvc"


def _git_commit(rev: str) -> str | None:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip() or None


@main.command()
@click.argument("revisions", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build/plots"),
              show_default=True, help="Where the page (index.html) and its images go.")  # fmt: skip
def plots(revisions: tuple[str, ...], out: Path) -> None:
    """The training curves and figures as one HTML page that works offline: `dvc plots show`, or with REVISIONS
    (DVC experiment names, git revisions) `dvc plots diff REVISIONS`."""
    import shutil
    import subprocess

    from genlab.tracking import repo_root

    root = repo_root()
    tools = root / "tools" / "dvc-plots"
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise click.ClickException(
            "the offline plots page inlines vega from npm: install Node.js and npm (apt-get install nodejs npm)"
        )
    out = out.resolve()  # dvc runs in the repository root
    template = root / "build" / "dvc-plots" / "template.html"
    try:
        if not (tools / "node_modules").exists():  # the versions tools/dvc-plots/package-lock.json pins
            subprocess.run([npm, "ci", "--silent", "--no-audit", "--no-fund"], cwd=tools, check=True)
        subprocess.run([node, str(tools / "build.mjs"), str(template)], check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as e:
        raise click.ClickException(f"building the offline plots page failed: `{' '.join(e.cmd)}` (above)") from None
    command = [_dvc(), "plots", "diff" if revisions else "show", "--html-template", str(template), "-o", str(out)]
    done = subprocess.run([*command, *revisions], cwd=root)
    if done.returncode != 0:
        raise click.ClickException(f"`{' '.join(command[1:3])}` failed (its message is above)")
    click.echo(f"genlab plots: {out / 'index.html'} (open it in a browser; it needs no network)")


def write_images(images, out: Path, *, nrow: int, scale: int) -> None:
    import numpy as np

    from genlab.io import atomic_write_bytes
    from genlab.render import grid_image, save_png
    from genlab.trainer import to_uint8_images

    pixels = to_uint8_images(images)  # uint8 [n, 28, 28]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, pixels.numpy())
        atomic_write_bytes(out, buf.getvalue())
    else:
        save_png(grid_image(pixels, nrow=nrow, scale=scale), out)


@main.group()
def stack() -> None:
    """The team stack on loopback: PostgreSQL, an S3 store (SeaweedFS) and `mlflow server` (genlab.stack)."""


_PORT = click.IntRange(1, 65535)


@stack.command("up")
@click.option("--mlflow-port", type=_PORT, default=None, help="The tracking server's port. Default: a free one.")
@click.option("--s3-port", type=_PORT, default=None, help="The S3 gateway's port. Default: a free one.")
@click.option("--postgres-port", type=_PORT, default=None, help="PostgreSQL's port. Default: a free one.")
def stack_up(mlflow_port: int | None, s3_port: int | None, postgres_port: int | None) -> None:
    """Start what is not running, then print the addresses and the variables to export."""
    from genlab import stack as team_stack
    from genlab.tracking import repo_root

    ports = {"mlflow": mlflow_port, "s3": s3_port, "postgres": postgres_port}
    running = team_stack.up(repo_root(), ports, say=lambda line: click.echo(line, err=True))
    click.echo(
        f"tracking  {running.tracking_uri}\ns3        {running.s3_endpoint} (bucket {team_stack.BUCKET}: MLflow"
        f" artifacts under {team_stack.MLFLOW_ARTIFACTS}, the DVC remote `stack` under {team_stack.DVC_REMOTE_URL})"
        f"\npostgres  127.0.0.1:{running.ports['postgres']} (databases {', '.join(team_stack.DATABASES)})\n"
        f'data      {running.directory}\n\nexport them in a shell with:  eval "$(genlab stack env)"',
        err=True,
    )


@stack.command("down")
def stack_down() -> None:
    """Stop exactly what `up` started; data, logs and credentials stay for the next `up`."""
    from genlab import stack as team_stack
    from genlab.tracking import repo_root

    team_stack.down(repo_root(), say=click.echo)


@stack.command("status")
def stack_status() -> None:
    """Each service: running or stopped, answering or not, and its address. Exits 1 unless all run and answer."""
    from genlab import stack as team_stack
    from genlab.tracking import repo_root

    rows = team_stack.status(repo_root())
    for name, state, address in rows:
        click.echo(f"{name:<9} {address:<16} {state}")
    if not all(state.startswith("running (pid") for _, state, _ in rows):
        raise SystemExit(1)


@stack.command("env")
def stack_env() -> None:
    """`export` lines for a client shell: eval "$(genlab stack env)". GENLAB_STACK_DIR names another clone's stack."""
    import shlex

    from genlab import stack as team_stack
    from genlab.tracking import repo_root

    for key, value in team_stack.current(repo_root()).environment().items():
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command()
@click.argument("space", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--storage", default=None, help="Optuna's database. Default: GENLAB_SWEEP_STORAGE, or .genlab/optuna.db")
@click.option("--push", "push", default=None, metavar="GIT_REMOTE",
              help="dvc exp push each trial's experiment there (its outputs to the DVC remote).")  # fmt: skip
def sweep(space: Path, storage: str | None, push: str | None) -> None:
    """Join the Optuna study of SPACE (a search-space YAML, see sweeps/) and run its trials as DVC experiments
    until it has as many as it asks for. Start one per machine (each in its own clone) to share the work."""
    from genlab import sweep as sweeps
    from genlab.tracking import repo_root

    root = repo_root()
    spec = sweeps.SweepSpec.load(space)
    study = sweeps.run_worker(root, spec, storage or sweeps.storage_url(root), push=push, say=click.echo)
    click.echo(f"study {spec.study}: {len(study.trials)} trials ({spec.metric}, {spec.direction}); best first:")
    for line in sweeps.summary(study):
        click.echo(line)


def _dvc_transfer(command: str, remote: str | None, args: tuple[str, ...]) -> None:
    import subprocess

    from genlab import stack as team_stack
    from genlab.tracking import repo_root

    root = repo_root()
    name = team_stack.check_remote(root, remote)
    raise SystemExit(subprocess.run([_dvc(), command, "-r", name, *args], cwd=root).returncode)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-r", "--remote", default=None, help="A DVC remote. Default: .dvc/config's default (stack).")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def push(remote: str | None, dvc_args: tuple[str, ...]) -> None:
    """dvc push, after checking that the remote answers, with these credentials, and has its bucket."""
    _dvc_transfer("push", remote, dvc_args)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("-r", "--remote", default=None, help="A DVC remote. Default: .dvc/config's default (stack).")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def pull(remote: str | None, dvc_args: tuple[str, ...]) -> None:
    """dvc pull, after the same checks as push: DVC's own pull says "Everything is up to date" without a remote."""
    _dvc_transfer("pull", remote, dvc_args)


@main.command()
@click.argument("name")
def profile(name: str) -> None:
    """The `-S key=value` flags of profiles/NAME/params.yaml, for `dvc exp run $(genlab profile ci)`: the CI
    profile (real MNIST, 2 epochs per model, a 1-epoch classifier, a smaller evaluation) as a DVC experiment."""
    import json

    import yaml

    from genlab.tracking import repo_root

    path = repo_root() / "profiles" / name / "params.yaml"
    if not path.is_file():
        known = sorted(p.parent.name for p in (repo_root() / "profiles").glob("*/params.yaml"))
        raise click.ClickException(f"{path} does not exist; profiles: {', '.join(known)}")

    def flags(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [flag for key, value in node.items() for flag in flags(value, f"{prefix}{key}.")]
        # JSON without spaces: one shell word per flag, and YAML reads it back as the same value.
        return ["-S", f"{prefix[:-1]}={json.dumps(node, separators=(',', ':'))}"]

    click.echo(" ".join(flags(yaml.safe_load(path.read_text()), "")))


if __name__ == "__main__":
    main()
