from bap.layers.domain_bn import DomainBatchNorm2d, DomainHeads
from bap.layers.switched import SwitchedConv2d, binarize, conv_bn

__all__ = ["DomainBatchNorm2d", "DomainHeads", "SwitchedConv2d", "binarize", "conv_bn"]
