"""Training-step cost of the switches: the trainer's own step on the switched net against the same trainer on the
same net without switches.

Both are ``bap.engine.Trainer.run_step`` over one batch of every domain: per-domain cross-entropy and backward,
the trainer's optimizers, its ``.item()`` reads. On the switched net (the default config: union sharing loss,
budget 0.5, switches trained) the step is taken in the middle of the budget's annealing, so it also pays the
sharing term and its backward, Adam on the latent switches and the re-selection of every domain's switches within
the step's budget target. The unswitched net (``model.unswitched=["*"]``) trains BN and heads only: what the
same trainer costs with no switches at all. Steps of both are interleaved in rounds so machine noise hits them
alike. Target: <= 1.10 on both backbones, CPU, medians, with the 25th-75th percentile of the per-round ratio.

    python -m benchmarks.switch_overhead [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch
from torch.utils.data import TensorDataset

from bap.config import BudgetConfig, ExperimentConfig, ModelConfig, TrainConfig
from bap.data import DomainData
from bap.engine.cpu_memory import retain_freed_memory
from bap.engine.trainer import Trainer
from bap.layers import native
from bap.train import build_for
from benchmarks._common import (add_common_args, describe_machine, interleaved_times, machine_info, markdown_table,
                                print_result, write_section)

DOMAINS = {"a": 10, "b": 8, "c": 8, "d": 5}
# backbone -> (width, input side, batch per domain): CPU-sized, the same code path as width 1. resnet26's is the
# default sweep's model (smoke preset). On CUDA, with AMP: the papers' nets, ResNet-26 at the Decathlon's 64x64
# and ResNet-50 at ImageNet-to-Sketch's 224x224; there the rows are also the training throughput.
SETTINGS = {"resnet26": (0.25, 32, 32), "resnet50": (0.25, 64, 16)}
CUDA_SETTINGS = {"resnet26": (1.0, 64, 64), "resnet50": (1.0, 224, 32)}
TARGET = 1.10
FORMATS = {"width": "g", "plain step (ms)": ".1f", "switched step (ms)": ".1f", "ratio": ".3f",
           "ratio p25": ".3f", "ratio p75": ".3f", "plain img/s": ".0f", "switched img/s": ".0f"}


def domains(side: int) -> dict[str, DomainData]:
    """Placeholder domains: the trainer reads their names, classes and input size; the batches are made here."""
    empty = TensorDataset(torch.empty(0, 3, side, side), torch.empty(0, dtype=torch.long))
    return {d: DomainData(d, classes, (side, side), empty, empty) for d, classes in DOMAINS.items()}


def make_step(backbone: str, width: float, side: int, batch: int, switched: bool, device: str):
    """One ``Trainer.run_step`` over fixed batches, on the switched net mid-annealing or on the unswitched one."""
    torch.manual_seed(0)
    model_cfg = ModelConfig(backbone=backbone, width=width, **({} if switched else {"unswitched": ["*"]}))
    cfg = dataclasses.replace(ExperimentConfig(), model=model_cfg, budget=BudgetConfig(beta=0.5),
                              train=TrainConfig(device=device, amp=True, epochs=10, steps_per_epoch=100))
    data = domains(side)
    trainer = Trainer(build_for(cfg, data), data, cfg)
    trainer.step = int(0.3 * trainer.total_steps)  # between anneal_start and anneal_end: the switches learn
    batches = {d: (torch.randn(batch, 3, side, side), torch.randint(0, n, (batch,))) for d, n in DOMAINS.items()}
    return trainer, lambda: trainer.run_step(batches)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def measure(backbone: str, width: float, side: int, batch: int, rounds: int, warmup: int, device: str) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fns = {"plain": make_step(backbone, width, side, batch, False, device)[1],
           "switched": make_step(backbone, width, side, batch, True, device)[1]}
    times = interleaved_times(fns, rounds, warmup, synchronize=sync)
    ratios = [s / p for s, p in zip(times["switched"], times["plain"])]
    row = {"backbone": backbone, "width": width, "input": f"{side}x{side}", "batch": f"{len(DOMAINS)} x {batch}",
           "plain step (ms)": statistics.median(times["plain"]) * 1e3,
           "switched step (ms)": statistics.median(times["switched"]) * 1e3,
           "ratio": statistics.median(times["switched"]) / statistics.median(times["plain"]),
           "ratio p25": percentile(ratios, 25), "ratio p75": percentile(ratios, 75)}
    images = len(DOMAINS) * batch
    row.update({"plain img/s": images / statistics.median(times["plain"]),
                "switched img/s": images / statistics.median(times["switched"])})
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.device == "cpu":
        retain_freed_memory()  # as the trainer's processes do on CPU
        if native.switched_conv_op() is None:
            raise SystemExit("the C++ switched conv is not built here (see the warning above): nothing to measure")
    info = machine_info()
    rounds, warmup = (5, 1) if args.quick else (21, 3)
    settings = SETTINGS if args.device == "cpu" else CUDA_SETTINGS
    rows = [measure(b, *setting, rounds, warmup, args.device) for b, setting in settings.items()]
    table = markdown_table(rows, list(rows[0]), FORMATS)
    print(table)
    worst = max(r["ratio"] for r in rows)
    name = "switch_overhead" if args.device == "cpu" else "switch_overhead_cuda"
    body = f"""## Switch overhead in training{' on CUDA' if args.device == 'cuda' else ''} (`benchmarks/switch_overhead.py{' --device cuda' if args.device == 'cuda' else ''}`)

{describe_machine(info)}
- One step = `Trainer.run_step` over one batch per domain ({len(DOMAINS)} domains){' with AMP' if args.device == 'cuda' else ''}:
  switched net with the default config (union sharing loss, budget 0.5) at 30% of training, so the switches,
  the sharing term and the budget re-selection all run; plain = the same trainer on the net without switches
  (`model.unswitched=["*"]`, BN and heads only). Medians of {rounds} interleaved rounds after {warmup} warm-up
  rounds; p25-p75 of the per-round ratio.

{table}

Worst ratio {worst:.3f} (target <= {TARGET:.2f}: {'met' if worst <= TARGET else f'**missed** by {worst - TARGET:.3f}'}).
"""
    write_section(args, name, body)
    print_result(name, worst)


if __name__ == "__main__":
    main()
