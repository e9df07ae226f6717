"""The layout's boundaries (README "Layout"): bap never imports Ray, MLflow or Hydra, so anyone can use it from a
notebook; the orchestrator's pure helpers need neither Ray nor MLflow; benchmarks use the product's public
interfaces and ``localstack``, never the tests."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("modules, banned", [
    (["bap", "bap.metrics", "bap.data", "bap.train", "bap.pretrain", "bap.io", "bap.prune", "bap.engine.trainer"],
     {"ray", "mlflow", "hydra", "omegaconf"}),
    (["orchestrator.pareto", "orchestrator.stats", "orchestrator.table", "orchestrator.trial_keys",
      "orchestrator.errors"], {"ray", "mlflow"}),
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


def test_benchmarks_use_only_public_names_of_the_product():
    """A benchmark that drives a private member (``progress._records``) breaks with any refactoring of it; what a
    benchmark needs the product offers as a public method."""
    offenders = []
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("bap", "orchestrator",
                                                                                            "localstack"):
                offenders += [f"{path.relative_to(REPO)}: {a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
