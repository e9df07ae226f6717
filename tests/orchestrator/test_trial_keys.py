"""A trial's keys: written from its Tune params as its run's tags, read back typed, and never guessed."""

import pytest

from orchestrator.trial_keys import TRIAL_KEYS, read_trial_keys, trial_tags
from tests.orchestrator.helpers import trial


def test_the_tags_a_trial_writes_read_back_as_the_values_it_ran_with():
    tags = trial_tags(trial(budget=0.25, method="jaccard", domains=["dtd", "svhn"], seed=3))
    assert set(tags) == set(TRIAL_KEYS)
    stored = {key: str(value) for key, value in tags.items()}  # MLflow keeps strings
    assert read_trial_keys(stored, {"data.seed": "2"}) == {"budget": 0.25, "sharing": "jaccard", "backbone": "resnet26",
                                                           "domain_set": "dtd+svhn", "seed": 3, "draw": 2}


@pytest.mark.parametrize("key", TRIAL_KEYS)
def test_a_missing_key_is_an_error_not_a_default(key):
    stored = {k: str(v) for k, v in trial_tags(trial()).items() if k != key}
    with pytest.raises(KeyError):
        read_trial_keys(stored, {"data.seed": "0"})
    with pytest.raises(KeyError):  # nor the draw
        read_trial_keys({k: str(v) for k, v in trial_tags(trial()).items()}, {})
