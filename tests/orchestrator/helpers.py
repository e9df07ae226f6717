"""Helpers shared by the orchestrator tests."""

import socket

from orchestrator.trial_keys import DRAW_PARAM, trial_tags


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes


# Trial records as front.run_record makes them: two groups, a dominated and a failed trial; seeds of two
# configurations.
def record(run_id, budget, sharing, acc, ratio, domain_set="all", backbone="resnet26"):
    return {
        "run_id": run_id, "budget": budget, "sharing": sharing, "backbone": backbone, "domain_set": domain_set,
        "acc_mean": acc, "params_total": int(ratio * 6e6), "params_ratio": ratio,
        "macs_mean": ratio * 8e8, "macs_ratio": ratio if run_id != "r2" else 0.2,
    }


RECORDS = [
    record("r1", 1.0, "none", 90.0, 1.05),
    record("r2", 0.5, "jaccard", 85.0, 0.55),
    record("r3", 0.5, "none", 80.0, 0.70),  # dominated by r2 on both costs
    record("r4", 0.25, "jaccard", 75.0, 0.30),
    record("r5", 0.25, "int", 70.0, 0.30, domain_set="digits+faces"),
    {**record("failed", 0.5, "union", 0.0, 0.0), "acc_mean": None, "params_ratio": None, "macs_ratio": None},
]
SEEDS = [
    *({**record(f"u{s}", 0.5, "union", acc, 0.60), "seed": s} for s, acc in enumerate((80.0, 84.0, 88.0))),
    # one lucky seed of `none` beats union's mean, but not none's own mean
    *({**record(f"n{s}", 0.5, "none", acc, 0.62), "seed": s} for s, acc in enumerate((95.0, 70.0, 72.0))),
]


def trial(budget=0.5, method="union", backbone="resnet26", domains=None, seed=0) -> dict:
    """A trial's Tune params (``orchestrator.config.AXES``)."""
    return {"budget": budget, "method": method, "backbone": backbone, "domains": domains, "seed": seed}


def tag_trial(client, run_id: str, draw: int = 0, **params) -> None:
    """Tag ``run_id`` as its trial does (``trial_keys.trial_tags`` of ``trial(**params)``), with the draw's param."""
    for key, value in trial_tags(trial(**params)).items():
        client.set_tag(run_id, key, str(value))
    client.log_param(run_id, DRAW_PARAM, str(draw))
