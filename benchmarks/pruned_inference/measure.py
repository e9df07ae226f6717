"""Latency (all models of a table side by side), peak memory of one pass and the CPU op profile."""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Callable

import torch

from benchmarks._common import interleaved_rounds
from benchmarks.pruned_inference.masks import Variant
from benchmarks.pruned_inference.settings import Setting
from benchmarks.pruned_inference.workers import KEEP_MEMORY_ENV, MEMORY_ENV, ModelServer, run_worker


def measure_latency(variants: list[Variant], setting: Setting, device: torch.device, args: argparse.Namespace
                    ) -> dict[int, dict]:
    """Times per batch size, all variants interleaved round by round (see ``interleaved_rounds``); returns the
    rounds' statistics per batch size (CPU share of the kept rounds, rounds discarded for lack of CPU).

    On CPU each variant runs in a process of its own (``workers.ModelServer``), so no model inherits another's
    heap (the allocator's free lists and page faults differ with what ran before), and it records each
    variant's minor page faults per pass: memory the kernel had to map and zero because the allocator had given
    it back. On CUDA the variants run in this process.
    """
    stats: dict[int, dict] = {}
    if device.type == "cpu":
        servers: list[ModelServer] = []
        try:
            for variant in variants:  # started inside the try: one that fails to start closes those before it
                servers.append(ModelServer(variant.specs, setting.size, setting.batches))
            for batch in setting.batches:
                faults: dict[int, list[int]] = {}

                def run(name: str) -> tuple[float, float]:
                    i = int(name)
                    reading = servers[i].run(batch)
                    faults.setdefault(i, []).append(reading["faults"])
                    return reading["wall"], reading["cpu"]

                _rounds(run, variants, setting, batch, args, stats, servers[0].threads, min_share=True)
                for i, variant in enumerate(variants):
                    variant.fault_bytes[batch] = statistics.median(faults[i]) * resource.getpagesize()
        finally:
            for server in servers:
                server.close()
        return stats
    for batch in setting.batches:
        x = torch.randn(batch, 3, setting.size, setting.size, device=device)
        callers = [v.caller(x) for v in variants]

        @torch.inference_mode()
        def run(name: str) -> tuple[float, float]:
            torch.cuda.synchronize()
            start = time.perf_counter()
            callers[int(name)]()
            torch.cuda.synchronize()
            return time.perf_counter() - start, 0.0

        _rounds(run, variants, setting, batch, args, stats, torch.get_num_threads(), min_share=False)
    return stats


def _rounds(run: Callable[[str], tuple[float, float]], variants: list[Variant], setting: Setting, batch: int,
            args: argparse.Namespace, stats: dict[int, dict], threads: int, min_share: bool) -> None:
    """Time every variant at ``batch`` into its ``times``, in side-by-side rounds after one warm-up round."""
    stats[batch] = {}
    repeats = setting.repeats[batch]
    times = interleaved_rounds(run, [str(i) for i in range(len(variants))], threads, repeats=repeats, warmup=1,
                               min_cpu_share=args.min_cpu_share if min_share else None,
                               max_discarded=repeats if args.quick else 3 * repeats,
                               idle_wait_s=0.0 if args.quick else 30.0, stats=stats[batch])
    for i, variant in enumerate(variants):
        variant.times[batch] = times[str(i)]


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
