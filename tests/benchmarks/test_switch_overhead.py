"""benchmarks/switch_overhead.py: the two steps it times are the trainer's, doing what they claim."""

import pytest
import torch

from bap import metrics as M
from benchmarks import switch_overhead as so


@pytest.mark.parametrize("backbone", ["resnet26", "resnet50"])
def test_the_plain_step_has_no_switches_and_the_switched_one_learns_them_under_the_budget_and_sharing_terms(backbone):
    plain, plain_step = so.make_step(backbone, 0.25, 16, 2, switched=False, device="cpu")
    assert plain.switch_optimizer is None and not list(plain.model.switch_parameters())
    bn_before = [p.clone() for p in plain.model.domain_parameters()]
    assert M.LOSS_SHARING not in plain_step()
    assert any(not torch.equal(a, b) for a, b in zip(bn_before, plain.model.domain_parameters()))

    switched, step = so.make_step(backbone, 0.25, 16, 2, switched=True, device="cpu")
    assert not switched.switches_fixed() and 0.5 < switched.budget_target(switched.step) < 1.0  # mid-annealing
    latents_before = [p.clone() for p in switched.model.switch_parameters()]
    assert M.LOSS_SHARING in step()
    assert all(not torch.equal(a, b) for a, b in zip(latents_before, switched.model.switch_parameters()))
