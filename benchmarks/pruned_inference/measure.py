"""Latency (all models of a table side by side), peak memory of one pass and the CPU op profile."""

from __future__ import annotations

import argparse
import resource
import statistics
from typing import Callable

import torch

from benchmarks._common import interleaved_times
from benchmarks.pruned_inference.masks import Variant
from benchmarks.pruned_inference.settings import Setting
from benchmarks.pruned_inference.workers import KEEP_MEMORY_ENV, MEMORY_ENV, run_worker


@torch.inference_mode()
def measure_latency(variants: list[Variant], setting: Setting, device: torch.device, args: argparse.Namespace
                    ) -> dict[int, dict]:
    """Times per batch size, all variants interleaved round by round (see ``interleaved_times``); returns the
    rounds' statistics per batch size (CPU share of the kept rounds, rounds discarded for lack of CPU).

    Also records each variant's minor page faults per pass: memory the kernel had to map and zero because the
    allocator had given it back.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    on_cpu = device.type == "cpu"
    stats: dict[int, dict] = {}
    for batch in setting.batches:
        x = torch.randn(batch, 3, setting.size, setting.size, device=device)
        faults: dict[str, list[int]] = {}

        def counting_faults(name: str, fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
            def run() -> None:
                start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                fn()
                faults.setdefault(name, []).append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
            return run

        fns = {str(i): counting_faults(str(i), v.caller(x)) for i, v in enumerate(variants)}
        stats[batch] = {}
        repeats = setting.repeats[batch]
        times = interleaved_times(
            fns, repeats=repeats, warmup=1, synchronize=sync, stats=stats[batch],
            min_cpu_share=args.min_cpu_share if on_cpu else None,
            max_discarded=repeats if args.quick else 3 * repeats, idle_wait_s=0.0 if args.quick else 30.0,
        )
        for i, variant in enumerate(variants):
            variant.times[batch] = times[str(i)]
            if on_cpu:
                variant.fault_bytes[batch] = statistics.median(faults[str(i)]) * resource.getpagesize()
    return stats


def measure_cpu_memory(variants: list[Variant], setting: Setting) -> None:
    """All models of a table in one fresh process (see ``workers.memory_worker``), away from the timing process's
    heap."""
    peaks = run_worker("memory", [v.spec for v in variants], setting.size, setting.batches, MEMORY_ENV)
    for variant, peak in zip(variants, peaks):
        variant.peak_bytes = {int(b): v for b, v in peak.items()}


@torch.inference_mode()
def measure_cuda_memory(variants: list[Variant], setting: Setting, device: torch.device) -> None:
    """``torch.cuda.max_memory_allocated`` during one forward pass, minus what was allocated before it."""
    for variant in variants:
        domain, module = variant.first
        for batch in setting.batches:
            x = torch.randn(batch, 3, setting.size, setting.size, device=device)
            module(x, domain)
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = module(x, domain)
            torch.cuda.synchronize()
            variant.peak_bytes[batch] = torch.cuda.max_memory_allocated() - before
            del out, x


def profile_pair(base: Variant, pruned: Variant, setting: Setting, allocator_check: bool) -> dict[str, dict]:
    """Op breakdown of backbone vs ``pruned`` at the largest batch, in a fresh process with glibc's defaults; with
    ``allocator_check`` also with glibc keeping freed memory (how much of the gap is page faults)."""
    specs, batches = [base.spec, pruned.spec], [setting.batches[-1]]
    runs = {"glibc defaults": run_worker("profile", specs, setting.size, batches, {})}
    if allocator_check:
        runs["glibc keeps freed memory"] = run_worker("profile", specs, setting.size, batches, KEEP_MEMORY_ENV)
    return runs
