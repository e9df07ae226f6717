"""Arguments and the run: per device, build the models, time them, measure memory (and on CPU the op profile),
then write the device's BENCHMARKS.md section and the RESULT line."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Optional

import torch

from benchmarks import pruned_inference
from benchmarks._common import add_common_args, machine_info, markdown_table, print_result, write_section
from benchmarks.pruned_inference.masks import Variant, build_variants, trained_variants
from benchmarks.pruned_inference.measure import measure_cpu_memory, measure_cuda_memory, measure_latency, profile_pair
from benchmarks.pruned_inference.report import (Results, columns_of, cuda_section_body, section_body, table_rows,
                                                worst_excess)
from benchmarks.pruned_inference.settings import (CUDA_SECTION, CUDA_SETTINGS, FULL, QUICK, RESULT_NAME, SECTION,
                                                  TRAINED_METHODS, TRAINED_SIZE, Setting)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruned_inference",
                                     description=pruned_inference.__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--budgets", type=lambda s: [float(b) for b in s.split(",")], default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--domains", type=int, default=3, help="number of domains of the multi-domain model")
    parser.add_argument("--domain-fraction", type=float, default=0.9,
                        help="fraction of the shared channel pool that each domain switches on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-single", action="store_true", help="skip the single-domain models")
    parser.add_argument("--models-dir", default=os.path.join("runs", "study_models"),
                        help="the method study's pruned models (benchmarks/method_study.py writes them); a table of "
                             f"the {', '.join(TRAINED_METHODS)} models below budget 1 when present")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, then CUDA when present; each device writes its own section")
    parser.add_argument("--min-cpu-share", type=float, default=0.85,
                        help="discard and rerun a timed CPU round in which this process got less than this share of "
                             "its threads' CPU time (other processes running); 0 keeps every round")
    args = parser.parse_args(argv)
    for budget in args.budgets:
        if not 0 < budget <= 1:
            parser.error(f"--budgets: {budget} is outside (0, 1]; use 1.0 for no pruning")
    if not 0 < args.domain_fraction <= 1:
        parser.error(f"--domain-fraction={args.domain_fraction} is outside (0, 1]")
    if args.domains < 1:
        parser.error(f"--domains={args.domains} must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch; use --device cpu")
    args.domain_names = [f"domain{i}" for i in range(args.domains)]
    return args


def run_device(tables: list[tuple[Setting, list[Variant]]], device: torch.device, args: argparse.Namespace,
               tmp: str, profiles: dict[str, dict]) -> Results:
    results = []
    for setting, variants in tables:
        stages = {"start": time.perf_counter()}
        for i, variant in enumerate(variants):
            variant.save(tmp, f"{setting.backbone}_{setting.size}_{i}")
            for module in {id(m): m for m in variant.modules.values()}.values():
                module.to(device)
        stages["build"] = time.perf_counter()
        round_stats = measure_latency(variants, setting, device, args)
        stages["latency"] = time.perf_counter()
        if device.type == "cuda":
            measure_cuda_memory(variants, setting, device)
            stages["memory"] = time.perf_counter()
        else:
            measure_cpu_memory(variants, setting)
            stages["memory"] = time.perf_counter()
            lowest = min(variants[1:], key=lambda v: v.macs_ratio)
            profiles[f"{setting.label}, batch {setting.batches[-1]}, {lowest.label} at budget {lowest.budget:g}"] = (
                profile_pair(variants[0], lowest, setting, allocator_check=not args.quick))
            stages["profile"] = time.perf_counter()
        rows = table_rows(variants, setting)
        results.append((setting, rows, round_stats))
        names = list(stages)
        print(f"[{device.type}] {setting.label}: " + ", ".join(
            f"{b} {stages[b] - stages[a]:.0f} s" for a, b in zip(names, names[1:])), flush=True)
        print(markdown_table(rows, *columns_of(setting)), flush=True)
    return results


def tables_of(settings: tuple[Setting, ...], args: argparse.Namespace, trained: bool) -> list[tuple[Setting,
                                                                                                   list[Variant]]]:
    """The models of each table: random BAP-like masks per setting, then (``trained``) the method study's models."""
    tables = [(setting, build_variants(setting, args)) for setting in settings]
    variants = trained_variants(args.models_dir, TRAINED_METHODS, TRAINED_SIZE) if trained else []
    if variants:
        arch = variants[0].first[1].arch
        setting = Setting(arch["backbone"], arch["width"], TRAINED_SIZE, (1, 64), {1: 21, 64: 11},
                          arch["num_classes"]["backbone"], f"the method study's trained models, seed 0, from "
                          f"`{args.models_dir}`, at the study's input size", name="trained")
        tables.append((setting, variants))
    return tables


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    info = machine_info()
    excess = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.device in ("auto", "cpu"):
            start, profiles = time.perf_counter(), {}
            tables = tables_of(QUICK if args.quick else FULL, args, trained=not args.quick)
            results = {"cpu": run_device(tables, torch.device("cpu"), args, tmp, profiles)}
            excess = worst_excess(results["cpu"])
            write_section(args, SECTION, section_body(args, info, results, excess, profiles,
                                                      time.perf_counter() - start))
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
            start = time.perf_counter()
            cuda = run_device(tables_of(QUICK if args.quick else CUDA_SETTINGS, args, trained=False),
                              torch.device("cuda"), args, tmp, {})
            write_section(args, CUDA_SECTION, cuda_section_body(args, info, cuda, time.perf_counter() - start))
            if args.device == "cuda":
                excess = worst_excess(cuda)
    prefix = "cuda_" if args.device == "cuda" else ""
    for table, value in (excess or {}).items():
        print_result(f"{prefix}{RESULT_NAME}_{table}", value)
