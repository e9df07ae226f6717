"""One trial on a Ray worker: ``bap.train`` with Tune reporting, Tune checkpoints and MLflow records.

The only module that calls ``tune.report`` / ``tune.get_checkpoint``. Every epoch the bap checkpoint is handed
to Tune, so a retried trial (``FailureConfig``) or a restored sweep continues from its last epoch. Metrics go
to the trial's own MLflow child run, found again (not duplicated) when the trial is retried.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import shutil
import tempfile
from typing import Any, Mapping

import yaml
from ray import tune

import bap
from bap import metrics as M
from bap.engine.hooks import CHECKPOINT_NAME
from orchestrator.config import SweepConfig, domain_set_name, trial_config, trial_name
from orchestrator.tracking import Recorder, client_for, find_or_create_child, flatten, with_retries

log = logging.getLogger(__name__)

# The columns of Tune's progress table (with the trial's budget parameter); acc_mean is the validation mean
# during training and the pruned model's at the end.
PROGRESS_METRICS = ("epoch", M.ACC_MEAN, M.PARAMS_RATIO)


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _domain_table(result: bap.TrainResult) -> str:
    m = result.metrics
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["domain", "classes", "acc", "budget_usage", "projected_off", "macs"])
    for domain in result.pruned.domains:
        writer.writerow([domain, result.pruned.num_classes[domain], f"{m[M.acc_key(domain)]:.2f}",
                         f"{m[M.budget_usage_key(domain)]:.4f}", int(m[M.projected_off_key(domain)]),
                         int(m[M.macs_key(domain)])])
    return out.getvalue()


def _logged_epochs(recorder: Recorder) -> set[int]:
    try:
        return {m.step for m in recorder.client.get_metric_history(recorder.run_id, M.VAL_ACC_MEAN)}
    except Exception:  # server down: what it misses is re-logged from the checkpoint's history next time
        return set()


def run_trial(
    params: dict[str, Any],
    *,
    sweep: SweepConfig,
    experiment_id: str,
    parent_run_id: str,
    spool_dir: str,
    weights: Mapping[str, bytes] | None = None,
) -> None:
    """Tune's trainable. ``params`` holds the trial's axis values (backbone, domains, sharing, budget, seed);
    ``weights`` maps backbone -> pretrained state-dict bytes, shipped through Ray's object store so workers on
    other machines need no copy of the driver's files."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = trial_config(sweep, params)
    work = tempfile.mkdtemp(prefix="bap-trial-")
    try:
        if weights and params["backbone"] in weights:
            path = os.path.join(work, "backbone.pt")
            with open(path, "wb") as f:
                f.write(weights[params["backbone"]])
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=path))
        _run(cfg, params, sweep, experiment_id, parent_run_id, spool_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(cfg: bap.ExperimentConfig, params: dict[str, Any], sweep: SweepConfig, experiment_id: str,
         parent_run_id: str, spool_dir: str, work: str) -> None:
    client = client_for(sweep.mlflow.tracking_uri)
    trial_id = tune.get_context().get_trial_id()
    name = trial_name(params)
    run_id = find_or_create_child(client, experiment_id, parent_run_id, trial_id, name)
    recorder = Recorder(client, run_id, spool_dir)
    config_dict = dataclasses.asdict(cfg)
    recorder.log_params({**flatten(config_dict), "budget": params["budget"], "sharing_loss": params["sharing"],
                         "domain_set": domain_set_name(params["domains"])})
    recorder.set_tags({"budget": params["budget"], "sharing": params["sharing"], "backbone": params["backbone"],
                       "domain_set": domain_set_name(params["domains"]), "seed": params["seed"]})

    checkpoint_dir = os.path.join(work, "checkpoint")
    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as restored:
            shutil.copytree(restored, checkpoint_dir, dirs_exist_ok=True)
        resume = os.path.isfile(os.path.join(checkpoint_dir, CHECKPOINT_NAME))
        log.info("trial %s resumes from its Tune checkpoint", trial_id)
    logged = _logged_epochs(recorder) if resume else set()

    def report(epoch_metrics: dict[str, Any]) -> None:
        epoch = int(epoch_metrics["epoch"])
        numeric = _numeric(epoch_metrics)
        tune.report({**numeric, "budget": params["budget"], M.ACC_MEAN: numeric[M.VAL_ACC_MEAN]},
                    checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        recorder.log_metrics(numeric, step=epoch)

    if resume:
        import torch

        state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_NAME), map_location="cpu", weights_only=True)
        for entry in state["history"]:  # epochs finished before the crash that MLflow never received
            if int(entry["epoch"]) not in logged:
                recorder.log_metrics(_numeric(entry), step=int(entry["epoch"]))

    result = bap.train(cfg, callback=report, checkpoint_dir=checkpoint_dir, resume=resume)

    final = dict(result.metrics)
    final[M.BUDGET_MET] = float(final[M.BUDGET_MET])
    recorder.log_metrics(final, step=cfg.train.epochs)
    recorder.log_text(yaml.safe_dump(config_dict, sort_keys=False), "config.yaml")
    recorder.log_text(_domain_table(result), "domains.csv")
    model_path = os.path.join(os.path.dirname(recorder.spool_path), f"{run_id}.files", "model.bap")
    bap.save(result.pruned.cpu(), model_path)
    recorder.log_artifact(model_path, "model")
    recorder.terminate("FINISHED")
    if not with_retries(recorder.flush, "flushing the trial's MLflow records", timeout_s=30):
        log.warning("MLflow still unreachable: %d write(s) of run %s wait in %s; run "
                    "`python -m orchestrator.report --sync` when the server is back",
                    recorder.pending(), run_id, recorder.spool_path)
    # The final, pruned-model metrics are the trial's result; Tune keeps the last report.
    tune.report({**_numeric(final), "budget": params["budget"], "epoch": cfg.train.epochs,
                 "mlflow_run_id": run_id, "final": 1.0})
