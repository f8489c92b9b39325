"""What a training stage does around the trainer: resumable state, MLflow logging, the DVC outputs.

Kept out of pipeline/ so every model's training stage shares one implementation, and out of genlab.trainer so
the trainers stay free of I/O policy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.config import PathsConfig, Runtime
from genlab.data import dataset_origin
from genlab.io import atomic_torch_save, atomic_write_json, atomic_write_text, rows_csv
from genlab.render import grid_image
from genlab.tracking import (
    TAG_CHECKPOINT,
    TAG_EXPERIMENT,
    TAG_KIND,
    TAG_MODEL,
    TAG_STAGE,
    Tracker,
    dvc_tags,
    experiment_label,
    file_sha256,
    git_tags,
    run_title,
)
from genlab.trainer import EpochResult, Trainer


@dataclass(frozen=True)
class TrainingOutputs:
    model: Path  # final checkpoint (DVC out)
    snapshots: Path  # per-epoch uint8 images for render (DVC out)
    history: Path  # per-epoch metrics CSV (DVC plots)
    summary: Path  # final-epoch metrics JSON (DVC metrics)
    state_dir: Path  # resumable checkpoints: not a DVC out, so `dvc repro` does not erase them

    @classmethod
    def of(cls, paths: PathsConfig, name: str) -> TrainingOutputs:
        return cls(
            model=paths.model(name),
            snapshots=paths.snapshots(name),
            history=paths.history(name),
            summary=paths.summary(name),
            state_dir=Path(paths.state),
        )


def config_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def train_and_track(
    trainer: Trainer, *, tracker: Tracker | None, epochs: int, dataset: str, paths: PathsConfig, runtime: Runtime
) -> str | None:
    """Train (resuming if a checkpoint of the same config exists), log to MLflow, write the DVC outputs.

    Returns the MLflow run id. trainer.config becomes the run's params; the model's sampler is logged as the MLflow
    model. One run per configuration: a rerun after a kill, a failure or a lost tracking server continues the run
    that did not finish (its id is kept beside the resumable state), logging only the epochs it has not logged.
    Under torchrun, only rank 0 has a tracker and writes; the other ranks train beside it and return None.
    """
    name = trainer.name
    outputs = TrainingOutputs.of(paths, name)
    checkpoint_every = runtime.checkpoint_every
    key = config_key(trainer.config)
    state_path = outputs.state_dir / f"{name}-{key}.pt"
    if tracker is None:
        trainer.fit(epochs, state_path=state_path, checkpoint_every=checkpoint_every)
        trainer.state_dict()  # its part in the collective of rank 0's final save
        return None
    tags = {"genlab.device": str(trainer.device)}
    if "data_sha256" in trainer.config:
        tags["data.sha256"] = trainer.config["data_sha256"]

    git = git_tags(outputs=paths.git_tracked_outputs())  # what the pipeline writes does not make it dirty
    experiment = experiment_label(git=git)
    variant = getattr(trainer.cfg, "variant", None)
    all_tags = {
        TAG_MODEL: name,
        TAG_KIND: trainer.kind,
        TAG_STAGE: "train",
        TAG_EXPERIMENT: experiment,
        **git,
        **dvc_tags(),
        **tags,
    }
    description = (
        f"Trains {name} (kind {trainer.kind}{f', variant {variant}' if variant else ''}) for {epochs} epochs on"
        f" {dataset}, seed {trainer.seed}: {experiment}. Its render and evaluate runs are nested under it."
    )
    with tracker.run(
        run_name=run_title(name, variant, experiment),
        tags=all_tags,
        description=description,
        system_metrics=True,
        ledger=outputs.state_dir / f"{name}-{key}.run.json",
    ) as run_id:
        # Epochs a continued run logged before it was stopped: it repeats those after its last checkpoint.
        logged = tracker.logged_steps(run_id, "time/epoch_seconds")
        if not tracker.logged_params(run_id):
            tracker.log_config(trainer.config)
            if "data_sha256" in trainer.config:
                origin = dataset_origin(dataset, paths.data)
                tracker.log_dataset(dataset, trainer.config["data_sha256"], origin, context="training")

        nrow = trainer.snapshot_extra().get("nrow", 8)  # a conditional model's rows are digits

        def on_epoch(r: EpochResult) -> None:
            if r.epoch in logged:
                return
            tracker.log_metrics({k: v for k, v in r.metrics.items() if k != "epoch"}, step=r.epoch, prefix="train/")
            tracker.log_metrics({"epoch_seconds": r.seconds}, step=r.epoch, prefix="time/")
            tracker.log_image(grid_image(r.snapshot, nrow=nrow, scale=2), key=f"{name}/snapshot", step=r.epoch)

        trainer.fit(epochs, state_path=state_path, checkpoint_every=checkpoint_every, on_epoch=on_epoch)
        final_state = trainer.state_dict()  # a collective under torchrun: before rank 0 talks to the tracker
        # The last epoch's grid once more, alone under its own key: MLflow's image card opens at step 0, and
        # jumps to a key's step only when it has a single one, so this card shows the final samples at once.
        final = grid_image(trainer.history.snapshots[-1], nrow=nrow, scale=2)
        tracker.log_image(final, key=f"{name}/final", step=trainer.epoch)

        # DVC outputs: deterministic content only (no run ids, times or absolute paths).
        atomic_torch_save(outputs.model, final_state)
        snapshots = {
            "epochs": [int(m["epoch"]) for m in trainer.history.metrics],
            "images": torch.stack(trainer.history.snapshots),
            **trainer.snapshot_extra(),
        }
        atomic_torch_save(outputs.snapshots, snapshots)
        atomic_write_text(outputs.history, rows_csv(trainer.history.metrics))
        atomic_write_json(outputs.summary, trainer.history.metrics[-1])

        tracker.set_tags({TAG_CHECKPOINT: file_sha256(outputs.model)})
        tracker.log_artifact(outputs.history, artifact_path="history")
        latent, labels = trainer.sampler_example()
        tracker.log_sampler(
            trainer.model, name=f"{name}_sampler", latent=latent, labels=labels, registered_name=f"genlab-{name}"
        )

    # The run finished (and Tracker.run removed its ledger): its resumable state has served its purpose. Removing
    # it makes `dvc repro --force` train from scratch rather than "resume" a finished run.
    state_path.unlink(missing_ok=True)
    return run_id
