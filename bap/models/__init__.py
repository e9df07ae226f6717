from bap.models.multidomain import MultiDomainNet
from bap.models.registry import build_model, list_models, register_model
from bap.models.weights import load_backbone_weights, single_domain_state_dict

__all__ = [
    "MultiDomainNet", "build_model", "list_models", "register_model", "load_backbone_weights",
    "single_domain_state_dict",
]
