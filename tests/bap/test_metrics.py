import math

import pytest
import torch

from bap import metrics
from bap.metrics import DECATHLON_BASELINE, accuracy, decathlon_score, efficiency, mean_accuracy


def test_accuracy_is_top1_percent():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [0.1, 0.2]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(75.0)


@pytest.mark.parametrize(
    "logits, targets",
    [(torch.zeros(3), torch.zeros(3, dtype=torch.long)), (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long)),
     (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))],
)
def test_accuracy_rejects_bad_shapes(logits, targets):
    with pytest.raises(ValueError):
        accuracy(logits, targets)


def test_mean_accuracy_is_unweighted():
    assert mean_accuracy({"a": 50.0, "b": 100.0}) == 75.0
    with pytest.raises(ValueError):
        mean_accuracy({})


def test_baseline_scores_2500_and_perfect_10000():
    assert decathlon_score(DECATHLON_BASELINE) == pytest.approx(2500.0, abs=1e-9)
    assert decathlon_score({d: 100.0 for d in DECATHLON_BASELINE}) == pytest.approx(10000.0, abs=1e-9)
    # Each domain is worth 250 at its baseline, 0 at twice its error or worse.
    assert decathlon_score({"dtd": DECATHLON_BASELINE["dtd"]}) == pytest.approx(250.0)
    assert decathlon_score({"dtd": 0.0}) == 0.0


def test_score_is_monotone_in_accuracy():
    scores = [decathlon_score({"aircraft": a, "svhn": 90.0}) for a in range(0, 101, 5)]
    assert all(b >= a for a, b in zip(scores, scores[1:]))
    assert scores[-1] > scores[0]


def test_score_ignores_domains_without_baseline():
    with_extra = dict(DECATHLON_BASELINE, digits=12.0, faces=99.0)
    assert decathlon_score(with_extra) == pytest.approx(2500.0)
    assert metrics.scored_domains({"digits": 1.0, "dtd": 2.0}) == ["dtd"]


def test_score_without_any_baseline_raises_with_the_fix():
    with pytest.raises(ValueError, match="no Decathlon baseline.*scored_domains"):
        decathlon_score({"digits": 90.0, "faces": 80.0})
    # Custom baselines make other domain sets scorable.
    assert decathlon_score({"digits": 90.0}, baselines={"digits": 90.0}) == pytest.approx(250.0)


def test_score_rejects_fractions():
    with pytest.raises(ValueError, match="percent"):
        decathlon_score({"dtd": 155.0})


def test_efficiency_names_and_values():
    eff = efficiency(2500.0, params_ratio=0.5, macs_ratio=0.25)
    assert eff == {metrics.SCORE_PER_PARAMS_RATIO: 5000.0, metrics.SCORE_PER_MACS_RATIO: 10000.0}
    assert set(eff) == {"score_per_params_ratio", "score_per_macs_ratio"}
    assert efficiency(None, 0.5, 0.5) == {}
    with pytest.raises(ValueError, match="params_ratio"):
        efficiency(1.0, 0.0, 1.0)
    assert not math.isnan(efficiency(1.0, 1.0, 1.0)[metrics.SCORE_PER_MACS_RATIO])
