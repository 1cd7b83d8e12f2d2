"""The core never imports optuna, mlflow or typer (checked on the source, so it cannot drift)."""

import ast
import re
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


def _package_imports(path: Path) -> set[str]:
    """The ``dhns_search`` modules a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dhns_search"):
            names.update(f"{node.module}.{a.name}" for a in node.names)
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("dhns_search"))
    return names


def test_no_import_cycle_in_the_package():
    modules = {}
    for p in ROOT.rglob("*.py"):
        parts = ("dhns_search", *p.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: sorted(n for n in _package_imports(p) if n in modules and n != m) for m, p in modules.items()}
    # an edge from a package's __init__ to its own modules re-exports them; it is not a dependency back
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in graph[module]:
            if not (modules[module].name == "__init__.py" and dep.startswith(module + ".")):
                visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def _files(folder: str | None = None) -> list[Path]:
    return sorted((ROOT / folder if folder else ROOT).rglob("*.py"))


def test_mlflow_is_imported_only_in_the_tracking_package():
    importers = sorted(str(p.relative_to(ROOT)) for p in _files() if "mlflow" in _imports(p))
    assert importers and all(name.startswith("tracking/") for name in importers), importers
    # the three writers do not talk to MlflowClient themselves: they use the tracker
    for writer in ("study.py", "train_runs.py"):
        assert "mlflow" not in _imports(ROOT / "tracking" / writer), writer


def test_the_tracking_package_sits_below_search_ablation_and_the_command_line():
    files = _files("tracking")
    assert len(files) >= 8
    for p in files:
        assert not _imports(p) & {"optuna", "typer"}, p
        higher = {m for m in _package_imports(p)
                  if m.startswith(("dhns_search.search", "dhns_search.ablation", "dhns_search.cli"))}
        assert higher == set(), (p, higher)


def test_optuna_is_imported_only_in_the_search_package_and_the_live_table():
    """The rule the search package's docstring states: the live table of ``run`` is an Optuna callback."""
    importers = sorted(str(p.relative_to(ROOT)) for p in _files() if "optuna" in _imports(p))
    outside = [name for name in importers if not name.startswith("search/")]
    assert importers and outside == ["cli/live.py"], outside
    light = [ROOT / "search" / f"{name}.py" for name in ("options", "urls", "seeds", "objectives")]
    for p in [*light, *_files("search/space")]:
        assert not _imports(p) & {"optuna", "torch", "mlflow"}, p


def test_the_search_docstring_lists_every_module_of_the_package_and_no_other():
    folder = ROOT / "search"
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))) or ""
    modules = {p.relative_to(folder).with_suffix("").as_posix() for p in _files("search")}
    modules = {m.removesuffix("/__init__") + "/" if m.endswith("/__init__") else m for m in modules}
    modules.discard("__init__")
    missing = sorted(m for m in modules if f"``{m}``" not in doc)
    assert missing == [], f"modules of dhns_search/search missing from its docstring: {missing}"
    # every name the docstring lists as a module (a line starting with ``name``) is one
    listed = re.findall(r"^``([a-z_/]+)``\s", doc, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)) and sorted(set(listed) - modules) == [], listed
