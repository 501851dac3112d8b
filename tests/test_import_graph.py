"""The import graph keeps the layering docs/DESIGN.md describes: fine-tuning never imports the
trainer, no module reaches back through the package root, model code is pure maths, and
DeepSpeed stays inside specaware/training/. Every import counts, including the lazy ones
inside functions."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "specaware"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import statement, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _is_submodule(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _edges(folders, banned) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line} imports {mod}"
            for p in _sources(*folders) for line, mod, _ in _imports(p)
            if any(mod == b or mod.startswith(b + ".") for b in banned)]


def test_finetune_never_imports_training():
    assert _edges(["specaware/finetune"], ["specaware.training"]) == []


def test_no_module_imports_the_package_root():
    bad = []
    for path in _sources("specaware"):
        if path == PACKAGE / "__init__.py":
            continue
        for line, mod, names in _imports(path):
            root_names = [n for n in names if not _is_submodule(n)]
            if mod == "specaware" and (not names or root_names):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports specaware "
                           f"{root_names or ''}".strip())
    assert bad == []


@pytest.mark.parametrize("folders,banned", [
    (["specaware/model"], ["torch.distributed", "deepspeed", "specaware.data",
                           "specaware.training"]),
    (["moe"], ["deepspeed", "specaware"]),
    (["specaware/data", "specaware/finetune", "specaware/optim", "specaware/cli",
      "specaware/sensors", "specaware/synth"], ["deepspeed"]),
])
def test_layers_do_not_import_what_they_must_not(folders, banned):
    assert _edges(folders, banned) == []


def test_the_graph_checker_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from specaware.training import checkpoint\n")
    assert [m for _, m, _ in _imports(probe)] == ["specaware.training"]
