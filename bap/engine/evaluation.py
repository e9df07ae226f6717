"""Validation accuracy of a multi-domain model: the one evaluation the trainer's hook, the final pruned model and
``bap.pretrain`` all use."""

from __future__ import annotations

from typing import Mapping

import torch

from bap.data import DomainData, eval_batches
from bap.metrics import accuracy


@torch.no_grad()
def evaluate(model, domains: Mapping[str, DomainData], batch_size: int, device: torch.device,
             num_workers: int = 0) -> dict[str, float]:
    """Top-1 accuracy (percent) of ``model`` on every domain's validation split."""
    was_training = model.training
    model.eval()
    result = {}
    try:
        for name, data in domains.items():
            correct, total = 0.0, 0
            for x, y in eval_batches(data.val, batch_size, num_workers):
                logits = model(x.to(device, non_blocking=True), name).cpu()
                correct += accuracy(logits, y) * len(y) / 100.0
                total += len(y)
            result[name] = 100.0 * correct / max(total, 1)
    finally:
        model.train(was_training)
    return result
