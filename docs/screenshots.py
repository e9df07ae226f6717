"""Regenerate docs/screenshots/*.png: what a person sees of a sweep in the MLflow UI (run by hand, not in CI).

    .venv/bin/python docs/screenshots.py                 # a small sweep in a temporary folder, then the pages
    .venv/bin/python docs/screenshots.py --store DIR     # the pages of a store already there (DIR/mlflow.db)
    .venv/bin/python docs/screenshots.py --store DIR --only pareto_view.png   # one picture

Needs Debian's ``chromium`` (``apt-get install chromium``). Starts the README's ``mlflow ui`` command on a free
port, opens each page in headless Chromium and saves it; nothing is clicked, so each picture is what the page
shows when it opens. The *Model metrics* tab is left out: its charts never finish drawing in headless Chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
# The smallest sweep that still trains, prunes and logs: three budgets, seconds per trial.
SWEEP = ["budgets=0.25,0.5,1.0", "experiment=screenshots", "model.weights=null", "model.width=0.25",
         "data.train_per_class=16", "data.val_per_class=8", "train.epochs=2", "train.steps_per_epoch=4",
         "mlflow.system_metrics_every_s=1"]
WINDOW = "1500,1800"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(store: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "RAY_ADDRESS": ""}
    subprocess.run([sys.executable, "-m", "orchestrator.sweep", *SWEEP], cwd=store, env=env, check=True)


def serve(store: Path, port: int) -> subprocess.Popen:
    """The README's UI command (no GenAI job runners), on ``port``."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                               f"sqlite:///{store}/mlflow.db", "--port", str(port)], cwd=store, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("mlflow ui did not answer within 120 s")


def screenshot(url: str, path: Path) -> None:
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--hide-scrollbars", f"--window-size={WINDOW}",
                    "--virtual-time-budget=15000", f"--screenshot={path}", url], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    print(f"{path.relative_to(REPO)}  <-  {url}")


def pages(store: Path) -> dict[str, str]:
    """File name -> page, for the latest sweep of the store."""
    from mlflow.tracking import MlflowClient

    from orchestrator.saved_view import view_id
    from orchestrator.tracking import SWEEP_TAG, TRIAL_ID_TAG

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (parent,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   filter_string=f"tags.`{SWEEP_TAG}` != ''", order_by=["start_time DESC"],
                                   max_results=1)
    experiment = parent.info.experiment_id
    child = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                               f"and tags.`{TRIAL_ID_TAG}` != '' and tags.pareto_optimal = 'true'",
                               max_results=1)[0]
    (model,) = client.search_logged_models([experiment], filter_string=f"source_run_id = '{child.info.run_id}'")
    run, training = f"/#/experiments/{experiment}/runs", "?workflowType=machine_learning"
    return {
        "experiment.png": f"/#/experiments/{experiment}{training}",
        "sweep_overview.png": f"{run}/{parent.info.run_id}{training}",
        "sweep_front_artifact.png": f"{run}/{parent.info.run_id}/artifacts/front.json{training}",
        "trial_overview.png": f"{run}/{child.info.run_id}{training}",
        "trial_model.png": f"/#/experiments/{experiment}/models/{model.model_id}{training}",
        "models.png": f"/#/experiments/{experiment}/models{training}",
        # the sweep's shared "Pareto" view (orchestrator.saved_view): MLflow draws its scatter of trials
        "pareto_view.png": f"{run}?viewStateShareKey={view_id(parent.info.run_id)}&compareRunsMode=CHART",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="folder with mlflow.db (default: a new small sweep)")
    parser.add_argument("--only", nargs="*", help="these pictures only (e.g. pareto_view.png)")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="bap-screenshots-") as tmp:
        store = args.store.resolve() if args.store else Path(tmp)
        if args.store is None:
            run_sweep(store)
        port = free_port()
        server = serve(store, port)
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            for name, page in pages(store).items():
                if args.only and name not in args.only:
                    continue
                screenshot(f"http://127.0.0.1:{port}{page}", OUT / name)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
