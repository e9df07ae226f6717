"""The joint training loop of BAP: every domain at once, switches under a budget, a sharing term (METHOD 2-3, 3b).

``Trainer`` owns the loop and its state only; evaluation, checkpoints, progress and reporting are hooks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bap.config import ExperimentConfig
from bap.data import DomainData, train_batches
from bap.engine.hooks import Hook
from bap.engine.optim import domain_optimizer, switch_optimizer
from bap import metrics as M
from bap.baselines import baseline_masks, baseline_scores, magnitude_scores
from bap.budget import budget_target, order_latents, select_to_budget, switch_costs, usage_summary
from bap.losses import cost_layout, flat_sharing_loss
from bap.models.multidomain import MultiDomainNet


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(device)


def batch_seed(seed: int, epoch: int, domain_index: int) -> int:
    """Data order of one domain in one epoch: a function of (seed, epoch, domain) only, so a resumed run
    draws exactly the batches the uninterrupted run would have drawn."""
    return (seed * 1_000_003 + epoch * 10_007 + domain_index) % (2**63)


class Trainer:
    def __init__(
        self,
        model: MultiDomainNet,
        domains: Mapping[str, DomainData],
        cfg: ExperimentConfig,
        hooks: Sequence[Hook | None] = (),
    ) -> None:
        missing = set(model.domains) ^ set(domains)
        if missing:
            raise ValueError(f"model domains {model.domains} and data domains {list(domains)} differ: {sorted(missing)}")
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device)
        self.model = model.to(self.device)
        self.domains = dict(domains)
        self.hooks = [h for h in hooks if h is not None]
        self.amp = cfg.train.amp and self.device.type == "cuda"

        first = next(iter(self.domains.values()))
        self.costs = switch_costs(self.model, cfg.budget.unit, first.input_size)
        self.cost_layout = cost_layout(self.costs, cfg.sharing.normalize) if self.costs else None
        if self.costs:
            self._start_switches()
        # None for a net without switches (model.unswitched=["*"]): BN and heads only, the plain baseline.
        self.switch_optimizer = switch_optimizer(self.model, cfg.train) if self.costs else None
        self.domain_optimizer = domain_optimizer(self.model, cfg.train)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # The learnable sharing weight's dual variable (ours): weight = max_weight * sigmoid(sharing_rho).
        self.sharing_rho = 0.0
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps completed
        self.epoch_metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: str | None = None  # set by CheckpointHook
        self._learning_switches: bool | None = None  # what the latents' requires_grad was last set to

    def _start_switches(self) -> None:
        """A one-shot baseline's masks, fixed at beta from the start; an annealed baseline's ranking, or a learned
        method's initial order, as the latents' order (the anneal then turns the lowest off first)."""
        cfg, model = self.cfg, self.model
        generator = torch.Generator().manual_seed(cfg.train.seed)
        if cfg.sharing.one_shot:
            model.set_masks(baseline_masks(model, cfg.sharing.loss, cfg.budget.beta, self.costs, generator))
        elif cfg.sharing.baseline:
            order_latents(model, baseline_scores(model, cfg.sharing.loss, generator), cfg.budget.order_spread)
        elif cfg.budget.init_order == "magnitude":
            scores = magnitude_scores(model)
            order_latents(model, {d: scores for d in model.domains}, cfg.budget.order_spread)

    # ---- one optimizer step -----------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * self.cfg.train.steps_per_epoch

    def budget_target(self, step: int) -> float:
        """The usage every domain may have after ``step`` optimizer steps (annealed from 1 to beta)."""
        b = self.cfg.budget
        if self.cfg.sharing.one_shot:
            return b.beta
        return budget_target(step, self.total_steps, b.beta, b.anneal_start, b.anneal_end)

    def sharing_weight(self) -> float:
        s = self.cfg.sharing
        if not s.learnable:
            return s.weight
        return s.max_weight / (1.0 + math.exp(-self.sharing_rho))

    def switches_fixed(self) -> bool:
        """Whether the switches are settled: a one-shot baseline's always are; others once the budget has annealed
        to beta, after which BN and heads fine-tune on the final masks (a mask that still changed every step left
        them chasing a moving target: on the embedded data at beta 0.5 that cost ~20 points of accuracy)."""
        return self.cfg.sharing.one_shot or self.step >= self.cfg.budget.anneal_end * self.total_steps

    def run_step(self, batches: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, float]:
        """One step over ``batches`` (domain -> batch): per domain CE_d, then the sharing term, backward, optimizer
        steps, then every domain's switches re-selected within the step's budget target (until they are fixed)."""
        cfg, model = self.cfg, self.model
        model.train()
        learning_switches = not self.switches_fixed() and not cfg.sharing.baseline  # a baseline's ranking is fixed
        if learning_switches is not self._learning_switches:  # once at the start and once when they settle
            for latent in model.switch_parameters():
                latent.requires_grad_(learning_switches)  # fixed switches: the op skips their gradient
            self._learning_switches = learning_switches
        optimizers = [o for o in (self.switch_optimizer, self.domain_optimizer) if o is not None]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = {}
        for domain, (x, y) in batches.items():
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast("cuda", enabled=self.amp):
                logits = model(x, domain)
            ce = F.cross_entropy(logits.float(), y)
            self.scaler.scale(ce).backward()  # per domain, so only one domain's activations are alive at a time
            stats[M.loss_key(f"ce/{domain}")] = ce.item()

        if cfg.sharing.has_loss and len(self.domains) > 1 and self.cost_layout is not None:
            s = cfg.sharing
            with torch.set_grad_enabled(learning_switches):  # once switches are fixed: logged, not trained
                shared = flat_sharing_loss(s.loss, model.flat_soft_masks(list(self.domains)), self.cost_layout,
                                           q=s.q)
            stats[M.LOSS_SHARING] = shared.item()
            if learning_switches:
                self.scaler.scale(self.sharing_weight() * shared).backward()
            if learning_switches and s.learnable:  # dual ascent on the loss's target, clipped so it can come back
                self.sharing_rho = min(10.0, max(-10.0, self.sharing_rho + s.dual_lr * (stats[M.LOSS_SHARING] - s.target)))

        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        if not self.switches_fixed():
            target = self.budget_target(self.step + 1)
            select_to_budget(model, {d: target for d in self.domains}, self.costs)
        return stats

    # ---- the loop ---------------------------------------------------------------------------------------------
    def epoch_batches(self) -> Iterator[dict[str, tuple[Tensor, Tensor]]]:
        """The epoch's steps: one batch of every domain (accumulate) or of one domain in turn (round_robin)."""
        t, names = self.cfg.train, list(self.domains)
        per_domain = t.steps_per_epoch if t.schedule == "accumulate" else math.ceil(t.steps_per_epoch / len(names))
        streams = {
            d: train_batches(self.domains[d].train, t.batch_size, per_domain, batch_seed(t.seed, self.epoch, i),
                             self.cfg.data.num_workers)
            for i, d in enumerate(names)
        }
        first_step = self.step  # round-robin continues across epochs where the last one stopped
        for step in range(t.steps_per_epoch):
            if t.schedule == "accumulate":
                yield {d: next(streams[d]) for d in names}
            else:
                domain = names[(first_step + step) % len(names)]
                yield {domain: next(streams[domain])}

    def fit(self) -> None:
        for hook in self.hooks:
            hook.before_train(self)
        while self.epoch < self.cfg.train.epochs:
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for batches in self.epoch_batches():
                for key, value in self.run_step(batches).items():
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
                self.step += 1
                for hook in self.hooks:
                    hook.after_step(self)
            self.epoch += 1
            self.epoch_metrics = {"epoch": self.epoch, **{k: sums[k] / counts[k] for k in sums}}
            self.epoch_metrics.update(self.switch_report())
            # History first, so the checkpoint a hook writes already holds this epoch.
            self.history.append(self.epoch_metrics)
            for hook in self.hooks:
                hook.after_epoch(self)
        for hook in self.hooks:
            hook.after_train(self)

    @torch.no_grad()
    def switch_report(self) -> dict[str, float]:
        """Binarised usage per domain, the step's budget target, the union fraction and the overlap."""
        summary = usage_summary(self.model.masks(), self.costs)
        report = {M.budget_usage_key(d): float(u) for d, u in summary["usage"].items()}
        report[M.BUDGET_TARGET] = self.budget_target(self.step)
        report[M.UNION_FRACTION] = float(summary["union"])
        report[M.OVERLAP] = float(summary["overlap"])
        if self.cfg.sharing.has_loss:
            report[M.SHARING_WEIGHT] = self.sharing_weight()
        return report

    # ---- exact resume -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "switch_optimizer": self.switch_optimizer.state_dict() if self.switch_optimizer else None,
            "domain_optimizer": self.domain_optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sharing_rho": self.sharing_rho,
            "epoch": self.epoch,
            "step": self.step,
            "history": list(self.history),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.switch_optimizer is not None:
            self.switch_optimizer.load_state_dict(state["switch_optimizer"])
        self.domain_optimizer.load_state_dict(state["domain_optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.sharing_rho = float(state["sharing_rho"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):  # a checkpoint from more GPUs than this machine has
                torch.cuda.set_rng_state_all(state["rng_cuda"])
