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
    assert excess.keys() == {"resnet26"} and abs(excess["resnet26"] - 0.2) < 1e-9  # the single-domain rows
    profiles = {"label": {"glibc defaults": {"wall": [1.0, 0.5], "cpu_share": [0.9, 0.9],
                                             "ops": [{"aten::conv": 2.0}, {"aten::conv": 1.0}]}}}
    body = report.section_body(_args(), {"cpu": "x", "usable_cores": 2, "logical_cores": 2, "torch_threads": 2,
                                         "torch": "t", "python": "p", "cuda": None, "date": "d", "commit": "abc"},
                               {"cpu": results}, excess, profiles, 1.0)
    assert "RESULT latency_minus_macs_ratio_resnet26" in body and "+0.2000, target missed by 0.1000" in body
    assert "| backbone (unpruned) |" in body
    assert "Reading" not in body and "Why latency" not in body
    path = tmp_path / "BENCHMARKS.md"
    notes = "### Pruned inference: notes (hand-written, at abc1234)\n\n- kept\n"
    path.write_text(f"# B\n\n<!-- BEGIN {settings.SECTION} -->\nold\n<!-- END {settings.SECTION} -->\n\n{notes}")
    update_section(path, settings.SECTION, body)
    assert path.read_text().endswith(f"<!-- END {settings.SECTION} -->\n\n{notes}")


def test_memory_worker_runs_as_a_subprocess(tmp_path):
    backbone = _variants()[0]
    backbone.save(str(tmp_path), "backbone")
    peaks = workers.run_worker("memory", [backbone.spec], SETTING.size, [1, 2], workers.MEMORY_ENV)
    assert len(peaks) == 1 and set(peaks[0]) == {"1", "2"} and all(v >= 0 for v in peaks[0].values())


def test_a_model_server_times_passes_of_its_own_model_serving_the_domains_in_turn(tmp_path):
    union = _variants()[1]
    union.save(str(tmp_path), "union")
    assert len(set(union.paths.values())) == 1 and len(union.specs) == 2  # one file serves both domains
    server = workers.ModelServer(union.specs, SETTING.size, SETTING.batches)
    try:
        readings = [server.run(batch) for batch in (1, 64, 64)]
    finally:
        server.close()
    assert server.threads == torch.get_num_threads() and server.process.returncode == 0
    assert all(r["wall"] > 0 and r["cpu"] > 0 and r["faults"] >= 0 for r in readings)


def test_trained_models_are_read_from_the_study_names_after_their_backbone(tmp_path):
    model = bap.build_model("resnet26", {"a": 5, "b": 7}, width=0.25)
    model.set_masks(masks.shared_budget_masks(model, 0.5, 0.9, torch.Generator().manual_seed(0)))
    pruned = bap.materialize(model)
    for name in ("union_b0.5.bap", "union_b1.bap", "jaccard_b0.5.bap", "random_shared_b0.25.bap"):
        bap.save(pruned, str(tmp_path / name))
    variants = masks.trained_variants(str(tmp_path), ("union", "random_shared"), 16)
    assert [(v.label, v.budget) for v in variants] == [
        ("backbone (unpruned)", None), ("trained, union", 0.5), ("trained, random_shared", 0.25)]
    assert variants[0].macs_ratio == 1.0 and variants[0].first[1].arch["num_classes"] == {"backbone": 6}
    expected = bap.count(pruned, (16, 16)).macs_mean / bap.reference_counts(pruned, (16, 16)).macs_mean
    assert abs(variants[1].macs_ratio - expected) < 1e-12 and variants[1].macs_ratio < 0.6
    assert set(variants[1].modules) == {"a", "b"}
    assert masks.trained_variants(str(tmp_path / "missing"), ("union",), 16) == []
