# The paper's three claims as a markdown table from compare.csv alone, so the READMEs' verdicts are compare.csv's (issue 20).
"""usage: python docs/replication/claims.py [docs/replication/compare.csv] > docs/replication/claims.md"""
import csv
import sys
from pathlib import Path

# (A, B, group, the paper's A vs B on XLM-R large (SPEC §6; † secondhand), the first author's 10-seed re-run (xpe-exp))
CLAIMS = [
    ("xpe", "spt", "lowperf", "39.1† vs 36.0 (+3.1)", "37.9 vs 35.8: +2.03 ± 1.34 (95 %)"),
    ("dual:0.7", "spt", "seen-wo-j5", "86.6 vs 85.6 (+1.0)", "not reproduced"),
    ("dual:0.7", "spt", "all-wo-j5", "70.0 vs 68.7 (+1.3)", "not reproduced"),
]
NAMES = {"xpe": "XPE", "spt": "SPT", "dual:0.7": "DUAL-XPE70"}


def points(fraction):
    return f"{100 * float(fraction):+.2f}"


def main(path):
    rows = {(r["a"], r["b"], r["group"]): r for r in csv.DictReader(open(path, newline="", encoding="utf-8"))}
    print("| claim | the paper (XLM-R large) | first author's re-run (XLM-R large, 10 seeds) | here: mean A − B (pp) "
          "| 95 % t-interval over seeds (pp) | per-seed differences (pp) | languages won / tied / lost | seeds "
          "| verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for a, b, group, paper, rerun in CLAIMS:
        r = rows.get((a, b, group))
        if r is None:
            sys.exit(f"{path} has no {a} - {b} on {group}: run evaluate.py with --compare {a},{b}")
        interval = f"[{points(r['ci_low'])}, {points(r['ci_high'])}]" if r["ci_low"] else "-"
        diffs = ", ".join(points(d) for d in r["seed_diffs"].split())
        print(f"| {NAMES[a]} > {NAMES[b]} on {group} | {paper} | {rerun} | {points(r['mean_diff'])} | {interval} "
              f"| {diffs} | {r['wins']} / {r['ties']} / {r['losses']} of {r['languages']} | {r['n_seeds']} "
              f"({r['seeds']}) | **{r['verdict']}** |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("compare.csv"))
