"""What a training stage does around the trainer: resumable state, MLflow logging, the DVC outputs.

Kept out of pipeline/ so every model's training stage shares one implementation, and out of genlab.trainer so
the trainers stay free of I/O policy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlab.config import PathsConfig, Runtime, flatten
from genlab.io import atomic_torch_save, atomic_write_json, atomic_write_text
from genlab.render import grid_image
from genlab.tracking import TAG_CHECKPOINT, TAG_KIND, TAG_MODEL, Tracker, dvc_tags, file_sha256, git_tags
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


def history_csv(history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def train_and_track(trainer: Trainer, *, epochs: int, paths: PathsConfig, runtime: Runtime) -> str:
    """Train (resuming if a checkpoint of the same config exists), log to MLflow, write the DVC outputs.

    Returns the MLflow run id. trainer.config becomes the run's params; the model's sampler is logged as the MLflow
    model.
    """
    name = trainer.name
    outputs = TrainingOutputs.of(paths, name)
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)
    checkpoint_every = runtime.checkpoint_every
    tags = {"genlab.device": str(trainer.device)}
    if "data_sha256" in trainer.config:
        tags["data.sha256"] = trainer.config["data_sha256"]
    key = config_key(trainer.config)
    state_path = outputs.state_dir / f"{name}-{key}.pt"
    run_file = outputs.state_dir / f"{name}-{key}.run.json"
    resumed_run = json.loads(run_file.read_text())["run_id"] if run_file.exists() and state_path.exists() else None

    all_tags = {TAG_MODEL: name, TAG_KIND: trainer.kind, **git_tags(), **dvc_tags(), **tags}
    with tracker.run(run_id=resumed_run, run_name=None if resumed_run else name, tags=all_tags) as run_id:
        atomic_write_json(run_file, {"run_id": run_id})
        if resumed_run is None:
            tracker.log_params(flatten(trainer.config))

        nrow = trainer.snapshot_extra().get("nrow", 8)  # a conditional model's rows are digits

        def on_epoch(r: EpochResult) -> None:
            tracker.log_metrics({k: v for k, v in r.metrics.items() if k != "epoch"}, step=r.epoch, prefix="train/")
            tracker.log_metrics({"epoch_seconds": r.seconds}, step=r.epoch, prefix="time/")
            tracker.log_image(grid_image(r.snapshot, nrow=nrow, scale=2), key=f"{name}/snapshot", step=r.epoch)

        trainer.fit(epochs, state_path=state_path, checkpoint_every=checkpoint_every, on_epoch=on_epoch)

        # DVC outputs: deterministic content only (no run ids, times or absolute paths).
        atomic_torch_save(outputs.model, trainer.state_dict())
        snapshots = {
            "epochs": [int(m["epoch"]) for m in trainer.history.metrics],
            "images": torch.stack(trainer.history.snapshots),
            **trainer.snapshot_extra(),
        }
        atomic_torch_save(outputs.snapshots, snapshots)
        atomic_write_text(outputs.history, history_csv(trainer.history.metrics))
        atomic_write_json(outputs.summary, trainer.history.metrics[-1])

        tracker.set_tags({TAG_CHECKPOINT: file_sha256(outputs.model)})
        tracker.log_artifact(outputs.history, artifact_path="history")
        latent, labels = trainer.sampler_example()
        tracker.log_sampler(trainer.model, name=f"{name}_sampler", latent=latent, labels=labels)

    # The run finished: its resumable state has served its purpose. Removing it makes `dvc repro --force`
    # train from scratch rather than "resume" a finished run.
    state_path.unlink(missing_ok=True)
    run_file.unlink(missing_ok=True)
    return run_id
