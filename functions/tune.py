"""The ``tune`` job: a hyperparameter search on Ray Tune, then the best configuration trained
and registered as ``candidate`` (and promoted when it beats production, as ``train`` does).

The search samples the learning rate (log-uniform), the width and the number of epochs
(``max_epochs`` at most); the ASHA scheduler stops weak trials early, by held-out AUC after
each epoch. Trials run on a local Ray started for the run (``cpus`` of them, one per trial),
or on the cluster ``RAY_ADDRESS`` names. Each finished trial is reported as progress.

Params (``sluice run tune --param trials=12``): ``model`` (fraud), ``trials`` (8),
``max_epochs`` (6), ``cpus`` (2), ``seed`` (0), ``holdout_days`` (2), ``promote`` (auto).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sluice.errors import SpecError

from . import layout
from .ray_session import ray_session
from .train import Data, Epoch, TrainParams, TrainResult, fit, train, training_data, typed_params


@dataclass(frozen=True)
class TuneParams:
    model: str = "fraud"
    trials: int = 8
    max_epochs: int = 6
    cpus: int = 2
    seed: int = 0
    holdout_days: int = 2
    promote: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.trials <= 1000:
            raise SpecError("tune params: trials must be 1 to 1000")
        if not 1 <= self.max_epochs <= 1000:
            raise SpecError("tune params: max_epochs must be 1 to 1000")
        if not 1 <= self.cpus <= 1024:
            raise SpecError("tune params: cpus must be at least 1")
        if self.promote not in ("auto", "always", "never"):  # before the search, not after
            raise SpecError("tune params: promote must be auto, always or never")

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> TuneParams:
        """From a run's params: unknown names and wrong types are refused by name."""
        return typed_params(cls, params, "tune")


@dataclass(frozen=True)
class Trial:
    config: dict[str, Any]
    auc: float
    epochs: int  # how far it ran (ASHA may have stopped it)


def _trial(config: dict[str, Any], data: tuple[np.ndarray, ...]) -> None:
    """One trial on a Ray worker: train, reporting the held-out AUC after each epoch."""
    from ray import tune

    x, y, x_held, y_held = data
    params = TrainParams(epochs=int(config["epochs"]), lr=float(config["lr"]),
                         width=int(config["width"]), seed=int(config["seed"]))

    def report(epoch: Epoch) -> None:
        tune.report({"auc": epoch.auc, "loss": epoch.loss, "epoch": epoch.epoch})

    fit(x, y, x_held, y_held, params, on_epoch=report)


def search(data: Data, params: TuneParams,
           progress: Callable[[float, float, str], None] | None = None) -> list[Trial]:
    """Every trial's configuration and best held-out AUC, best first."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    best: dict[str, tuple[float, int]] = {}  # trial id -> its best (AUC, epoch) so far

    class Progress(tune.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.done = 0

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                            result: dict[str, Any], **info: Any) -> None:
            if "auc" in result and result["auc"] > best.get(trial.trial_id, (-1.0, 0))[0]:
                best[trial.trial_id] = (float(result["auc"]), int(result["epoch"]))

        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                              **info: Any) -> None:
            self.done += 1
            result = trial.last_result or {}
            if progress is not None:
                progress(self.done, params.trials, f"trial {self.done}/{params.trials}: lr "
                         f"{trial.config['lr']:.4g}, width {trial.config['width']}, "
                         f"{result.get('epoch', 0)}/{trial.config['epochs']} epochs, "
                         f"held-out AUC {result.get('auc', float('nan')):.4f}")

    # quiet: no console tables in the run's log, no warning that TensorBoard is missing
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    with ray_session(params.cpus):  # a private local Ray, or the one RAY_ADDRESS names
        space = {"lr": tune.loguniform(1e-4, 3e-2), "width": tune.choice([8, 16, 32, 64]),
                 "epochs": tune.randint(1, params.max_epochs + 1), "seed": params.seed}
        with tempfile.TemporaryDirectory(prefix="sluice-tune-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(_trial, data=data), {"cpu": 1}),
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric="auc", mode="max", num_samples=params.trials,
                    scheduler=ASHAScheduler(time_attr="epoch", max_t=params.max_epochs,
                                            grace_period=1, reduction_factor=2),
                    search_alg=BasicVariantGenerator(random_state=params.seed)),
                run_config=tune.RunConfig(storage_path=storage, name="search", verbose=0,
                                          callbacks=[Progress()]))
            grid = tuner.fit()
            trials = []
            for result in (grid[i] for i in range(len(grid))):
                trial_id = (result.metrics or {}).get("trial_id")
                if result.error is not None or trial_id not in best or not result.config:
                    continue  # a failed trial: its error is in the run's log
                auc, epoch = best[trial_id]
                trials.append(Trial({k: result.config[k] for k in ("lr", "width", "epochs")},
                                    auc, epoch))
    if not trials:
        raise SpecError("tune: every trial failed; see the run's log")
    return sorted(trials, key=lambda trial: trial.auc, reverse=True)


def tune_and_train(store: Any, params: TuneParams, gpus: int = 0,
                   progress: Callable[[float, float, str], None] | None = None,
                   log_metrics: Callable[[dict[str, Any]], None] | None = None
                   ) -> tuple[list[Trial], TrainResult]:
    """The whole job: search, then train the best configuration (its best epoch count) with
    the train job's code, registering and promoting as it does."""
    data = training_data(store, params.holdout_days)
    trials = search(data, params, progress)
    best = trials[0]
    final = TrainParams(model=params.model, epochs=best.epochs, lr=best.config["lr"],
                        width=best.config["width"], seed=params.seed,
                        holdout_days=params.holdout_days, promote=params.promote)
    if log_metrics is not None:
        log_metrics({"trials": len(trials), "best_trial_auc": round(best.auc, 5)})
    return trials, train(store, final, gpus, progress, log_metrics, data)


def handler(context: Any, event: Any) -> dict[str, Any]:
    """The job's entry point (``sluice.functions.tune:handler``)."""
    params = TuneParams.from_params(event.body if isinstance(event.body, dict) else {})
    trials, result = tune_and_train(layout.store_from_env(), params,
                                    int(os.environ.get("SLUICE_GPUS", "0")),
                                    getattr(context, "progress", None),
                                    getattr(context, "log_metrics", None))
    outcome = {"model": f"{params.model}:{result.version}", "auc": round(result.auc, 5),
               "best": {**trials[0].config, "epochs": trials[0].epochs},
               "trials": [{**t.config, "ran_epochs": t.epochs, "auc": round(t.auc, 5)}
                          for t in trials],
               "promoted": result.promotion.promote, "decision": result.promotion.reason}
    context.logger.info_with("tuned", model=outcome["model"], auc=outcome["auc"],
                             best=outcome["best"], promoted=outcome["promoted"])
    return outcome
