from bap.prune.materialize import apply_shapes, conv_shapes, materialize, plan_keep, union_masks

__all__ = ["apply_shapes", "conv_shapes", "materialize", "plan_keep", "union_masks"]
