"""Stage evaluate@<name>: the sample metrics of one trained model (and a conditional model's conditional accuracy
and per-class FID), plus the model's own test-set metrics; logged to the run that trained it. With the name
`real` (stage evaluate_floor): the same sample metrics of real training images, the floor every model is read
against. Usage: python pipeline/evaluate.py NAME

Every sample metric is computed in the feature space of the train_classifier stage's CNN; its test accuracy and
weights hash are recorded beside the metrics, since FID values only compare within one feature extractor.
"""

from __future__ import annotations

import genlab  # noqa: F401  first: sets OpenMP's wait policy before torch loads (genlab/__init__.py)

# isort: split

import json
import sys
from typing import Any

from genlab import registry
from genlab.config import FLOOR, flatten, load_params, load_runtime, require_at_most
from genlab.data import TrainingData, dataset_checksum, dataset_origin
from genlab.entry import run_stage
from genlab.errors import GenlabError
from genlab.evaluate import conditional_metrics, generated_samples, real_samples
from genlab.feature_extractor import load_classifier
from genlab.io import atomic_write_json
from genlab.metrics import RealReference, sample_metrics
from genlab.progress import summary_line
from genlab.runtime import setup_torch
from genlab.tracking import Tracker


def main(name: str, params_path: str = "params.yaml") -> None:
    params = load_params(params_path)
    runtime = load_runtime()
    if name != FLOOR and name not in params.models:
        raise GenlabError(f"{name!r} is neither {FLOOR!r} nor a model in params.yaml's models {sorted(params.models)}")
    cfg, paths, seed = params.evaluate, params.paths, params.seed
    # Before any work: a store that cannot be reached fails the stage now, not after the metrics are computed.
    tracker = None if name == FLOOR else Tracker(runtime.tracking_uri, runtime.experiment)
    device = setup_torch(runtime.device, runtime.threads, seed)
    data = TrainingData.load(paths.data, device)
    if name == FLOOR:
        available = data.train_images.shape[0]
        require_at_most("evaluate.num_samples", cfg.num_samples, available, "training images the floor draws from")
    classifier, feature_extractor = load_classifier(paths.classifier_model, device)
    if name != FLOOR:
        model, checkpoint = registry.load_model(paths.model(name), device)
    reference = RealReference(classifier, data.test_images, knn_k=cfg.knn_k, batch_size=cfg.batch_size)

    def scores(images) -> dict[str, Any]:
        return sample_metrics(reference, images, c2st_epochs=cfg.c2st_epochs, c2st_lr=cfg.c2st_lr, seed=seed)

    metrics: dict[str, Any] = {"feature_extractor": feature_extractor}
    if name == FLOOR:  # what a perfect model would score
        metrics.update(scores(real_samples(data.train_images, cfg.num_samples, seed=seed)))
    else:
        images, labels = generated_samples(model, cfg.num_samples, seed=seed, batch_size=cfg.batch_size)
        metrics.update(scores(images))
        if labels is not None:
            metrics.update(conditional_metrics(reference, data.test_labels, images, labels))
        metrics.update(model.evaluation_metrics(data.test_images, data.test_labels, seed=seed, cfg=cfg))
    atomic_write_json(paths.evaluation(name), metrics)
    print(summary_line(f"[evaluate {name}]", metrics, f"| all: {paths.evaluation(name)}"))
    if tracker is None:
        return

    floor = json.loads(paths.evaluation(FLOOR).read_text())
    description = (
        f"Evaluates {name}: {cfg.num_samples} samples against {data.test_images.shape[0]} test images, in the"
        f" feature space of the classifier {feature_extractor['weights_sha256'][:12]}; floor/ is real data."
    )
    with tracker.stage_run(
        "evaluate", paths.model(name), description, paths.git_tracked_outputs(), checkpoint=checkpoint
    ):
        # The model's own config (what the checkpoint was trained with) beside the evaluation's: the run compares
        # on its own in the MLflow UI.
        tracker.log_config({**checkpoint["config"], "evaluate": cfg.model_dump()})
        dataset = params.data.dataset
        tracker.log_dataset(
            dataset, dataset_checksum(paths.data), dataset_origin(dataset, paths.data), context="evaluation"
        )
        tracker.log_metrics(scalars(metrics), prefix="eval/")
        tracker.log_metrics(scalars(floor), prefix="floor/")
        tracker.log_metrics({"classifier_test_accuracy": feature_extractor["test_accuracy"]}, prefix="eval/")
        tracker.set_tags({"genlab.classifier_sha256": feature_extractor["weights_sha256"]})


def scalars(values: dict) -> dict[str, float]:
    """The numbers only, nested dicts flattened with dots (class_share.3); the feature extractor's record aside."""
    values = {k: v for k, v in values.items() if k != "feature_extractor"}
    return {k: float(v) for k, v in flatten(values).items() if isinstance(v, int | float)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python pipeline/evaluate.py NAME  (a model in params.yaml's models, or {FLOOR})")
    run_stage(f"evaluate@{sys.argv[1]}" if sys.argv[1] != FLOOR else "evaluate_floor", main, sys.argv[1])
