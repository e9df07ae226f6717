"""Tables, the target check and the BENCHMARKS.md sections: measured facts and how they were measured.

What the numbers mean is written by hand in BENCHMARKS.md, after the section's END marker, with the commit it
was measured at; nothing here turns numbers into conclusions.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter

from benchmarks._common import describe_machine, markdown_table
from benchmarks.pruned_inference.masks import Variant, weight_bytes
from benchmarks.pruned_inference.settings import (MIB, RESULT_NAME, TARGET_BATCH, TARGET_EXCESS, TRAINED_METHODS,
                                                  Setting)
from benchmarks.pruned_inference.workers import MEMORY_ENV

Results = list[tuple[Setting, list[dict], dict]]  # per setting: its table rows and the timing rounds' statistics


def table_rows(variants: list[Variant], setting: Setting) -> list[dict]:
    """Ratios are against the backbone row."""
    base = next(v for v in variants if v.kind == "backbone")
    large = setting.batches[-1]
    rows = []
    for variant in variants:
        row = {
            "model": variant.label, "budget": variant.budget, "B_d": variant.usage,
            "MACs ratio": variant.macs_ratio, "params ratio": variant.params_ratio,
            "weights MiB": weight_bytes(variant.first[1]) / MIB,
        }
        for batch in setting.batches:
            ms = statistics.median(variant.times[batch]) * 1e3
            row[f"b{batch} ms"] = ms
            row[f"b{batch} ratio"] = ms / (statistics.median(base.times[batch]) * 1e3)
            row[f"b{batch} peak MiB"] = variant.peak_bytes[batch] / MIB if batch in variant.peak_bytes else None
        row[f"b{large} ratio - MACs"] = row[f"b{large} ratio"] - variant.macs_ratio
        row[f"b{large} faults MiB"] = variant.fault_bytes[large] / MIB if variant.fault_bytes else None
        rows.append(row)
    return rows


def columns_of(setting: Setting) -> tuple[list[str], dict[str, str]]:
    small, large = setting.batches[0], setting.batches[-1]
    columns = ["model", "budget", "B_d", "MACs ratio", "params ratio", "weights MiB",
               f"b{small} ms", f"b{small} ratio", f"b{large} ms", f"b{large} ratio", f"b{large} ratio - MACs",
               f"b{small} peak MiB", f"b{large} peak MiB", f"b{large} faults MiB"]
    formats = {"budget": "g", "B_d": ".3f"}
    formats.update({c: ".3f" for c in columns if "ratio" in c})
    formats.update({c: ".1f" for c in columns if c.endswith(("ms", "MiB"))})
    formats[f"b{large} ratio - MACs"] = "+.3f"
    return columns, formats


def worst_excess(results: Results) -> dict[str, float]:
    """Per table (``Setting.result_name``): the worst batch-64 latency ratio - MACs ratio over its pruned rows."""
    return {setting.result_name: max(row[f"b{TARGET_BATCH} ratio"] - row["MACs ratio"] for row in rows[1:])
            for setting, rows, _ in results if TARGET_BATCH in setting.batches and len(rows) > 1}


def profile_table(profiles: dict[str, dict], labels: tuple[str, str]) -> str:
    """Per-op self CPU ms per forward (glibc defaults), top ops, and the wall-time ratio under both allocators."""
    default = profiles["glibc defaults"]
    base_ops, pruned_ops = (Counter(o) for o in default["ops"])
    keys = sorted(set(base_ops) | set(pruned_ops), key=lambda k: -(base_ops[k] + pruned_ops[k]))
    keys = [k for k in keys if k.startswith("aten::")][:10]
    rows = [{"op": k, labels[0]: base_ops[k], labels[1]: pruned_ops[k],
             "ratio": pruned_ops[k] / base_ops[k] if base_ops[k] else None} for k in keys]
    total = (sum(base_ops.values()), sum(pruned_ops.values()))
    rows.append({"op": "all ops (profiled)", labels[0]: total[0], labels[1]: total[1], "ratio": total[1] / total[0]})
    table = markdown_table(rows, ["op", *labels, "ratio"], {labels[0]: ".1f", labels[1]: ".1f", "ratio": ".3f"})
    walls = "; ".join(f"{env}: {p['wall'][1] / p['wall'][0]:.3f} ({p['wall'][0] * 1e3:.0f} vs "
                      f"{p['wall'][1] * 1e3:.0f} ms)" for env, p in profiles.items())
    shares = ", ".join(f"{v:.2f}" for v in default["cpu_share"])
    return (f"{table}\n\nCPU share of the profiled passes (backbone, pruned): {shares}. Wall-time ratio "
            f"pruned/backbone in fresh processes (median of 3): {walls}.")


def section_body(args: argparse.Namespace, info: dict, results: dict[str, Results], excess: dict[str, float],
                 profiles: dict[str, dict], seconds: float) -> str:
    run = "Quick run (`--quick`)" if args.quick else "Full run"
    parts = [
        "## Pruned inference: latency and peak memory (`benchmarks/pruned_inference/`)", "",
        f"{run}, {seconds:.0f} s. Regenerate with `python -m benchmarks.pruned_inference"
        f"{' --quick' if args.quick else ''}`.", "",
        describe_machine(info), "",
        f"Masks (no training; speed depends on the kept shapes only): {len(args.domain_names)} domains; per switched "
        f"conv a random pool of `round(budget * C_in)` input channels, each domain switching on a random "
        f"{args.domain_fraction:g} of the pool (seed {args.seed}), so every domain meets its budget and the domains "
        "share most channels, as BAP's sharing loss aims for. Weights are random. The backbone row is the plain "
        "single-domain network (`build_model(..., unswitched=('*',))`: no switches, one BN set, one head).", "",
        "Trained models (when the method study's are in `--models-dir`): the seed-0 union model of "
        f"{', '.join(TRAINED_METHODS)} at each budget below 1, as its trial saved it, against the plain backbone it "
        "was pruned from (random weights: speed depends on the shapes only).", "",
        "Timing: eval mode, `torch.inference_mode()`, float32, NCHW, default torch threads. On CPU every model runs "
        "in a process of its own (started the same way, loading its saved file), so no model times on a heap "
        "another model left behind; the driver asks each for one pass at a time and the process times it. One "
        "untimed warm-up round, then all models of a table run side by side in rounds (order rotating per round) "
        "so machine noise hits all of them; medians. The union model serves domain `r mod D` in round `r`; the "
        "single-domain row cycles through the D single-domain models.", "",
    ]
    for device, device_results in results.items():
        for setting, rows, round_stats in device_results:
            columns, formats = columns_of(setting)
            repeats = ", ".join(f"batch {b}: {setting.repeats[b]} runs" for b in setting.batches)
            parts += [f"### {device.upper()}: {setting.label} ({setting.why}; {repeats})", "",
                      markdown_table(rows, columns, formats), ""]
            if device == "cpu":
                parts += ["CPU share of the kept rounds (1.0 = both threads ran all the time): " + "; ".join(
                    f"batch {b}: min {min(st['cpu_share']):.2f}, median {statistics.median(st['cpu_share']):.2f}, "
                    f"{st['discarded']} rounds discarded and rerun" for b, st in round_stats.items()) + ".", ""]
    for label, pair in profiles.items():
        parts += [f"### Op profile, CPU, {label} (self CPU ms per forward)", "",
                  profile_table(pair, ("backbone ms", "pruned ms")), ""]
    for name, value in excess.items():
        verdict = "met" if value <= TARGET_EXCESS else f"missed by {value - TARGET_EXCESS:.4f}"
        parts += [f"**RESULT {RESULT_NAME}_{name}** (worst CPU batch-{TARGET_BATCH} latency ratio - MACs ratio "
                  f"over the table's pruned rows; target <= {TARGET_EXCESS}): {value:+.4f}, target {verdict}", ""]
    parts += [
        "Columns: `budget` per domain; `B_d` the domains' mean budget usage (params unit, METHOD 2); `MACs ratio` and "
        "`params ratio` from `bap.count` over `bap.reference_counts` (the union model's params include every "
        "domain's BN and head); `weights MiB` parameters + buffers; `bN ratio` latency at batch N over the "
        "backbone's in the same rounds; `peak MiB` on CPU is the peak RSS increase of one forward pass, measured in a "
        "separate process that loads the models one at a time (first domain, after a warm-up pass of the same shape; "
        "the high-water mark is reset via `/proc/self/clear_refs` just before the pass; glibc runs with "
        "`MALLOC_MMAP_THRESHOLD_="
        f"{MEMORY_ENV['MALLOC_MMAP_THRESHOLD_']}` so freed tensors leave the RSS), on CUDA "
        "`torch.cuda.max_memory_allocated` minus what was allocated before the pass; weights and input are "
        "allocated before, so it is what activations and library scratch add. `faults MiB` is the memory page-faulted "
        "in per pass (minor faults x page size) in the model's process: buffers the allocator gave back to the kernel "
        "and took again, which the kernel must map and zero. CPU share of a round is process CPU time / (wall time x "
        f"threads); rounds below `--min-cpu-share` ({args.min_cpu_share:g}; other processes running on this "
        "shared machine) are discarded and rerun, a bounded number of times.",
    ]
    return "\n".join(parts)


def cuda_section_body(args: argparse.Namespace, info: dict, results: Results, seconds: float) -> str:
    excess = worst_excess(results)
    parts = [
        "## Pruned inference on CUDA (`python -m benchmarks.pruned_inference --device cuda`)", "",
        f"{'Quick run' if args.quick else 'Full run'}, {seconds:.0f} s, on the machine below (not the CPU section's).",
        "", describe_machine(info), "",
        "Same masks, models and side-by-side rounds as the CPU section; float32, `torch.inference_mode()`, "
        "`torch.cuda.synchronize()` around every timed pass; `peak MiB` is `torch.cuda.max_memory_allocated` during "
        "one pass minus what was allocated before it.", "",
    ]
    for setting, rows, _ in results:
        columns, formats = columns_of(setting)
        columns = [c for c in columns if "faults" not in c]
        repeats = ", ".join(f"batch {b}: {setting.repeats[b]} runs" for b in setting.batches)
        parts += [f"### {setting.label} ({setting.why}; {repeats})", "", markdown_table(rows, columns, formats), ""]
    parts += [f"Worst batch-{TARGET_BATCH} latency ratio - MACs ratio over the pruned rows, {name}: {value:+.3f}"
              for name, value in excess.items()]
    return "\n".join(parts)
