"""The models under test: masks drawn the way BAP training leaves them, materialized next to the plain backbone."""

from __future__ import annotations

import argparse
import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

import bap
from bap.budget import budget_usage, switch_costs
from bap.models.multidomain import MultiDomainNet
from benchmarks.pruned_inference.settings import Setting


def shared_budget_masks(
    model: MultiDomainNet, budget: float, domain_fraction: float, generator: torch.Generator
) -> dict[str, dict[str, torch.Tensor]]:
    """Masks like those BAP training ends with: per switched conv, a random pool of ``round(budget * C_in)`` input
    channels, of which every domain switches on a random ``domain_fraction``.

    Every domain then stays within its budget (params unit: B_d ~= domain_fraction * budget) and the domains share
    most channels (two domains overlap on ~domain_fraction^2 of the pool), which is what the sharing loss aims for.
    """
    masks: dict[str, dict[str, torch.Tensor]] = {d: {} for d in model.domains}
    for name, conv in model.switched_convs().items():
        channels = conv.in_channels
        pool = torch.randperm(channels, generator=generator)[: max(1, round(budget * channels))]
        per_domain = max(1, round(domain_fraction * pool.numel()))
        for domain in model.domains:
            mask = torch.zeros(channels, dtype=torch.bool)
            mask[pool[torch.randperm(pool.numel(), generator=generator)[:per_domain]]] = True
            masks[domain][name] = mask
    return masks


@dataclass
class Variant:
    """One table row: a module per served domain (the same module for all domains of the union model)."""

    kind: str  # "backbone" | "union" | "single" | "trained"
    budget: Optional[float]
    modules: dict[str, MultiDomainNet]
    macs_ratio: float
    params_ratio: float
    usage: Optional[float] = None  # mean B_d (params unit) of the domains' masks
    paths: dict[str, str] = field(default_factory=dict)  # domain -> its module's file, for the worker processes
    method: str = ""  # a trained model's sharing method
    times: dict[int, list[float]] = field(default_factory=dict)
    fault_bytes: dict[int, float] = field(default_factory=dict)  # freshly faulted-in memory per pass (CPU)
    peak_bytes: dict[int, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {"backbone": "backbone (unpruned)", "union": "union, all domains", "single": "single domain",
                "trained": f"trained, {self.method}"}[self.kind]

    @property
    def first(self) -> tuple[str, MultiDomainNet]:
        return next(iter(self.modules.items()))

    @property
    def spec(self) -> str:
        """``path:domain`` of the first domain's saved module: what a worker process loads."""
        return self.specs[0]

    @property
    def specs(self) -> list[str]:
        """``path:domain`` of every served domain, in serving order."""
        return [f"{self.paths[domain]}:{domain}" for domain in self.modules]

    def save(self, directory: str, prefix: str) -> None:
        """Save each distinct module once (the union model serves every domain from one file)."""
        files: dict[int, str] = {}
        for domain, module in self.modules.items():
            if id(module) not in files:
                files[id(module)] = os.path.join(directory, f"{prefix}_{len(files)}.pt")
                bap.save(module, files[id(module)])
            self.paths[domain] = files[id(module)]

    def caller(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        """A forward pass that serves the domains in turn, one per call (round r runs domain r mod D)."""
        items = list(self.modules.items())
        calls = [0]

        def forward() -> torch.Tensor:
            domain, module = items[calls[0] % len(items)]
            calls[0] += 1
            return module(x, domain)

        return forward


def weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def build_variants(setting: Setting, args: argparse.Namespace) -> list[Variant]:
    size = (setting.size, setting.size)
    torch.manual_seed(args.seed)
    backbone = bap.build_model(setting.backbone, {"backbone": setting.classes}, width=setting.width,
                               unswitched=("*",)).eval()
    model = bap.build_model(setting.backbone, {d: setting.classes for d in args.domain_names}, width=setting.width)
    reference = bap.reference_counts(model, size)
    costs = switch_costs(model, "params")
    generator = torch.Generator().manual_seed(args.seed)

    def ratios(module: MultiDomainNet) -> tuple[float, float]:
        return _ratios(module, reference, setting.size)

    variants = [Variant("backbone", None, {"backbone": backbone}, *ratios(backbone))]
    for budget in args.budgets:
        masks = shared_budget_masks(model, budget, args.domain_fraction, generator)
        model.set_masks(masks)
        usage = statistics.mean(float(budget_usage(m, costs)) for m in masks.values())
        union = bap.materialize(model)
        kinds = [("union", {d: union for d in args.domain_names})]
        if not args.no_single:
            kinds.append(("single", {d: bap.materialize(model, domain=d) for d in args.domain_names}))
        for kind, modules in kinds:
            macs, params = zip(*(ratios(m) for m in {id(m): m for m in modules.values()}.values()))
            variants.append(Variant(kind, budget, modules, statistics.mean(macs), statistics.mean(params), usage))
    return variants


# ``benchmarks/method_study.py`` copies the seed-0 pruned model of every (method, budget) cell under this name.
TRAINED_NAME = re.compile(r"(?P<method>\w+)_b(?P<budget>[0-9.]+)\.bap")


def trained_variants(models_dir: str, methods: Sequence[str], size: int) -> list[Variant]:
    """The method study's trained union models of ``methods`` (budgets below 1) in ``models_dir``, after the plain
    backbone they were pruned from (``unswitched=('*',)``, the models' mean class count); [] if there are none."""
    found = []
    for name in sorted(os.listdir(models_dir)) if os.path.isdir(models_dir) else []:
        match = TRAINED_NAME.fullmatch(name)
        if match and match["method"] in methods and float(match["budget"]) < 1:
            found.append((methods.index(match["method"]), -float(match["budget"]), os.path.join(models_dir, name)))
    if not found:
        return []
    models = [(path, bap.load(path).eval()) for _, _, path in sorted(found)]
    arch = models[0][1].arch
    classes = max(1, round(statistics.mean(arch["num_classes"].values())))
    backbone = bap.build_model(arch["backbone"], {"backbone": classes}, width=arch["width"], unswitched=("*",)).eval()
    reference = bap.reference_counts(models[0][1], (size, size))
    variants = [Variant("backbone", None, {"backbone": backbone}, *_ratios(backbone, reference, size))]
    for path, model in models:
        match = TRAINED_NAME.fullmatch(os.path.basename(path))
        variants.append(Variant("trained", float(match["budget"]), {d: model for d in model.domains},
                                *_ratios(model, reference, size), method=match["method"]))
    return variants


def _ratios(module: MultiDomainNet, reference: bap.Counts, size: int) -> tuple[float, float]:
    counts = bap.count(module, (size, size))
    return counts.macs_mean / reference.macs_mean, counts.params / reference.params
