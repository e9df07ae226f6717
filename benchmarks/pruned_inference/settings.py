"""What is timed (backbones, input sizes, batches, repeats) and the target it is held to."""

from __future__ import annotations

from dataclasses import dataclass

SECTION = "pruned_inference"
CUDA_SECTION = "pruned_inference_cuda"
RESULT_NAME = "latency_minus_macs_ratio"
TARGET_BATCH = 64
TARGET_EXCESS = 0.10  # every pruned row: latency ratio <= MACs ratio + this, at TARGET_BATCH
# The method study's models (benchmarks/method_study.py --models-dir): the default method and the two shared
# baselines, at the study's input size (sweeps/preset/study.yaml: data.image_size).
TRAINED_METHODS = ("union", "magnitude_shared", "random_shared")
TRAINED_SIZE = 32
MIB = 2**20


@dataclass(frozen=True)
class Setting:
    """One backbone configuration; ``repeats`` timed runs per batch size, after one untimed warm-up round."""

    backbone: str
    width: float
    size: int
    batches: tuple[int, ...]
    repeats: dict[int, int]
    classes: int
    why: str
    name: str = ""  # the table's name in its RESULT line; default the backbone's

    @property
    def result_name(self) -> str:
        return self.name or self.backbone

    @property
    def label(self) -> str:
        return f"{self.backbone} width {self.width:g} at {self.size}x{self.size}"


FULL = (
    Setting("resnet26", 1.0, 64, (1, 64), {1: 21, 64: 7}, 100, "the Visual Decathlon net at the paper's input size"),
    Setting("resnet50", 1.0, 224, (1, 64), {1: 9, 64: 5}, 200, "the ImageNet-to-Sketch backbone at its real size"),
)
QUICK = (
    Setting("resnet26", 0.5, 64, (1, 64), {1: 9, 64: 5}, 100, "quick run: half width"),
)
CUDA_SETTINGS = (
    Setting("resnet26", 1.0, 64, (1, 64), {1: 51, 64: 21}, 100, "the paper's input size"),
    Setting("resnet50", 1.0, 224, (1, 64), {1: 51, 64: 11}, 200, "the paper's input size"),
)
