"""Per-domain data sets and domain-homogeneous batch iterators (METHOD.md section 7)."""

from bap.data.build import build_domains, build_source, check_domains, list_domains
from bap.data.domain import DomainData
from bap.data.loaders import eval_batches, train_batches

__all__ = [
    "DomainData", "build_domains", "build_source", "check_domains", "eval_batches", "list_domains", "train_batches",
]
