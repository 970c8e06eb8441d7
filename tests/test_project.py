"""The project's promises about itself: CI runs the README's test command; xpe.py stands alone."""
import ast

from conftest import ROOT


def test_ci_runs_exactly_the_readme_test_command():
    """Both passes of .ci/run (with the extras, then in a venv of requirements.txt alone) run the README's command."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    passes = [line for line in lines if " -m pytest" in line and not line.startswith("#")]
    assert len(passes) == 2 and passes[0].startswith("python -m pytest"), passes
    assert f"pip install -r requirements.txt && {passes[0]}\n" in (ROOT / "README.md").read_text()
    assert passes[1].endswith("/venv/bin/python\" " + passes[0].removeprefix("python ")), passes


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
