"""The project's promises about itself: CI runs the README's test command; xpe.py stands alone."""
import ast
import sys

from conftest import ROOT


def test_ci_runs_exactly_the_readme_test_command_and_the_slow_tier():
    """.ci/run runs the README's command (the fast tier) and the slow tier with the extras, then the README's command
    in a venv of requirements.txt alone; the README says how to run the slow tier."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    passes = [line.split("#")[0].strip() for line in lines if " -m pytest" in line and not line.startswith("#")]
    assert len(passes) == 3 and passes[0] == 'python -m pytest -q -m "not slow" tests', passes
    readme = (ROOT / "README.md").read_text()
    assert f"pip install -r requirements.txt && {passes[0]}\n" in readme
    assert passes[1] == "python -m pytest -q -m slow tests" and f"`{passes[1]}`" in readme, passes
    assert passes[2].endswith("/venv/bin/python\" " + passes[0].removeprefix("python ")), passes


def test_xpe_imports_only_torch_and_transformers():
    tree = ast.parse((ROOT / "xpe.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers", "safetensors"}  # with transformers


def test_replication_readmes_say_what_the_committed_outputs_say():
    """Both READMEs' result blocks are what docs/replication/claims.py fills in from the outputs, and decisions.md
    is what evaluate.py --claims makes of claims.csv over the committed scores."""
    import importlib.util
    import evaluate
    spec = importlib.util.spec_from_file_location("claims", ROOT / "docs" / "replication" / "claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    here = ROOT / "docs" / "replication"
    rows = evaluate.read_scores(sorted(here.glob("part*/per_language.csv")) + sorted(
        here.glob("seed*/scores/per_language.csv"), key=lambda p: int(p.parts[-3][4:])))
    wanted = evaluate.read_claims(here / "claims.csv")
    groups, codes = evaluate.data.groups_and_codes(None, None)
    group_langs = {c["group"]: evaluate.data.resolve_languages(c["group"], groups, codes) for c in wanted}
    made = evaluate.claims_markdown(evaluate.claim_rows(rows, wanted, group_langs))
    assert (here / "decisions.md").read_text(encoding="utf-8") == made
    for readme in (ROOT / "README.md", here / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert "<!-- begin decisions.md -->" in text and "<!-- begin table1.md -->" in text
        assert claims.filled(text) == text, f"{readme}: run bash docs/replication/tables.sh"


def test_the_replication_tables_remake_byte_for_byte(tmp_path):
    """docs/replication/tables.sh's evaluate.py call, into a fresh --out: every table, CSV and decision it committed
    comes out byte for byte (the figure's numbers too where matplotlib is installed; outputs.json and the log hold a
    date and this machine's timings)."""
    import re

    import evaluate

    here = ROOT / "docs" / "replication"
    script = (here / "tables.sh").read_text()
    flags = ["--baseline", "--compare", "xpe,spt", "--compare", "dual:0.7,spt", "--margin", "1,1.3,2.03,3.1",
             "--plot-sort", "dual:0.7"]
    for flag in ("--baseline --compare xpe,spt --compare dual:0.7,spt --margin 1,1.3,2.03,3.1 --claims $D/claims.csv",
                 "--plot $D/figure2.png --plot-sort dual:0.7 --out $D"):
        assert flag in script, f"tables.sh changed: {flag}"
    natural = lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]  # noqa: E731 (ls -v)
    scores = [here / f"part{i}" / "per_language.csv" for i in (1, 2, 3)] + sorted(
        [*here.glob("seed*/scores/per_language.csv"), *here.glob("dual0.3-s*/scores/per_language.csv")], key=natural)
    out = tmp_path / "out"
    argv = ["--scores", *map(str, scores), *flags, "--claims", str(here / "claims.csv"), "--out", str(out)]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(out / "figure2.png")]
    except ImportError:
        pass
    assert evaluate.main(argv) == 0
    made = sorted(p.name for p in out.iterdir() if p.name != evaluate.MANIFEST)
    assert {"table1.md", "table2.csv", "compare.csv", "margins.csv", "decisions.md", "per_language.csv"} <= set(made)
    for name in made:
        assert (out / name).read_bytes() == (here / name).read_bytes(), name
