"""bap.config: every bad value is refused when the dataclass is built, naming the field and the fix."""

import pytest

from bap.config import BudgetConfig, ModelConfig, SharingConfig, TrainConfig


def test_bad_config_values_name_the_field():
    with pytest.raises(ValueError, match=r"budget.beta=1.5 is outside \(0, 1\]"):
        BudgetConfig(beta=1.5)
    with pytest.raises(ValueError, match="sharing.loss='dice'"):
        SharingConfig(loss="dice")
    with pytest.raises(ValueError, match="sharing.weight='heavy'"):
        SharingConfig(weight="heavy")
    with pytest.raises(ValueError, match="train.device='tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="train.epochs=0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="model.backbone='vgg'"):
        ModelConfig(backbone="vgg")
