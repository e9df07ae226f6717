"""bap is plain PyTorch: importing all of it pulls in no orchestration library."""

import subprocess
import sys


def test_bap_imports_no_ray_mlflow_or_hydra():
    code = (
        "import sys, bap, bap.train, bap.pretrain, bap.io, bap.data, bap.prune, bap.engine.trainer; "
        "print(sorted({'ray', 'mlflow', 'hydra', 'omegaconf'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
