"""The project's promises about itself: CI runs the README's test command; xpe.py stands alone."""
import ast

from conftest import ROOT


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    command = ci_lines[-1] if ci_lines[-1] else ci_lines[-2]
    assert command.startswith("python -m pytest")
    readme = (ROOT / "README.md").read_text()
    assert f"pip install -r requirements.txt && {command}\n" in readme


def test_xpe_imports_only_torch_and_transformers():
    tree = ast.parse((ROOT / "xpe.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    stdlib = {"contextlib", "copy", "json", "math", "os", "tempfile", "warnings", "dataclasses", "pathlib"}
    assert imported - stdlib == {"torch", "transformers", "safetensors"}  # safetensors comes with transformers
