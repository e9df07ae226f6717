"""bap.pretrain: the command line trains a backbone that build_model loads, with the steps and schedule asked for."""

import subprocess
import sys

import pytest
import torch

from bap import PretrainConfig, build_model


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
def test_command_line_pretrains_a_loadable_backbone_with_its_own_head(tmp_path):
    out = tmp_path / "backbone.pt"
    done = subprocess.run(
        [sys.executable, "-m", "bap.pretrain", "--out", str(out), "--width", "0.125", "--image-size", "16",
         "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8", "--lr", "0.05", "--schedule", "cosine",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "val top-1" in done.stderr
    state = torch.load(out, weights_only=True)
    assert state["fc.weight"].shape[0] == 10  # the embedded source domain's 10 shapes
    model = build_model("resnet26", {"shapes": 10, "digits": 10}, width=0.125, weights=str(out),
                        source_domain="shapes")
    assert torch.equal(model.fc.heads["shapes"].weight, state["fc.weight"])
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_bad_schedule_names_the_field():
    with pytest.raises(ValueError, match="pretrain.schedule='step'"):
        PretrainConfig(schedule="step")
