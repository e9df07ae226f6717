"""The subprocess workers: fresh processes that load saved models (``path:domain`` specs).

A fresh process keeps the timing process's heap out of a memory peak, out of an op profile and out of another
model's latency. ``run_worker`` starts a one-shot worker that prints one JSON line, as
``python -m benchmarks.pruned_inference.workers {memory,profile} SPEC... --size S --batches B``; ``ModelServer``
keeps a ``serve`` worker running that times one forward pass per request.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Mapping, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

import bap
from benchmarks._common import (REPO_ROOT, current_rss_bytes, interleaved_times, peak_rss_bytes, reset_peak_rss,
                                run_json_process, wait_for_idle_cpu)

MODULE = "benchmarks.pruned_inference.workers"
# Memory worker: a fixed glibc mmap threshold turns off glibc's dynamic threshold, so every tensor above 128 KiB
# is mmap'd and unmapped when freed, and the RSS follows the live tensors instead of the heap's history.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
# Allocator check: glibc keeps freed memory (no munmap, no trim), so buffers are not page-faulted in again.
KEEP_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def run_worker(kind: str, specs: Sequence[str], size: int, batches: Sequence[int], env: Mapping[str, str],
               repeats: int = 3) -> Any:
    """Run worker ``kind`` in a fresh process with ``env`` added to this one's; returns what it printed."""
    args = [kind, *specs, "--size", str(size), "--batches", ",".join(map(str, batches)), "--repeats", str(repeats)]
    return run_json_process([sys.executable, "-m", MODULE, *args], f"worker {' '.join(args)}",
                            env={**os.environ, **env}, cwd=REPO_ROOT)


class ModelServer:
    """One model in its own process, timed pass by pass on request: every model of a table gets a heap of its
    own (a fresh process, the same start), and the driver still runs them side by side in rounds."""

    def __init__(self, specs: Sequence[str], size: int, batches: Sequence[int]) -> None:
        command = [sys.executable, "-m", MODULE, "serve", *specs, "--size", str(size), "--batches",
                   ",".join(map(str, batches))]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=REPO_ROOT, bufsize=1)
        self.threads = int(self._read()["threads"])

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"model server {self.process.args[4:]} exited with {self.process.wait()}")
        return json.loads(line)

    def run(self, batch: int) -> dict:
        """One forward pass at ``batch``: its wall and CPU seconds and minor page faults, read in the server."""
        self.process.stdin.write(f"{batch}\n")
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@torch.inference_mode()
def serve_worker(specs: list[str], size: int, batches: list[int]) -> None:
    """Answer each batch size read from stdin with one forward pass, serving the specs' domains in turn (pass r
    runs spec r mod len(specs)): one JSON line of its wall and CPU seconds and minor page faults."""
    loaded: dict[str, torch.nn.Module] = {}
    models = []
    for spec in specs:
        path, domain = spec.rsplit(":", 1)
        if path not in loaded:
            loaded[path] = bap.load(path).eval()
        models.append((loaded[path], domain))
    inputs = {batch: torch.randn(batch, 3, size, size) for batch in batches}
    print(json.dumps({"threads": torch.get_num_threads()}), flush=True)
    for calls, line in enumerate(sys.stdin):
        model, domain = models[calls % len(models)]
        x = inputs[int(line)]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu, start = time.process_time(), time.perf_counter()
        model(x, domain)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        print(json.dumps({"wall": wall, "cpu": cpu, "faults": faults}), flush=True)


@torch.inference_mode()
def memory_worker(specs: list[str], size: int, batches: list[int]) -> list[dict[int, int]]:
    """Peak RSS increase (bytes) of one forward pass per ``path:domain`` model and batch size.

    Models are loaded one at a time; each pass follows a warm-up pass of the same shape (so library caches and
    oneDNN primitives already exist) and the high-water mark is reset right before it. With the fixed mmap
    threshold the previous model's freed tensors have left the RSS, so models do not leak into each other's peak.
    """
    results = []
    for spec in specs:
        path, domain = spec.rsplit(":", 1)
        module = bap.load(path).eval()
        result = {}
        for batch in batches:
            x = torch.randn(batch, 3, size, size)
            module(x, domain)
            gc.collect()
            before = current_rss_bytes()
            reset_peak_rss()
            out = module(x, domain)
            result[batch] = max(0, peak_rss_bytes() - before)
            del out, x
            gc.collect()
        results.append(result)
        del module
        gc.collect()
    return results


@torch.inference_mode()
def profile_worker(specs: list[str], size: int, batch: int, repeats: int) -> dict:
    """Median wall time (s) and per-op self CPU time (ms per forward) of each ``path:domain`` model."""
    models = [(bap.load(path).eval(), domain) for path, domain in (s.rsplit(":", 1) for s in specs)]
    x = torch.randn(batch, 3, size, size)
    fns = {str(i): (lambda m=m, d=d: m(x, d)) for i, (m, d) in enumerate(models)}
    wall = interleaved_times(fns, repeats=repeats, warmup=1, min_cpu_share=0.85, max_discarded=2 * repeats,
                             idle_wait_s=10.0)
    ops, shares = [], []
    for model, domain in models:
        for _attempt in range(5):  # a profile taken while other processes run is not the model's profile
            wait_for_idle_cpu(timeout_s=30.0)
            cpu, wall_start = time.process_time(), time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(2):
                    model(x, domain)
            share = (time.process_time() - cpu) / ((time.perf_counter() - wall_start) * torch.get_num_threads())
            if share >= 0.85:
                break
        shares.append(share)
        ops.append({e.key: e.self_cpu_time_total / 2e3 for e in prof.key_averages() if e.self_cpu_time_total > 0})
    return {"wall": [statistics.median(wall[str(i)]) for i in range(len(models))], "ops": ops, "cpu_share": shares}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("memory", "profile", "serve"))
    parser.add_argument("specs", nargs="+", help="path:domain of each saved model")
    parser.add_argument("--size", type=int, required=True, help="input height and width")
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], required=True,
                        help="comma-separated batch sizes (profile: one)")
    parser.add_argument("--repeats", type=int, default=3, help="profile: timed rounds of the wall-time ratio")
    args = parser.parse_args(argv)
    if args.kind == "serve":
        serve_worker(args.specs, args.size, args.batches)
    elif args.kind == "memory":
        print(json.dumps(memory_worker(args.specs, args.size, args.batches)))
    elif len(args.batches) != 1:
        parser.error(f"profile takes one batch size, not {args.batches}")
    else:
        print(json.dumps(profile_worker(args.specs, args.size, args.batches[0], args.repeats)))


if __name__ == "__main__":
    main()
