"""The layout's boundaries (README "Layout"): bap never imports Ray, MLflow or Hydra, so anyone can use it from a
notebook; the orchestrator's pure helpers need neither Ray nor MLflow; benchmarks use the product and
``localstack``, never the tests."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("modules, banned", [
    (["bap", "bap.metrics", "bap.data", "bap.train", "bap.pretrain", "bap.io", "bap.prune", "bap.engine.trainer"],
     {"ray", "mlflow", "hydra", "omegaconf"}),
    (["orchestrator.pareto", "orchestrator.stats"], {"ray", "mlflow"}),
])
def test_a_fresh_interpreter_importing_these_loads_none_of_those(modules, banned):
    code = (f"import sys, {', '.join(modules)}; "
            f"print(sorted(set({sorted(banned)!r}) & {{m.split('.')[0] for m in sys.modules}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_no_benchmark_imports_the_tests():
    offenders = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in names if name.split(".")[0] == "tests"]
    assert offenders == []
