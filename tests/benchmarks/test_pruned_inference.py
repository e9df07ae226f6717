"""benchmarks/pruned_inference/: masks within budget, the worker subprocess command, a section of measured facts that
leaves the hand-written notes after its END marker alone."""

import argparse

import torch

import bap
from benchmarks._common import update_section
from benchmarks.pruned_inference import cli, masks, report, settings, workers

SETTING = settings.Setting("resnet26", 0.25, 16, (1, 64), {1: 1, 64: 1}, 5, "test")


def _args(**overrides) -> argparse.Namespace:
    args = cli.parse_args(["--quick", "--output", "", "--budgets", "1,0.5", "--domains", "2"])
    return argparse.Namespace(**{**vars(args), **overrides})


def test_masks_keep_each_domain_within_its_pool_and_share_most_channels():
    model = bap.build_model("resnet26", {"a": 5, "b": 5}, width=0.25)
    drawn = masks.shared_budget_masks(model, 0.5, 0.9, torch.Generator().manual_seed(0))
    for name, conv in model.switched_convs().items():
        a, b = drawn["a"][name], drawn["b"][name]
        pool = max(1, round(0.5 * conv.in_channels))
        assert a.sum() == b.sum() == max(1, round(0.9 * pool))
        assert (a | b).sum() <= pool


def _variants() -> list[masks.Variant]:
    variants = masks.build_variants(SETTING, _args())
    assert [v.kind for v in variants] == ["backbone", "union", "single", "union", "single"]
    for i, variant in enumerate(variants):  # made-up times: latency proportional to MACs, plus 0.1 or 0.2
        for batch in SETTING.batches:
            variant.times[batch] = [variant.macs_ratio + (0.1 if i % 2 else 0.2) * (variant.kind != "backbone")]
            variant.peak_bytes[batch] = 2**20
        variant.fault_bytes[64] = 0.0
    return variants


def test_section_holds_tables_and_a_plain_target_comparison_and_keeps_the_notes(tmp_path):
    variants = _variants()
    results = [(SETTING, report.table_rows(variants, SETTING), {1: {"cpu_share": [1.0], "discarded": 0},
                                                                64: {"cpu_share": [1.0], "discarded": 0}})]
    excess = report.worst_excess(results)
    assert abs(excess - 0.2) < 1e-9  # the single-domain row at budget 0.5
    profiles = {"label": {"glibc defaults": {"wall": [1.0, 0.5], "cpu_share": [0.9, 0.9],
                                             "ops": [{"aten::conv": 2.0}, {"aten::conv": 1.0}]}}}
    body = report.section_body(_args(), {"cpu": "x", "usable_cores": 2, "logical_cores": 2, "torch_threads": 2,
                                         "torch": "t", "python": "p", "cuda": None, "date": "d", "commit": "abc"},
                               {"cpu": results}, excess, profiles, 1.0)
    assert "+0.2000, target missed" in body and "| backbone (unpruned) |" in body
    assert "Reading" not in body and "Why latency" not in body
    path = tmp_path / "BENCHMARKS.md"
    notes = "### Pruned inference: notes (hand-written, at abc1234)\n\n- kept\n"
    path.write_text(f"# B\n\n<!-- BEGIN {settings.SECTION} -->\nold\n<!-- END {settings.SECTION} -->\n\n{notes}")
    update_section(path, settings.SECTION, body)
    assert path.read_text().endswith(f"<!-- END {settings.SECTION} -->\n\n{notes}")


def test_memory_worker_runs_as_a_subprocess(tmp_path):
    backbone = _variants()[0]
    backbone.path = str(tmp_path / "backbone.pt")
    bap.save(backbone.first[1], backbone.path)
    peaks = workers.run_worker("memory", [backbone.spec], SETTING.size, [1, 2], workers.MEMORY_ENV)
    assert len(peaks) == 1 and set(peaks[0]) == {"1", "2"} and all(v >= 0 for v in peaks[0].values())
