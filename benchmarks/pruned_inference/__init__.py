"""Latency and peak memory of physically pruned BAP models against the unpruned backbone (METHOD 4-5).

Does the MACs saving that ``bap.materialize`` promises show up as wall time? For budgets 1.0, 0.75, 0.5, 0.25
this times the union model (``materialize(model)``, every domain) and the single-domain models
(``materialize(model, domain=d)``) next to the plain single-domain backbone, at batch 1 and a large batch, and
reads the peak memory of one forward pass. Target (issue "bap pruning", item 5): on CPU at batch 64, for every
row whose MACs ratio is <= 0.5, latency ratio <= MACs ratio + 0.15. The last line is
``RESULT latency_minus_macs_ratio=<worst latency ratio - MACs ratio over those rows>``.

No training happens: masks are drawn the way BAP training leaves them (domains that share most of their
channels, each within its budget), since inference speed depends on the kept shapes, not on the weights.

    python -m benchmarks.pruned_inference            # full run (~10 min on 2 idle cores), rewrites BENCHMARKS.md
    python -m benchmarks.pruned_inference --quick    # under 60 s
    python -m benchmarks.pruned_inference --device cuda   # the CUDA section alone, on a GPU machine

The parts: ``settings`` (what is timed, the target), ``masks`` (BAP-like masks and the models under test),
``measure`` (latency and memory, in this process or in ``workers``: fresh processes that load saved models),
``report`` (tables and the BENCHMARKS.md sections: measured facts only) and ``cli`` (arguments, the run).
This file imports nothing, so the workers' processes load only what they use.
"""
