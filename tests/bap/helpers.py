"""Helpers for the bap tests: tiny in-memory domains, randomised BN, random masks."""

import torch
from torch.utils.data import TensorDataset

from bap.data import DomainData


def tiny_domain(name: str, num_classes: int, size: int = 16, n_train: int = 48, n_val: int = 24, seed: int = 0):
    """Images whose class sets the brightness of one colour channel and a stripe: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.arange(n) % num_classes
        x = torch.randn(n, 3, size, size, generator=g) * 0.5
        x[torch.arange(n), labels % 3] += labels.float()[:, None, None] / num_classes * 2
        x[torch.arange(n), :, labels % size] += 1.0
        return TensorDataset(x, labels)

    return DomainData(name=name, num_classes=num_classes, input_size=(size, size), train=split(n_train), val=split(n_val))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters, so equality tests see every BN's effect."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def random_masks(model, densities, seed: int = 0):
    """domain -> conv -> Bernoulli(density) mask, one density per domain."""
    g = torch.Generator().manual_seed(seed)
    return {
        d: {n: torch.rand(c.in_channels, generator=g) < p for n, c in model.switched_convs().items()}
        for d, p in zip(model.domains, densities)
    }
