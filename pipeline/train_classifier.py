"""Stage train_classifier: the MNIST CNN whose features the sample metrics use. Trains once per dataset (cached)."""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

from pathlib import Path

from genlab.checkpoints import checkpoint_header
from genlab.classifier_training import train_classifier
from genlab.config import flatten, load_params, load_runtime, require_at_most
from genlab.data import TrainingData, dataset_checksum
from genlab.entry import run_stage
from genlab.errors import GenlabError
from genlab.feature_extractor import build_classifier, predict_logits
from genlab.io import atomic_torch_save, atomic_write_json, weights_sha256
from genlab.runtime import setup_torch
from genlab.streams import make_generator
from genlab.tracking import TAG_CHECKPOINT, TAG_MODEL, Tracker, dvc_tags, file_sha256, git_tags


def main(params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    cfg, paths = params.classifier, params.paths
    tracker = Tracker(runtime.tracking_uri, runtime.experiment)  # before any work: fails fast without a store
    device = setup_torch(runtime.device, runtime.threads, params.seed)
    data = TrainingData.load(paths.data, device)
    require_at_most("classifier.batch_size", cfg.batch_size, data.train_images.shape[0], "training images")
    config = {"seed": params.seed, "data_sha256": dataset_checksum(paths.data), "classifier": cfg.model_dump()}

    model = build_classifier(cfg.model_dump()).to(device)  # initial weights from the seeded global RNG
    # Training takes about a minute, so a killed run restarts from scratch, but in the same MLflow run: its id is
    # noted here until the stage ends, and the epochs it logged are not logged twice.
    with tracker.run(
        run_name="classifier",
        tags={TAG_MODEL: "classifier", **git_tags(outputs=paths.git_tracked_outputs()), **dvc_tags()},
        ledger=Path(paths.state) / "classifier.run.json",
    ) as run_id:
        logged = tracker.logged_steps(run_id, "train/loss")
        if not tracker.logged_params(run_id):
            tracker.log_params(flatten(config))

        def on_epoch(epoch: int, loss: float) -> None:
            print(f"[classifier] epoch {epoch}/{cfg.epochs}  loss {loss:.4f}")
            if epoch not in logged:
                tracker.log_metrics({"loss": loss}, step=epoch, prefix="train/")

        train_classifier(
            model,
            data.train_images,
            data.train_labels,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            max_lr=cfg.max_lr,
            rng=make_generator(params.seed, stream=5, device=device),
            on_epoch=on_epoch,
        )
        predicted = predict_logits(model, data.test_images).argmax(dim=1)
        accuracy = float((predicted == data.test_labels).double().mean())
        summary = {"test_accuracy": accuracy, "weights_sha256": weights_sha256(model)}
        print(f"[classifier] test accuracy {accuracy:.4f}  weights sha256 {summary['weights_sha256'][:12]}")
        tracker.log_metrics({"test_accuracy": accuracy}, prefix="eval/")
        if accuracy < cfg.min_test_accuracy:
            raise GenlabError(
                f"test accuracy {accuracy:.4f} is below classifier.min_test_accuracy"
                f" {cfg.min_test_accuracy}; metrics in its feature space would mislead. Train longer"
                " (classifier.epochs) or lower the threshold for a dataset it cannot reach."
            )
        state = {
            **checkpoint_header("classifier"),
            "config": config,
            "model": model.state_dict(),
            **summary,
        }
        atomic_torch_save(paths.classifier_model, state)
        atomic_write_json(paths.classifier_summary, summary)
        tracker.set_tags(
            {TAG_CHECKPOINT: file_sha256(paths.classifier_model), "genlab.weights_sha256": summary["weights_sha256"]}
        )


if __name__ == "__main__":
    run_stage("train_classifier", main)
