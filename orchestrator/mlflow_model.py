"""Every trial's pruned model as an MLflow logged model: a pyfunc serving all its domains
(``orchestrator.model_registry`` registers the front's).

The pyfunc wraps the trial's ``.bap`` file (``bap.save``: weights only, loading it unpickles nothing). Its input is
a batch of rows ``{"domain": str, "image": C x H x W floats}``: each row names its domain, because one model serves
several. An image is the normalized tensor that domain's eval transform yields (``bap.data``): the model holds no
preprocessing, and Decathlon domains differ in size. Its output is one row per input, ``{"logits": [...]}``, as
many as that domain has classes. A row the model cannot answer truly (an unknown domain, an image not 3 x H x W
of its domain's size, a NaN or infinite value) is refused, naming the row and the reason: ``mlflow models serve``
answers HTTP 400 with that message, never logits of a wrong-sized image or a body of NaN.

How it loads elsewhere: the model is logged from code, this very file, which ``mlflow.pyfunc.load_model`` runs
(no pickled class), and the ``bap`` package goes in as ``code_paths``, which MLflow puts first on ``sys.path``. A
lab needs only the model's listed requirements (torch, numpy, tqdm, pandas, mlflow), not ``bap-sweeps``, whose
pyproject pulls in Ray and Hydra, and it gets the very ``bap`` that wrote the file, so the format version always
matches. That is why this file imports nothing from ``orchestrator``.
"""

from __future__ import annotations

import logging
import os
import shutil
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

import bap

if TYPE_CHECKING:  # annotations only: the model's copy of this file runs without orchestrator
    from orchestrator.spool import Recorder

log = logging.getLogger(__name__)

# The logged model's name, and the run's artifact folder holding the same files when MLflow was unreachable.
MODEL_NAME = "bap_pyfunc"
# Doubles in, as JSON numbers are (MLflow will not narrow them to float32 itself); the model computes in float32.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string, "domain"), ColSpec(Array(Array(Array(DataType.double))), "image")]),
    outputs=Schema([ColSpec(Array(DataType.double), "logits")]),
)
_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "tqdm")  # what `import bap` and the wrapper import


def _refuse(message: str) -> mlflow.MlflowException:
    """A client's error: the scoring server answers 400 with ``message``, not 500."""
    return mlflow.MlflowException.invalid_parameter_value(message)


def checked_image(i: int, domain: str, image: Any, sizes: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """Row ``i``'s image as a float32 tensor, if it is 3 x H x W of ``domain``'s size (``sizes``: domain ->
    (H, W), empty for a model logged before sizes were recorded) and finite; else the refusal naming the row."""
    try:
        x = np.asarray(image, dtype=np.float32)
    except (ValueError, TypeError) as error:  # ragged nested lists, strings
        raise _refuse(f"row {i}: image is no C x H x W array of numbers ({error})") from None
    side = sizes.get(domain)
    want = f"3 x {side[0]} x {side[1]}" if side else "3 x H x W"
    if x.ndim != 3 or x.shape[0] != 3 or (side and tuple(x.shape[1:]) != tuple(side)):
        raise _refuse(f"row {i}: image of shape {' x '.join(map(str, x.shape))}, but domain {domain!r} takes "
                      f"{want} (the normalized tensor of its eval transform)")
    if not np.isfinite(x).all():
        raise _refuse(f"row {i}: image has NaN or infinite values")
    return torch.from_numpy(x)


class BapModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model = bap.load(context.artifacts["model"])
        self.input_sizes = (context.model_config or {}).get("input_sizes", {})

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        unknown = sorted(set(model_input["domain"]) - set(self.model.domains))
        if unknown:
            raise _refuse(f"unknown domain(s) {unknown}; this model serves {self.model.domains}")
        # One forward per domain and image size, the rows put back in input order.
        groups: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
        for i, (domain, image) in enumerate(zip(model_input["domain"], model_input["image"])):
            x = checked_image(i, domain, image, self.input_sizes)
            groups.setdefault((domain, tuple(x.shape)), []).append((i, x))
        logits: list[list[float]] = [[] for _ in range(len(model_input))]
        with torch.inference_mode():
            for (domain, _), rows in groups.items():
                for (i, _), out in zip(rows, self.model(torch.stack([x for _, x in rows]), domain)):
                    logits[i] = out.tolist()
        return pd.DataFrame({"logits": logits})


if __name__ != "orchestrator.mlflow_model":  # run by MLflow as the model's code, not imported as this library
    mlflow.models.set_model(BapModel())


def _requirements() -> list[str]:
    # Without the local label (2.14.0+cpu -> 2.14.0), which any build of that release satisfies.
    return [f"{name}=={version(name).split('+')[0]}" for name in _REQUIREMENTS]


def save_pyfunc_model(bap_path: str, directory: str, input_sizes: Mapping[str, Sequence[int]]) -> None:
    """Write the pyfunc model of the ``.bap`` file at ``bap_path`` to ``directory`` (replaced if it exists);
    ``input_sizes`` (domain -> (H, W)) is what it checks each row's image against."""
    num_classes = bap.load(bap_path).num_classes
    sizes = {domain: [int(v) for v in input_sizes[domain]] for domain in num_classes}
    domains = list(num_classes)[:2]
    shutil.rmtree(directory, ignore_errors=True)  # a retried trial saves again
    mlflow.pyfunc.save_model(
        directory, python_model=__file__, artifacts={"model": bap_path},
        code_paths=[os.path.dirname(bap.__file__)], signature=SIGNATURE,
        input_example=pd.DataFrame({"domain": domains, "image": [np.zeros((3, *sizes[d])).tolist() for d in domains]}),
        pip_requirements=_requirements(), metadata={"num_classes": num_classes, "input_sizes": sizes},
        model_config={"input_sizes": sizes},
    )


def log_pyfunc_model(recorder: Recorder, bap_path: str, input_sizes: Mapping[str, Sequence[int]]) -> str | None:
    """Log the ``.bap`` file at ``bap_path`` (its domains' image sizes: ``input_sizes``) as the logged model
    ``MODEL_NAME`` of ``recorder``'s run; returns its model id, or None when MLflow was unreachable.

    Then its files reach the run through the spool, as the artifact folder ``MODEL_NAME``. Once replayed they load
    and serve as ``runs:/<run id>/bap_pyfunc`` (the same URI as a logged model's) and
    ``model_registry.register_front_models`` registers them, but they are no logged model: the run lists none and
    there is no ``models:/<id>`` URI. A logged model the outage interrupted stays PENDING, never registered."""
    directory = os.path.join(os.path.dirname(bap_path), MODEL_NAME)
    save_pyfunc_model(bap_path, directory, input_sizes)
    client, run_id = recorder.client, recorder.run_id
    try:
        experiment_id = client.get_run(run_id).info.experiment_id
        model_id = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id).model_id
        client.log_model_artifacts(model_id, directory)
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
        client.finalize_logged_model(model_id, LoggedModelStatus.READY)
    except Exception as error:  # any transport or server error, as in the Recorder
        log.warning("MLflow unreachable (%s): the pyfunc model of run %s is spooled as its artifact folder %s",
                    type(error).__name__, run_id, MODEL_NAME)
        recorder.log_artifact(directory)
        return None
    shutil.rmtree(directory)
    return model_id
