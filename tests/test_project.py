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


def test_replication_readmes_say_what_the_committed_outputs_say():
    """Both READMEs' result blocks and claims.md are what docs/replication/claims.py makes from the outputs."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("claims", ROOT / "docs" / "replication" / "claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    here = ROOT / "docs" / "replication"
    assert (here / "claims.md").read_text(encoding="utf-8").strip() == claims.claims_table(here / "compare.csv")
    for readme in (ROOT / "README.md", here / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert "<!-- begin claims.md -->" in text and "<!-- begin table1.md -->" in text
        assert claims.filled(text) == text, f"{readme}: run bash docs/replication/tables.sh"
    verdicts = [line.rsplit("| **", 1)[1].split("**")[0] for line in claims.claims_table(here / "compare.csv").splitlines()[2:]]
    assert len(verdicts) == 3 and set(verdicts) <= {"holds", "fails", "undecided", "too few seeds"}
