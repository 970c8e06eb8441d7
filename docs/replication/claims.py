# The claims table from compare.csv, and the READMEs' result blocks filled from the outputs: the READMEs say what the outputs say (issue 20).
"""usage: python docs/replication/claims.py [docs/replication/compare.csv] > docs/replication/claims.md
       python docs/replication/claims.py --fill README.md docs/replication/README.md

--fill replaces each block between <!-- begin NAME --> and <!-- end NAME --> with docs/replication/NAME
(claims.md, table1.md, table2.md), with evaluate.log's paired differences for NAME = paired, or with
each seedN folder's wall times and peak memory (its /usr/bin/time -v logs) and CPU for NAME = seeds.
"""
import csv
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
BLOCK = re.compile(r"(<!-- begin (\S+) -->).*?(<!-- end \2 -->)", re.S)
# (A, B, group, the paper's A vs B on XLM-R large (SPEC §6; † secondhand), the first author's 10-seed re-run (xpe-exp))
CLAIMS = [
    ("xpe", "spt", "lowperf", "39.1† vs 36.0 (+3.1)", "37.9 vs 35.8: +2.03 ± 1.34 (95 %)"),
    ("dual:0.7", "spt", "seen-wo-j5", "86.6 vs 85.6 (+1.0)", "not reproduced"),
    ("dual:0.7", "spt", "all-wo-j5", "70.0 vs 68.7 (+1.3)", "not reproduced"),
]
NAMES = {"xpe": "XPE", "spt": "SPT", "dual:0.7": "DUAL-XPE70"}


def points(fraction):
    return f"{100 * float(fraction):+.2f}"


def usage_error(text):
    print(f"claims.py: {text}", file=sys.stderr)
    sys.exit(2)


def claims_table(path):
    if not Path(path).is_file():
        usage_error(f"{path} is not a file: give the compare.csv that evaluate.py --compare wrote")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"a", "b", "group", "mean_diff", "seed_diffs", "verdict"} <= set(reader.fieldnames or ()):
            usage_error(f"{path} is not a compare.csv (no a, b, group, verdict columns): give the one evaluate.py wrote")
        rows = {(r["a"], r["b"], r["group"]): r for r in reader}
    lines = ["| claim | the paper (XLM-R large) | first author's re-run (XLM-R large, 10 seeds) | here: mean A − B (pp) "
             "| 95 % t-interval over seeds (pp) | per-seed differences (pp) | languages won / tied / lost | seeds "
             "| verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a, b, group, paper, rerun in CLAIMS:
        r = rows.get((a, b, group))
        if r is None:
            usage_error(f"{path} has no {a} - {b} on {group}: run evaluate.py with --compare {a},{b}")
        interval = f"[{points(r['ci_low'])}, {points(r['ci_high'])}]" if r["ci_low"] else "-"
        diffs = ", ".join(points(d) for d in r["seed_diffs"].split())
        lines.append(f"| {NAMES[a]} > {NAMES[b]} on {group} | {paper} | {rerun} | {points(r['mean_diff'])} "
                     f"| {interval} | {diffs} | {r['wins']} / {r['ties']} / {r['losses']} of {r['languages']} "
                     f"| {r['n_seeds']} ({r['seeds']}) | **{r['verdict']}** |")
    return "\n".join(lines)


def log_field(path, field):
    """A field of a /usr/bin/time -v log or of lscpu's output; "-" where the file or the field is not there (yet)."""
    lines = path.read_text().splitlines() if path.exists() else []
    line = next((line for line in lines if field in line), None)
    if line is None:
        return "-"
    return line.split(":", 1)[1].strip() if field == "Model name" else line.rsplit(": ", 1)[1].strip()


def cpu(path):
    """lscpu's model name with its family and model: two "AMD EPYC" machines here differed 1.7x in speed."""
    name, family, model = (log_field(path, field) for field in ("Model name", "CPU family", "Model:"))
    return name if family == "-" else f"{name} (family {family}, model {model})"


def seeds_table():
    lines = ["| seed | trained (wall) | peak memory | training CPU (lscpu.txt) | scored on all-wo-j5 (wall) "
             "| scoring CPU (lscpu-score.txt) |", "| --- | --- | --- | --- | --- | --- |"]
    for folder in sorted(HERE.glob("seed[0-9]*"), key=lambda p: int(p.name[4:])):
        train, score = folder / "train-time.log", folder / "evaluate-time.log"
        if log_field(train, "Elapsed") == "-":
            continue  # still training
        peak = f"{int(log_field(train, 'Maximum resident')) / 2 ** 20:.1f} GiB"
        scored = log_field(score, "Elapsed")
        scorer = folder / ("lscpu-score.txt" if (folder / "lscpu-score.txt").exists() else "lscpu.txt")
        scorer = "-" if scored == "-" else cpu(scorer)  # seed 3 predates lscpu-score.txt
        lines.append(f"| {folder.name[4:]} | {log_field(train, 'Elapsed')} | {peak} "
                     f"| {cpu(folder / 'lscpu.txt')} | {scored} | {scorer} |")
    return "\n".join(lines)


def block(name):
    if name == "seeds":
        return seeds_table()
    if name == "paired":
        log = (HERE / "evaluate.log").read_text(encoding="utf-8").splitlines()
        first = next(i for i, line in enumerate(log) if line.startswith("Paired difference"))
        last = next(i for i, line in enumerate(log) if line.startswith("figure written"))
        return "```\n" + "\n".join(log[first:last]).strip() + "\n```"
    return (HERE / name).read_text(encoding="utf-8").strip()


def filled(text):
    return BLOCK.sub(lambda m: f"{m.group(1)}\n{block(m.group(2))}\n{m.group(3)}", text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fill"]:
        for path in sys.argv[2:]:
            Path(path).write_text(filled(Path(path).read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(claims_table(sys.argv[1] if len(sys.argv) > 1 else HERE / "compare.csv"))
