"""ResNet-26 (Rebuffi's Visual Decathlon net) and ResNet-50 (torchvision layout) as multi-domain networks.

Module names follow torchvision (``layer1.0.conv1``, ``layer1.0.downsample.0``) so pretrained torchvision
state dicts map key for key; per-domain BN parameters live under ``<bn>.bns.<domain>``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from bap.layers import DomainBatchNorm2d, DomainHeads, SwitchedConv2d, conv_bn
from bap.models.multidomain import MultiDomainNet


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class _ConvFactory:
    """Builds convs that share one switch configuration; names in ``unswitched`` ("*": all) get no switches."""

    def __init__(self, domains: Sequence[str], unswitched: Sequence[str], threshold: float, init: float) -> None:
        self.domains, self.unswitched, self.threshold, self.init = list(domains), set(unswitched), threshold, init

    def __call__(self, name: str, c_in: int, c_out: int, k: int, stride: int = 1) -> SwitchedConv2d:
        return SwitchedConv2d(
            c_in, c_out, k, stride, padding=k // 2, domains=self.domains,
            switched=not ({"*", name} & self.unswitched), threshold=self.threshold, init=self.init,
        )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU. The stride sits on conv1 (first block of a stage)."""

    expansion = 1
    inner = (("conv1", "bn1", "conv2"),)

    def __init__(self, prefix: str, c_in: int, planes: int, stride: int, make_conv: _ConvFactory) -> None:
        super().__init__()
        domains = make_conv.domains
        self.conv1 = make_conv(f"{prefix}.conv1", c_in, planes, 3, stride)
        self.bn1 = DomainBatchNorm2d(planes, domains)
        self.conv2 = make_conv(f"{prefix}.conv2", planes, planes, 3)
        self.bn2 = DomainBatchNorm2d(planes, domains)
        # Rebuffi's parameter-free shortcut: average-pool the spatial size, zero-pad the new channels.
        self.pool = stride != 1

    def add_shortcut_(self, out: Tensor, x: Tensor) -> Tensor:
        if self.pool:
            x = F.avg_pool2d(x, 2)
        # Adding into the first channels is the zero padding, without allocating the padded tensor.
        out[:, : x.shape[1]] += x
        return out

    def forward(self, x: Tensor, domain: str) -> Tensor:
        # In-place ReLU and add on tensors this block created (as torchvision does): fewer full-size allocations.
        out = conv_bn(self.conv1, self.bn1, x, domain).relu_()
        out = conv_bn(self.conv2, self.bn2, out, domain)
        return self.add_shortcut_(out, x).relu_()


class Downsample(nn.Module):
    """torchvision's ``downsample = Sequential(conv1x1, BN)``, with the same child names ``0`` and ``1``."""

    def __init__(self, prefix: str, c_in: int, c_out: int, stride: int, make_conv: _ConvFactory) -> None:
        super().__init__()
        self.add_module("0", make_conv(f"{prefix}.0", c_in, c_out, 1, stride))
        self.add_module("1", DomainBatchNorm2d(c_out, make_conv.domains))

    def forward(self, x: Tensor, domain: str) -> Tensor:
        return conv_bn(self._modules["0"], self._modules["1"], x, domain)


class Bottleneck(nn.Module):
    """torchvision's ResNet V1.5 Bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4
    inner = (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3"))

    def __init__(self, prefix: str, c_in: int, planes: int, stride: int, make_conv: _ConvFactory) -> None:
        super().__init__()
        domains = make_conv.domains
        c_out = planes * self.expansion
        self.conv1 = make_conv(f"{prefix}.conv1", c_in, planes, 1)
        self.bn1 = DomainBatchNorm2d(planes, domains)
        self.conv2 = make_conv(f"{prefix}.conv2", planes, planes, 3, stride)
        self.bn2 = DomainBatchNorm2d(planes, domains)
        self.conv3 = make_conv(f"{prefix}.conv3", planes, c_out, 1)
        self.bn3 = DomainBatchNorm2d(c_out, domains)
        self.downsample = (
            Downsample(f"{prefix}.downsample", c_in, c_out, stride, make_conv)
            if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: Tensor, domain: str) -> Tensor:
        out = conv_bn(self.conv1, self.bn1, x, domain).relu_()
        out = conv_bn(self.conv2, self.bn2, out, domain).relu_()
        out = conv_bn(self.conv3, self.bn3, out, domain)
        out += self.downsample(x, domain) if self.downsample is not None else x
        return out.relu_()


class ResNet(MultiDomainNet):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        stage_widths: Sequence[int],
        arch: Mapping[str, Any],
    ) -> None:
        super().__init__(arch)
        width = float(arch["width"])
        make_conv = _ConvFactory(self.domains, arch["unswitched"], arch["threshold"], arch["init"])
        stem = arch["stem"]
        c = scaled(stem["channels"], width)
        self.conv1 = make_conv("conv1", 3, c, stem["kernel"], stem["stride"])
        self.bn1 = DomainBatchNorm2d(c, self.domains)
        self.stem_pool = stem["maxpool"]
        self.stages: list[str] = []
        for i, (blocks, planes) in enumerate(zip(layers, stage_widths), start=1):
            planes = scaled(planes, width)
            stride = arch["first_stride"] if i == 1 else 2
            stage = []
            for j in range(blocks):
                stage.append(block(f"layer{i}.{j}", c, planes, stride if j == 0 else 1, make_conv))
                c = planes * block.expansion
            self.add_module(f"layer{i}", nn.ModuleList(stage))
            self.stages.append(f"layer{i}")
        # Rebuffi's net ends with BN + ReLU before pooling (pre-activation style head); torchvision's does not.
        self.head_bn = DomainBatchNorm2d(c, self.domains) if arch["head_bn"] else None
        self.feature_dim = c
        self.fc = DomainHeads(c, self.num_classes)
        self.block_type = block

    def inner_links(self) -> list[tuple[str, str, str]]:
        links = []
        for stage in self.stages:
            for j in range(len(getattr(self, stage))):
                prefix = f"{stage}.{j}"
                links += [(f"{prefix}.{p}", f"{prefix}.{b}", f"{prefix}.{c}") for p, b, c in self.block_type.inner]
        return links

    def forward_features(self, x: Tensor, domain: str) -> Tensor:
        x = conv_bn(self.conv1, self.bn1, x, domain).relu_()
        if self.stem_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        for stage in self.stages:
            for block in getattr(self, stage):
                x = block(x, domain)
        if self.head_bn is not None:
            x = self.head_bn(x, domain).relu_()
        return x.mean(dim=(2, 3))
