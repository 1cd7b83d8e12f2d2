"""The core never imports optuna, mlflow or typer (checked on the source, so it cannot drift)."""

import ast
from pathlib import Path

import dhns_search

CORE = ["config", "data", "models", "diffusion", "training", "evaluation"]
FORBIDDEN = {"optuna", "mlflow", "typer"}
ROOT = Path(dhns_search.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_does_not_import_search_stack():
    files = [p for pkg in CORE for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) >= 10
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN) for p in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_core_does_not_import_cli_or_search_layer():
    for pkg in CORE:
        for p in (ROOT / pkg).rglob("*.py"):
            src = p.read_text(encoding="utf-8")
            assert "dhns_search.cli" not in src and "dhns_search.search" not in src, p
