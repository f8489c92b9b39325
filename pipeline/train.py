"""Stage train@<name>: train the model `name` of params.yaml's `models`, log to MLflow, write its checkpoint and
per-epoch snapshots. Usage: python pipeline/train.py NAME [PARAMS (default params.yaml)]"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import os
import sys

from genlab import registry
from genlab.config import load_params, load_runtime
from genlab.cpu_pins import environ_for_bf16
from genlab.data import TrainingData, dataset_checksum
from genlab.diagnostics import sample_diagnostics
from genlab.distributed import World, relaunch, under_torchrun
from genlab.entry import run_stage
from genlab.errors import GenlabError
from genlab.experiment import train_and_track
from genlab.feature_extractor import load_classifier
from genlab.runtime import check_bf16, setup_torch
from genlab.tracking import Tracker


def main(name: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    if name not in params.models:
        raise GenlabError(f"{name!r} is not in params.yaml's models {sorted(params.models)}")
    kind, cfg, paths = params.models[name], params.model(name).resolved(), params.paths
    bf16 = cfg.precision == "bf16"  # type: ignore[attr-defined]
    bf16_environ = environ_for_bf16() if bf16 and runtime.device == "cpu" else None
    if bf16_environ is not None:
        # oneDNN fixed its ISA when torch loaded, under genlab's AVX2 cap, which has no bf16 kernels: start this stage
        # again without the cap (genlab.cpu_pins), before any work.
        sys.stdout.flush()
        os.execve(sys.executable, sys.orig_argv, bf16_environ)
    world = World.from_env()
    # Before any work: fails fast without a store. Under torchrun only rank 0 logs.
    tracker = Tracker(runtime.tracking_uri, runtime.experiment) if world.is_main else None
    if runtime.processes > 1 and not under_torchrun():
        relaunch(runtime.processes, __file__, [name, params_path])  # GENLAB_PROCESSES=N: this script as N ranks
        return
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
    device = world.device(setup_torch(runtime.device, runtime.threads, params.seed, local_ranks))
    if bf16:
        check_bf16(f"{name}.precision", device, force=runtime.force_bf16)
    world.init(device)

    data = TrainingData.load(paths.data, device)
    # Before the classifier is built: initial weights come from the seeded global RNG.
    model = registry.model_class(kind).from_config(cfg)
    classifier, record = load_classifier(paths.classifier_model, device)
    config = {
        "seed": params.seed,
        "data_sha256": dataset_checksum(paths.data),
        "classifier_sha256": record["weights_sha256"],  # the feature space of the per-epoch diagnostics
        name: cfg.record(),
    }
    if world.distributed:
        config["world_size"] = world.size  # another optimisation's bits: its own run and resumable state
    trainer = registry.trainer_class(kind)(
        model,
        cfg,
        data,
        name=name,
        config=config,
        seed=params.seed,
        device=device,
        diagnostics=lambda images, labels: sample_diagnostics(classifier, images, labels),
        world=world,
    )
    epochs = cfg.epochs  # type: ignore[attr-defined]
    try:
        train_and_track(
            trainer, tracker=tracker, epochs=epochs, dataset=params.data.dataset, paths=paths, runtime=runtime
        )
    finally:
        world.finish()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python pipeline/train.py NAME [PARAMS]  (a model in params.yaml's models)")
    run_stage(f"train@{sys.argv[1]}", main, *sys.argv[1:])
