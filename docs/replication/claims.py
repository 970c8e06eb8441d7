# The READMEs' result blocks filled from the outputs, so that the READMEs say what the outputs say (issue 20).
"""usage: python docs/replication/claims.py --fill README.md docs/replication/README.md

--fill replaces each block between <!-- begin NAME --> and <!-- end NAME --> with docs/replication/NAME
(decisions.md, which evaluate.py --claims writes from claims.csv; table1.md, table2.md), with evaluate.log's paired differences for NAME = paired, or with
each seedN folder's wall times and peak memory (its /usr/bin/time -v logs) and CPU for NAME = seeds.
"""
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
BLOCK = re.compile(r"(<!-- begin (\S+) -->).*?(<!-- end \2 -->)", re.S)


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
        last = next(i for i, line in enumerate(log) if line.startswith(("Claims:", "figure written")))
        return "```\n" + "\n".join(log[first:last]).strip() + "\n```"
    return (HERE / name).read_text(encoding="utf-8").strip()


def filled(text):
    return BLOCK.sub(lambda m: f"{m.group(1)}\n{block(m.group(2))}\n{m.group(3)}", text)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--fill"] or len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[0])
    for path in sys.argv[2:]:
        Path(path).write_text(filled(Path(path).read_text(encoding="utf-8")), encoding="utf-8")
