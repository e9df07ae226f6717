"""Is CPU training data-bound? Images/s of the real loaders against images/s the training step consumes.

Writes small but realistic data sets to a temporary directory: a Visual Decathlon devkit tree (COCO JSON,
JPEGs with shorter side 72) and an ImageNet-to-Sketch ImageFolder tree (256x256 JPEGs), read by ``bap.data``'s
readers with the paper's train transforms. For each backbone with its data set, one measurement run interleaves:
- ``step``: the trainer's optimizer step (``Trainer.run_step``: one batch per domain, switches, budget and sharing
  terms) on preloaded batches;
- ``loader``: the batches of one epoch from ``Trainer.epoch_batches`` (``train_batches`` per domain, a fresh
  DataLoader per epoch as in training) with 0, 1 and 2 workers, without training; its rate is taken after the
  first batch, and the start-up (worker processes, first batch) reported apart, since a real epoch of 25 to 500
  steps pays it once;
- ``training``: one epoch of loading and stepping together, as ``Trainer.fit`` runs it.
Training is data-bound when the loader delivers fewer images/s than the step consumes.

    python -m benchmarks.data_loading [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import torch
from PIL import Image

from bap import ExperimentConfig
from bap.config import BudgetConfig, DataConfig, ModelConfig, TrainConfig
from bap.data import build_domains, decathlon, imagefolder, train_batches
from bap.engine.cpu_memory import retain_freed_memory
from bap.engine.trainer import Trainer
from bap.train import build_for
from benchmarks._common import (add_common_args, describe_machine, interleaved_times, machine_info, markdown_table,
                                print_result, write_section)

DEFAULT_WORKERS = DataConfig().num_workers  # what the trainer and every preset use unless told otherwise
WORKERS = tuple(sorted({0, 1, 2, DEFAULT_WORKERS}))
# (W, H) of the generated JPEGs: the Decathlon release is resized to shorter side 72; ImageNet-to-Sketch images
# are larger and vary (the sketches are ~1111 px PNGs), so 256 px is a cheap lower bound on their decode cost.
DECATHLON_SIZES = {"dtd": (96, 72), "svhn": (72, 72)}
SKETCH_SIZES = {"sketches": (256, 256), "flowers": (256, 256)}
JPEG_QUALITY = 90
WARMUP = 1  # untimed rounds before the timed ones


@dataclass(frozen=True)
class Setting:
    backbone: str
    width: float
    data: str  # DataConfig.name
    domains: tuple[str, ...]
    steps: int  # steps (batches per domain) in one timed epoch
    per_class: int  # train images per class on disk


# ---- data sets on disk ------------------------------------------------------------------------------------------
def natural_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A smooth colour field plus grain: compresses (and so decodes) like a photo, unlike pure noise or flat colour."""
    width, height = size
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    grain = rng.normal(0.0, 10.0, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8))


def write_decathlon_tree(root: str, sizes: Mapping[str, tuple[int, int]], per_class: Mapping[str, int],
                         seed: int = 0) -> str:
    """A devkit tree for ``sizes`` (domain -> JPEG size) with each domain's official class count: ``per_class``
    (split -> images per class) JPEGs under ``data/<domain>/<split>/`` and COCO JSON under ``annotations/``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for index, (domain, size) in enumerate(sizes.items()):
        # Category ids start at a per-domain offset in the release, so labels must come from sorted ids.
        categories = [{"id": 1000 * (index + 1) + c, "name": f"class{c}"} for c in range(decathlon.DOMAINS[domain])]
        for split, count in per_class.items():
            os.makedirs(os.path.join(root, "data", domain, split), exist_ok=True)
            images, annotations = [], []
            for category in categories:
                for _ in range(count):
                    image_id = len(images) + 1
                    file_name = f"data/{domain}/{split}/{image_id:06d}.jpg"
                    natural_image(rng, size).save(os.path.join(root, file_name), quality=JPEG_QUALITY)
                    images.append({"id": image_id, "file_name": file_name})
                    annotations.append({"id": image_id, "image_id": image_id, "category_id": category["id"]})
            with open(os.path.join(root, "annotations", f"{domain}_{split}.json"), "w", encoding="utf-8") as handle:
                json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
    return root


def write_imagefolder_tree(root: str, sizes: Mapping[str, tuple[int, int]], per_class: Mapping[str, int],
                           seed: int = 0) -> str:
    """``<root>/<domain>/<split>/<class>/*.jpg`` with each domain's published class count."""
    rng = np.random.default_rng(seed)
    for domain, size in sizes.items():
        for split, count in per_class.items():
            for c in range(imagefolder.DOMAINS[domain]):
                folder = os.path.join(root, domain, split, f"class{c:03d}")
                os.makedirs(folder, exist_ok=True)
                for k in range(count):
                    natural_image(rng, size).save(os.path.join(folder, f"{k:04d}.jpg"), quality=JPEG_QUALITY)
    return root


def build_data(setting: Setting, tmp: str) -> DataConfig:
    """Write the setting's tree under ``tmp`` and return the DataConfig that reads it."""
    root = os.path.join(tmp, setting.data)
    if setting.data == "decathlon":
        write_decathlon_tree(root, {d: DECATHLON_SIZES[d] for d in setting.domains},
                             {"train": setting.per_class, "val": 1})
    else:
        write_imagefolder_tree(root, {d: SKETCH_SIZES[d] for d in setting.domains},
                               {"train": setting.per_class, "test": 1})
    return DataConfig(name=setting.data, root=root, domains=list(setting.domains))


# ---- measurement ------------------------------------------------------------------------------------------------
def settings(quick: bool, device: str = "cpu") -> tuple[list[Setting], int, int]:
    """The (backbone, data) settings, the batch size per domain and the number of timed rounds.

    ``per_class`` gives every domain at least one batch of distinct train images (svhn has 10 classes). On CUDA:
    the full-width nets at the papers' batch size, where the step is fastest against the loaders.
    """
    if device == "cuda":
        return [Setting("resnet26", 1.0, "decathlon", ("dtd", "svhn"), steps=10, per_class=7),
                Setting("resnet50", 1.0, "imagenet_sketch", ("sketches", "flowers"), steps=5, per_class=2)], 64, 5
    if quick:
        return [Setting("resnet26", 0.25, "decathlon", ("dtd", "svhn"), steps=2, per_class=2),
                Setting("resnet50", 0.125, "imagenet_sketch", ("sketches", "flowers"), steps=2, per_class=1)], 8, 5
    return [Setting("resnet26", 0.25, "decathlon", ("dtd", "svhn"), steps=10, per_class=4),
            Setting("resnet50", 0.25, "imagenet_sketch", ("sketches", "flowers"), steps=3, per_class=1)], 32, 5


def trainer_for(setting: Setting, data: DataConfig, domains: Mapping, batch: int, workers: int,
                device: str = "cpu") -> Trainer:
    """A trainer as ``bap.train`` builds it (random weights: speed does not depend on them), BAP at budget 0.5;
    on CUDA with AMP, as training there runs."""
    cfg = ExperimentConfig(
        model=ModelConfig(backbone=setting.backbone, width=setting.width), budget=BudgetConfig(beta=0.5),
        data=replace(data, num_workers=workers),
        train=TrainConfig(steps_per_epoch=setting.steps, batch_size=batch, device=device, amp=True),
    )
    torch.manual_seed(0)
    retain_freed_memory()  # as the trial's entry point does
    return Trainer(build_for(cfg, domains), domains, cfg)


def measure(setting: Setting, data: DataConfig, batch: int, rounds: int, device: str = "cpu") -> dict[str, float]:
    """Medians over ``rounds`` rounds in which every function runs once, interleaved: images/s of the step
    (``step``), of loading and stepping (``training w``) and of the loader once its first batch is out
    (``loader w``), and the loader's start-up (``startup w``: seconds from the epoch's start to the first batch
    of every domain), which an epoch pays once however long it is."""
    if setting.steps < 2:
        raise ValueError(f"steps={setting.steps}: the loader's rate after its first batch needs at least 2 steps")
    domains = build_domains(data)
    trainers = {w: trainer_for(setting, data, domains, batch, w, device) for w in WORKERS}
    preloaded = {d: next(train_batches(domains[d].train, batch, 1, seed=0)) for d in domains}
    startups: dict[int, list[float]] = {w: [] for w in WORKERS}

    def step() -> None:
        for _ in range(setting.steps):
            trainers[DEFAULT_WORKERS].run_step(preloaded)

    def loader(w: int):
        def run() -> None:
            start = time.perf_counter()
            batches = trainers[w].epoch_batches()
            next(batches)
            startups[w].append(time.perf_counter() - start)
            for _ in batches:
                pass
        return run

    def training(w: int):
        def run() -> None:
            for batches in trainers[w].epoch_batches():
                trainers[w].run_step(batches)
        return run

    fns = {"step": step, **{f"loader {w}": loader(w) for w in WORKERS},
           **{f"training {w}": training(w) for w in WORKERS}}
    times = interleaved_times(fns, repeats=rounds, warmup=WARMUP)
    per_step = len(domains) * batch
    rates = {name: setting.steps * per_step / statistics.median(times[name])
             for name in ("step", *(f"training {w}" for w in WORKERS))}
    for w in WORKERS:
        startup = startups[w][WARMUP:]  # the warm-up round ran too but is not among the times
        rates[f"loader {w}"] = statistics.median(
            (setting.steps - 1) * per_step / (total - first) for total, first in zip(times[f"loader {w}"], startup))
        rates[f"startup {w}"] = statistics.median(startup)
    return rates


def rows_of(setting: Setting, rates: Mapping[str, float]) -> list[dict]:
    """One row per worker count: loader and training images/s against the step's, and the verdict."""
    step = rates["step"]
    return [{
        "backbone": f"{setting.backbone} w{setting.width:g}", "data": setting.data,
        "workers": f"{w}{' (default)' if w == DEFAULT_WORKERS else ''}", "step img/s": step,
        "loader img/s": rates[f"loader {w}"], "loader start-up (ms)": 1e3 * rates[f"startup {w}"],
        "loader / step": rates[f"loader {w}"] / step,
        "training img/s": rates[f"training {w}"], "training / step": rates[f"training {w}"] / step,
        "data-bound": rates[f"loader {w}"] < step,
    } for w in WORKERS]


def verdict(rows: list[Mapping]) -> str:
    bound = [f"{r['backbone']}, workers {r['workers']}" for r in rows if r["data-bound"]]
    worst = min(rows, key=lambda r: r["training / step"])
    text = ("Data-bound (loader slower than the step) in: " + "; ".join(bound) + ".") if bound else \
        "Not data-bound in any setting: every loader delivers more images/s than the step consumes."
    return (f"{text} Loading shares the CPU with the step, so a training epoch (loading and steps together) runs "
            f"at {worst['training / step']:.2f} to {max(r['training / step'] for r in rows):.2f} of the step's "
            f"images/s; the largest slowdown is {1 / worst['training / step']:.2f}x ({worst['backbone']}, "
            f"workers {worst['workers']}).")


def main() -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the training step runs")
    args = parser.parse_args()
    chosen, batch, rounds = settings(args.quick, args.device)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bap-data-loading-") as tmp:
        for setting in chosen:
            rates = measure(setting, build_data(setting, tmp), batch, rounds, args.device)
            rows += rows_of(setting, rates)
            print(rows[-len(WORKERS):], flush=True)
    formats = {c: ".0f" for c in ("step img/s", "loader img/s", "loader start-up (ms)", "training img/s")}
    formats.update({"loader / step": ".2f", "training / step": ".2f"})
    table = markdown_table(rows, list(rows[0]), formats)
    reading = verdict(rows)
    ratio = min(r["loader / step"] for r in rows)
    print(table, reading, sep="\n\n")
    sizes = "; ".join(f"{s.backbone} at width {s.width:g} on {s.data} ({', '.join(s.domains)}), {s.steps} steps, "
                      f"{s.per_class} train images per class" for s in chosen)
    cuda = args.device == "cuda"
    body = f"""## Data loading against the training step{' on CUDA' if cuda else ''} (`benchmarks/data_loading.py{' --device cuda' if cuda else ''}{' --quick' if args.quick else ''}`)

{describe_machine(machine_info())}
- Data: generated in a temporary directory and read by `bap.data`'s readers with the paper's train transforms.
  Decathlon devkit tree (COCO JSON, official class counts, JPEG quality {JPEG_QUALITY}, {DECATHLON_SIZES['dtd'][0]}x{DECATHLON_SIZES['dtd'][1]}
  for dtd: Resize(72) + RandomCrop(64) + flip; 72x72 for svhn: Resize(72) + CenterCrop(72)); ImageNet-to-Sketch
  ImageFolder tree (256x256 JPEGs: RandomResizedCrop(224) + flip). The files sit in the page cache, so this is
  decoding and transforms, not disk reads; real sketches (~1111 px PNGs) decode slower than these 256 px JPEGs.
- Settings: {sizes}; batch {batch} per domain, one batch of every domain per step; switched nets with switches
  trained (BAP, budget 0.5, the default union loss){', the step on the GPU with AMP' if cuda else ''}. One timed unit is one epoch of that many steps: `step` on preloaded batches,
  `loader` the epoch's batches (`Trainer.epoch_batches`, a fresh DataLoader per domain and epoch as in training),
  `training` both together. `loader img/s` counts the batches after the first one; `loader start-up`: time to the
  first batch of every domain (worker start included), paid once per epoch. `training img/s` includes that
  start-up, so with workers it weighs more in these short epochs than in the presets' (25 steps smoke, 500 long).
  Medians of {rounds} rounds after {WARMUP} warm-up, all {2 * len(WORKERS) + 1} functions interleaved in one run,
  so each ratio is measured side by side. `data-bound`: loader img/s < step img/s. The trainer and all presets
  default to {DEFAULT_WORKERS} workers (`data.num_workers`).

{table}

{reading}

`RESULT loader_to_step_ratio`: the smallest `loader / step` over all rows ({ratio:.2f}); below 1 means some setting
is data-bound.
"""
    write_section(args, "data_loading_cuda" if cuda else "data_loading", body)
    print(f"total {time.perf_counter() - start:.0f}s")
    print_result("loader_to_step_ratio", ratio)


if __name__ == "__main__":
    main()
