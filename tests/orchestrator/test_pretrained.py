"""The default ``model.weights=embedded``: each backbone is pretrained once on the embedded source domain, cached,
and shipped as bytes that build a model; a file path is read as it is."""

import dataclasses
import io

import pytest
import torch

from bap import build_model
from orchestrator import pretrained
from orchestrator.config import EMBEDDED_WEIGHTS, SweepConfig, plan_sweep

pytestmark = pytest.mark.slow  # one short pretraining (about ten seconds on 2 cores)


def test_embedded_weights_are_pretrained_once_cached_and_loadable(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "CACHE_DIR", str(tmp_path / "cache"))
    cfg = SweepConfig()
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, weights=EMBEDDED_WEIGHTS, width=0.125),
        data=dataclasses.replace(cfg.data, image_size=16, source_train_per_class=8),
        train=dataclasses.replace(cfg.train, device="cpu"))
    (blob,) = pretrained.backbone_weights(plan_sweep(cfg)).values()
    state = torch.load(io.BytesIO(blob), weights_only=True)
    assert state["fc.weight"].shape[0] == 10  # the embedded source domain's ten shapes: a real pretrained head
    path = tmp_path / "backbone.pt"
    path.write_bytes(blob)
    model = build_model("resnet26", {"digits": 10}, width=0.125, weights=str(path))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])

    def no_second_pretraining(*args, **kwargs):
        raise AssertionError("pretrained again instead of reading the cache")

    monkeypatch.setattr(pretrained, "pretrain", no_second_pretraining)
    assert pretrained.backbone_weights(plan_sweep(cfg)) == {"resnet26": blob}
    file_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=str(tmp_path / "{backbone}.pt")))
    (tmp_path / "resnet26.pt").write_bytes(b"bytes as they are")
    assert pretrained.backbone_weights(plan_sweep(file_cfg)) == {"resnet26": b"bytes as they are"}


def test_a_data_draw_is_also_the_pretraining_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "CACHE_DIR", str(tmp_path / "cache"))
    seeds, real = [], pretrained.pretrain

    def recording(cfg, *args, **kwargs):
        seeds.append(cfg.seed)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(pretrained, "pretrain", recording)
    cfg = SweepConfig()
    blobs = []
    for draw in (0, 1):
        cfg = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, weights=EMBEDDED_WEIGHTS, width=0.125),
            data=dataclasses.replace(cfg.data, image_size=16, source_train_per_class=8, seed=draw),
            train=dataclasses.replace(cfg.train, device="cpu"))
        blobs += pretrained.backbone_weights(plan_sweep(cfg)).values()
    assert seeds == [0, 1] and blobs[0] != blobs[1]


def test_a_sweep_pretrains_as_a_ray_task_with_a_trials_resources(tmp_path, monkeypatch):
    # Inside Ray's CPU accounting: the driver's machine may have no CPU to spare (the compose sweep container).
    import os

    import ray

    monkeypatch.setattr(pretrained, "CACHE_DIR", str(tmp_path / "driver-cache"))
    monkeypatch.setenv("BAP_CACHE_DIR", str(tmp_path / "node-cache"))  # the task's node reads its own
    cfg = SweepConfig()
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, weights=EMBEDDED_WEIGHTS, width=0.125),
        data=dataclasses.replace(cfg.data, image_size=16, source_train_per_class=8),
        train=dataclasses.replace(cfg.train, device="cpu"))
    ray.init(address="local", num_cpus=1, include_dashboard=False)  # never a cluster someone started here
    try:
        (blob,) = pretrained.backbone_weights(plan_sweep(cfg), in_ray=True).values()
        node_files = os.listdir(tmp_path / "node-cache")
    finally:
        ray.shutdown()
    assert torch.load(io.BytesIO(blob), weights_only=True)["fc.weight"].shape[0] == 10
    assert len(node_files) == 1  # pretrained in the task, into its node's cache
    (cached,) = (tmp_path / "driver-cache").iterdir()
    assert cached.read_bytes() == blob  # and the driver keeps a copy
