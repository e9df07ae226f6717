"""A sweep's own Ray (no cluster named) is reachable from this machine only, and its token file is private."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

PROBE = """
import json, psutil, ray
from orchestrator.local_ray import start_local_ray
start_local_ray(1)
pids = {p.pid for p in [psutil.Process(), *psutil.Process().children(recursive=True)]}
listening = sorted({c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in pids})
print(json.dumps({"listening": listening, "node_ip": ray.util.get_node_ip_address()}))
ray.shutdown()
"""


@pytest.mark.parametrize("token_before", [None, 0o644])
def test_the_local_ray_listens_on_loopback_only_with_a_private_token_file(tmp_path, token_before):
    # Ray's own ray.init() listens on every interface and writes ~/.ray/auth_token 0644.
    token = tmp_path / ".ray" / "auth_token"
    if token_before is not None:
        token.parent.mkdir()
        token.write_text("a" * 64)
        token.chmod(token_before)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["node_ip"] == "127.0.0.1"
    assert probe["listening"] and set(probe["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, probe
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
