"""A frozen convolution shared by all domains, with one switch per input channel and domain (METHOD 1)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bap.layers import native
from bap.layers.domain_bn import DomainBatchNorm2d


def binarize(latent: Tensor, threshold: float) -> Tensor:
    """Binary mask ``latent > threshold`` whose gradient passes straight through (dm/dz = 1)."""
    hard = (latent > threshold).to(latent.dtype)
    return hard + latent - latent.detach()


def switched_conv(x: Tensor, latent: Tensor, weight: Tensor, threshold: float, stride: int, padding: int) -> Tensor:
    """``conv2d(x * m, W)`` with ``m = latent > threshold`` and a straight-through gradient to ``latent``: the C++
    op of ``bap.layers.native`` when it is built, else ``_SwitchedConv`` (the same maths in Python)."""
    op = native.switched_conv_op()
    if op is None:
        return _SwitchedConv.apply(x, latent, weight, threshold, stride, padding)
    return op(x, latent, weight, threshold, stride, padding)


class _SwitchedConv(torch.autograd.Function):
    """``conv2d(x * m, W)`` with ``m = latent > threshold`` and a straight-through gradient to ``latent``.

    One fused op instead of autograd's chain (binarize, broadcast multiply on the activations, conv): the mask
    is applied to the small weight tensor in forward, and backward computes the conv's input gradient once and
    derives both ``dL/dx = g_in * m`` and ``dL/dlatent = sum(g_in * x)`` from it. Fewer passes over the
    activations and one saved tensor fewer; the maths is the input-masking of METHOD 1.
    ``csrc/switched_conv.cpp`` is the same function in C++; this one runs where that cannot be built.
    """

    @staticmethod
    def forward(ctx, x: Tensor, latent: Tensor, weight: Tensor, threshold: float, stride: int, padding: int) -> Tensor:
        mask = latent > threshold
        ctx.save_for_backward(x, mask, weight)
        ctx.stride, ctx.padding = stride, padding
        # weight * bool mask: one op, promoted to the weight's dtype
        return F.conv2d(x, (weight * mask.view(1, -1, 1, 1)).to(x.dtype), None, stride, padding)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, mask, weight = ctx.saved_tensors
        # Under autocast the output (and so its gradient) may be half precision while x and W are float: the
        # input gradient needs only x's shape then, as in torch.nn.grad.conv2d_input.
        shape_of_x = x if x.dtype == grad_out.dtype else grad_out.new_empty(1).expand(x.shape)
        grad_in = torch.ops.aten.convolution_backward(
            grad_out, shape_of_x, weight.to(grad_out.dtype), None, (ctx.stride, ctx.stride),
            (ctx.padding, ctx.padding), (1, 1), False, (0, 0), 1, (True, False, False),
        )[0]
        grad_latent = None
        if ctx.needs_input_grad[1]:
            product = grad_in * x if grad_in.dtype == x.dtype == torch.float32 else grad_in.float() * x.float()
            grad_latent = product.sum(dim=(0, 2, 3))
        # grad_in is ours alone: mask it in place rather than allocate another activation-sized tensor
        grad_x = grad_in.mul_(mask.view(1, -1, 1, 1)).to(x.dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_latent, None, None, None, None


class SwitchedConv2d(nn.Module):
    """``conv2d(x * m_d, W)`` with ``W`` frozen and shared, ``m_d`` a binary mask over input channels.

    The switch gates the input: its gradient is then a cheap reduction of the input gradient that backprop
    computes anyway, while autograd through a masked weight would need the conv's weight gradient (a second
    full convolution) in every backward pass. ``switched_conv`` computes exactly that in one fused op.

    Two switch modes:
    - trainable (``fixed=False``): one latent vector per domain, binarised by ``threshold`` with a
      straight-through estimator;
    - fixed (``fixed=True``, materialized models): one boolean buffer per domain, no parameters.

    After physical pruning the conv may read only some of its producer's channels: ``in_index`` gathers them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        domains: Iterable[str] = (),
        switched: bool = True,
        threshold: float = 5e-3,
        init: float = 1e-2,
        fixed: bool = False,
        in_index: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.switched = switched
        self.threshold = threshold
        self.fixed = fixed
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size), requires_grad=False
        )
        if self.weight.numel():
            nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("in_index", in_index.clone().long() if in_index is not None else None)
        self.domains = list(domains) if switched else []
        if switched and fixed:
            for domain in self.domains:
                self.register_buffer(self._mask_name(domain), torch.ones(in_channels, dtype=torch.bool))
        elif switched:
            self.latent = nn.ParameterDict(
                {d: nn.Parameter(torch.full((in_channels,), float(init))) for d in self.domains}
            )

    @staticmethod
    def _mask_name(domain: str) -> str:
        return f"mask__{domain}"

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def mask(self, domain: str) -> Tensor:
        """Float mask over the (kept) input channels; carries STE gradients in trainable mode."""
        if not self.switched:
            return self.weight.new_ones(self.in_channels)
        if self.fixed:
            return getattr(self, self._mask_name(domain)).to(self.weight.dtype)
        return binarize(self.latent[domain], self.threshold)

    def hard_mask(self, domain: str) -> Tensor:
        return self.mask(domain).detach() > 0.5

    def set_mask(self, domain: str, mask: Tensor, init: float) -> None:
        """Make the binarised mask equal ``mask``; latent values already on the right side are kept."""
        mask = mask.to(dtype=torch.bool, device=self.weight.device)
        if mask.shape != (self.in_channels,):
            raise ValueError(f"mask for domain {domain!r} has shape {tuple(mask.shape)}, expected ({self.in_channels},)")
        if self.fixed:
            getattr(self, self._mask_name(domain)).copy_(mask)
            return
        with torch.no_grad():
            latent = self.latent[domain]
            on = latent > self.threshold
            latent[mask & ~on] = init
            latent[~mask & on] = 0.0

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        def out(size: int) -> int:
            return (size + 2 * self.padding - self.kernel_size) // self.stride + 1

        return out(height), out(width)

    def forward(self, x: Tensor, domain: str, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """``conv2d(x * m_d, W)``; with ``scale`` and ``shift`` (one value per filter) ``* scale + shift`` as well,
        which is how an eval-mode BatchNorm is folded in (see ``conv_bn``)."""
        if self.in_index is not None:
            x = x.index_select(1, self.in_index)
        if self.weight.numel() == 0:
            # Every input (or every filter) was pruned away: the conv contributes exactly zero.
            out = x.new_zeros(x.shape[0], self.out_channels, *self.output_size(*x.shape[-2:]))
            return out if shift is None else out + shift.to(out.dtype).view(1, -1, 1, 1)
        if self.switched and not self.fixed and torch.is_grad_enabled():
            out = switched_conv(x, self.latent[domain], self.weight, self.threshold, self.stride, self.padding)
            if scale is None:
                return out
            return torch.addcmul(shift.to(out.dtype).view(1, -1, 1, 1), out, scale.to(out.dtype).view(1, -1, 1, 1))
        # conv(x * m, W) == conv(x, W * m): masking (and scaling) the weight is cheaper than the activations.
        factor = None
        if self.switched:
            factor = self.mask(domain).detach().view(1, -1)
        if scale is not None:
            factor = scale.view(-1, 1) if factor is None else scale.view(-1, 1) * factor
        weight = self.weight if factor is None else self.weight * factor.view(*factor.shape, 1, 1)
        bias = None if shift is None else shift.to(x.dtype)
        return F.conv2d(x, weight.to(x.dtype), bias, self.stride, self.padding)

    def folds_cheaply(self, x: Tensor) -> bool:
        """Whether folding a BN into this conv costs less than a BN pass over its output: a switched conv scales
        its weight anyway; otherwise the weight (one pass) must be smaller than the output."""
        if self.switched:
            return True
        out_h, out_w = self.output_size(*x.shape[-2:])
        return x.shape[0] * out_h * out_w >= self.in_channels * self.kernel_size**2

    def extra_repr(self) -> str:
        mode = "off" if not self.switched else ("fixed" if self.fixed else "trainable")
        gathered = f", gathers {self.in_index.numel()}" if self.in_index is not None else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, switches={mode}{gathered}"
        )


def masks_of(conv: SwitchedConv2d) -> Mapping[str, Tensor]:
    return {d: conv.hard_mask(d) for d in conv.domains}


def conv_bn(conv: SwitchedConv2d, bn: DomainBatchNorm2d, x: Tensor, domain: str) -> Tensor:
    """``bn(conv(x, domain), domain)``. In eval mode BN is an affine map per channel, folded into the conv's
    weight and bias when that is cheaper: one conv instead of a conv and another pass over its output."""
    affine = bn.eval_affine(domain)
    if affine is None or not conv.folds_cheaply(x):
        return bn(conv(x, domain), domain)
    return conv(x, domain, *affine)
