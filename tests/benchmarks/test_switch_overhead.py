"""benchmarks/switch_overhead.py: the three steps it times train what they claim to."""

import pytest
import torch
import torch.nn.functional as F

from bap.layers import native
from benchmarks import switch_overhead as so


def _switch_grads(model, python_op: bool) -> list[torch.Tensor]:
    torch.manual_seed(1)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 5, (2,))
    model.zero_grad(set_to_none=True)
    with native.python_op() if python_op else torch.enable_grad():
        F.cross_entropy(model(x, "d"), y).backward()
    return [p.grad.clone() for p in model.switch_parameters() if p.grad is not None]


@pytest.mark.parametrize("backbone", ["resnet26", "resnet50"])
def test_plain_step_has_no_switches_and_both_switched_steps_train_the_same(backbone):
    if native.switched_conv_op() is None:
        pytest.skip("the C++ op cannot be built here")
    plain, plain_step = so.make_step(backbone, 0.25, 16, 2, switched=False)
    assert not list(plain.switch_parameters())
    bn_before = [p.clone() for p in plain.domain_parameters()]
    plain_step()
    assert any(not torch.equal(a, b) for a, b in zip(bn_before, plain.domain_parameters()))

    model, step = so.make_step(backbone, 0.25, 16, 2, switched=True)
    latents_before = [p.clone() for p in model.switch_parameters()]
    step()
    assert all(not torch.equal(a, b) for a, b in zip(latents_before, model.switch_parameters()))
    # the C++ and the Python op give the switches the same gradients
    cpp, python = _switch_grads(model, python_op=False), _switch_grads(model, python_op=True)
    assert len(cpp) == len(python) == len(latents_before) // len(so.DOMAINS)  # one domain's switches
    for a, b in zip(cpp, python):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
