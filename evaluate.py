"""Accuracy per language from run artifacts; the paper's tables and figure; paired differences; predictions.

    python evaluate.py --runs runs/ --baseline                 # Tables 1 and 2 over the paper's target groups
    python evaluate.py --runs runs/ --compare xpe,spt --plot results/figure2.png
    python evaluate.py --scores results/per_language.csv --baseline    # the tables again, without scoring
    python evaluate.py --runs runs/xpe-joshi5-s1 --predict texts.txt > predictions.csv
    python evaluate.py --runs runs/xpe-joshi5-s1 --export-peft peft/xpe-joshi5-s1

Only the inference artifact of each run is used (static prompt + head on the backbone): no prompt
encoder. The backbone loads once; the test rows are tokenised once and run longest first in large
batches, every run that shares a max length and its target languages in the same backbone pass (each
run's prompt in front of its own copy of the batch). A source run is scored zero-shot on the target
languages it was not trained on; a target run (train.py --target) on its own language. Per group:
the plain mean over its languages for each run, then mean and standard deviation over the seeds of
one setting (method, fraction, source, backbone, mode).
"""
import argparse
import csv
import io
import json
import statistics
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

import data
import xpe

TABLE2_GROUPS = "lowperf,unseen,seen-wo-j5,all-wo-j5"
SUPERVISED_GROUPS = {"supervised-seen": "supervised-seen", "supervised-unseen": "supervised-unseen",
                     "supervised": "supervised-seen,supervised-unseen"}  # Table 3's rows
BASELINES_PATH = Path(__file__).with_name("baselines.csv")
BASELINE_COLUMNS = {  # columns of baselines.csv shown beside ours (SIB-200's Table 7, XLM-R large but the GPTs)
    "xlmr_large": "XLM-R full FT", "xlt_eng": "XLT eng", "xlt_ara": "XLT ara", "xlt_zho": "XLT zho",
    "gpt35": "GPT-3.5", "gpt4": "GPT-4"}
PAPER_BACKBONE = "xlm-roberta-large"
PAPER = {  # SPEC §6: the paper's accuracy (%) per (method, source, target group); True: secondhand (xpe-exp)
    ("spt", "joshi5", "lowperf"): (36.0, False), ("spt", "joshi5", "unseen"): (56.0, False),
    ("spt", "joshi5", "seen-wo-j5"): (85.6, False), ("spt", "joshi5", "all-wo-j5"): (68.7, False),
    ("dual:0.7", "joshi5", "lowperf"): (37.3, False), ("dual:0.7", "joshi5", "unseen"): (57.6, False),
    ("dual:0.7", "joshi5", "seen-wo-j5"): (86.6, False), ("dual:0.7", "joshi5", "all-wo-j5"): (70.0, False),
    ("dual:0.3", "joshi5", "lowperf"): (36.8, True), ("xpe", "joshi5", "lowperf"): (39.1, True),
    ("xpe", "joshi5", "unseen"): (57.2, True), ("xpe", "joshi5", "seen-wo-j5"): (84.5, True),
    ("xpe", "joshi5", "all-wo-j5"): (69.0, True),
    ("xpe", "seen", "lowperf"): (41.9, False), ("xpe", "seen", "unseen"): (60.8, False),
    ("spt", "seen", "lowperf"): (39.1, True),
    ("spt", "enarzho", "lowperf"): (35.2, False), ("spt", "enarzho", "unseen"): (54.8, False),
    ("xpe", "enarzho", "lowperf"): (35.3, False), ("xpe", "enarzho", "unseen"): (53.7, False),
    ("xpe", "enarzho", "seen-wo-j5"): (82.6, False), ("xpe", "enarzho", "all-wo-j5"): (66.2, False),
    # Table 3: sequential full supervision from Joshi5, and SIB-200's in-language full fine-tuning
    ("dual:0.7", "joshi5", "supervised-unseen"): (65.1, False), ("dual:0.7", "joshi5", "supervised-seen"): (87.6, False),
    ("dual:0.7", "joshi5", "supervised"): (76.3, False), ("xlmr_large", "", "supervised-unseen"): (64.0, False),
    ("xlmr_large", "", "supervised-seen"): (88.3, False), ("xlmr_large", "", "supervised"): (76.1, False),
}
LANGUAGE_FIELDS = ["run", "mode", "method", "xpe_frac", "source", "seed", "backbone", "steps", "language", "n",
                   "accuracy"]
GROUP_FIELDS = ["method", "xpe_frac", "source", "backbone", "mode", "group", "languages", "seeds", "mean", "std"]
PREDICT_BATCH = 256


class UsageError(Exception):
    """Bad input from the user: one line, exit status 2."""


def note(text):
    """Progress and notes go to standard error: standard output carries tables, or --predict's CSV alone."""
    print(text, file=sys.stderr)


def method_name(method, xpe_frac):
    """A method as train.py --method writes it in a list: spt, xpe, dual:0.7."""
    return f"dual:{float(xpe_frac):g}" if method == "dual" else method


def parse_method(name):
    """(method, xpe_frac) of a method named as method_name writes it: spt, xpe, dual:0.7."""
    text = str(name).strip()
    if text in ("spt", "xpe"):
        return text, float(text == "xpe")
    kind, _, frac = text.partition(":")
    try:
        r = float(frac)
    except ValueError:
        r = None
    if kind != "dual" or r is None or not 0 < r < 1:
        raise UsageError(f"unknown method {name!r}: write spt, xpe or dual:R with 0 < R < 1, e.g. dual:0.7")
    return "dual", r


def method_order(name):
    method, frac = parse_method(name)
    return {"spt": 0, "dual": 1, "xpe": 2}[method], frac


# ---- runs -----------------------------------------------------------------------------------------

def find_runs(paths, runs_root=Path("runs")):
    """Run directories (with an artifact) named, or found anywhere under a named folder."""
    if not paths:
        candidates = sorted(runs_root.glob(f"*/{xpe.ARTIFACT_WEIGHTS}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UsageError(f"no runs under {runs_root}/ to evaluate: train one (python train.py) or pass --runs DIR")
        note(f"evaluating the newest run: {candidates[-1].parent}")
        return [candidates[-1].parent]
    runs = []
    for path in map(Path, paths):
        if (path / xpe.ARTIFACT_CONFIG).is_file() and (path / xpe.ARTIFACT_WEIGHTS).is_file():
            runs.append(path)
        elif path.is_dir() and not (path / xpe.ARTIFACT_CONFIG).is_file():
            found = sorted(p.parent for p in path.rglob(xpe.ARTIFACT_WEIGHTS))  # a grid may nest: runs/<source>/<run>
            if not found:
                raise UsageError(f"{path} is neither a run directory nor a folder of runs (no {xpe.ARTIFACT_WEIGHTS} "
                                 f"in it or below)")
            runs += found
        elif path.is_dir():
            raise UsageError(f"{path} holds no inference artifact ({xpe.ARTIFACT_WEIGHTS} is missing): "
                             f"the run has not reached its first evaluation")
        else:
            raise UsageError(f"{path} does not exist: pass run directories or a folder of runs to --runs")
    return list(dict.fromkeys(runs))


def read_run(run_dir):
    try:
        config = json.loads((run_dir / xpe.ARTIFACT_CONFIG).read_text())
    except ValueError as e:
        raise UsageError(f"{run_dir}/config.json is not JSON ({e}): not written by train.py") from None
    missing = [k for k in ("model", "labels", "method", "xpe_frac", "max_length", "source", "seed") if k not in config]
    if missing:
        raise UsageError(f"{run_dir}/config.json lacks {', '.join(missing)}: not written by train.py")
    target = config.get("target") or ""
    return dict(dir=run_dir, config=config, mode="supervised" if target else "zero-shot",
                trained=set(config.get("source_languages", [])) if not target else set(), only=target)


def targets_of(run, languages):
    """The languages a run is scored on: its own for a target run, else those it was not trained on."""
    if run["only"]:
        return [run["only"]]
    return [lang for lang in languages if lang not in run["trained"]]


def check_runs(runs, languages):
    """One backbone and one label set a call; two runs of one setting and seed on one language are refused."""
    for key, what in (("model", "backbones"), ("labels", "label sets")):
        found = list(dict.fromkeys(json.dumps(r["config"][key]) for r in runs))
        if len(found) > 1:
            raise UsageError(f"runs with different {what} ({', '.join(found[:3])}): evaluate them in separate calls")
    seen = {}
    for run in runs:
        cfg = run["config"]
        key = (cfg["method"], float(cfg["xpe_frac"]), cfg["source"], run["mode"], cfg["seed"])
        for lang in targets_of(run, languages):
            other = seen.setdefault((key, lang), run["dir"])
            if other != run["dir"]:
                raise UsageError(f"{other} and {run['dir']} are both {method_name(*key[:2])} from {key[2]} with seed "
                                 f"{key[4]} on {lang}: one would hide the other in the means over seeds; evaluate "
                                 f"them in separate calls, or train one with another --seed")


def score(runs, rows, backbone, tokenizer, batch_size, languages):
    """per_language rows: each run's accuracy on each of its target languages.

    Runs that share a max length and their target languages share every backbone pass.
    """
    labels = torch.tensor([r.label for r in rows])
    row_langs = [r.lang for r in rows]
    packs, encoded, per_language = defaultdict(list), {}, []
    for run in runs:
        packs[run["config"]["max_length"], tuple(targets_of(run, languages))].append(run)
    for (max_length, targets), pack in packs.items():
        if max_length not in encoded:  # tokenised once per max length
            encoded[max_length] = data.encode(rows, tokenizer, max_length)
        wanted = set(targets)
        index = [i for i, lang in enumerate(row_langs) if lang in wanted]
        models = [xpe.load_artifact(run["dir"], backbone)[0] for run in pack]
        title = pack[0]["dir"].name if len(pack) == 1 else f"{len(pack)} runs"
        logits = xpe.predict(models, [encoded[max_length][i] for i in index], tokenizer.pad_token_id, batch_size,
                             progress=lambda batches: tqdm(batches, desc=title, leave=False, dynamic_ncols=True))
        for run, run_logits in zip(pack, logits):
            correct = run_logits.argmax(-1) == labels[index]
            totals = defaultdict(lambda: [0, 0])
            for i, ok in zip(index, correct.tolist()):
                totals[row_langs[i]][0] += ok
                totals[row_langs[i]][1] += 1
            cfg = run["config"]
            for lang in targets:
                right, n = totals[lang]
                per_language.append(dict(
                    run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                    source=cfg["source"], seed=cfg["seed"], backbone=cfg["model"],
                    steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=round(right / n, 6)))
    return per_language


def read_scores(paths):
    """per_language rows from earlier per_language.csv files (evaluate.py --out), typed as score() makes them."""
    rows = []
    for path in map(Path, paths):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                found = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--scores {path}: cannot read it ({type(e).__name__}: {e})") from None
        if not found or set(LANGUAGE_FIELDS) - set(found[0]):
            raise UsageError(f"--scores {path} is not a per_language.csv written by evaluate.py (columns "
                             f"{', '.join(LANGUAGE_FIELDS)})")
        for line, r in enumerate(found, 2):
            try:
                rows.append({**r, "xpe_frac": float(r["xpe_frac"]), "seed": int(r["seed"]), "n": int(r["n"]),
                             "accuracy": float(r["accuracy"])})
            except ValueError:
                raise UsageError(f"--scores {path}, line {line}: xpe_frac, seed, n and accuracy must be numbers") from None
    return rows


# ---- group means and baselines ---------------------------------------------------------------------

def load_baselines(path=BASELINES_PATH):
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["code"]: {k: float(v) for k, v in r.items() if k != "code" and v} for r in rows}


def baseline_means(languages, table):
    """({column: mean accuracy in [0, 1] over the languages the table has}, how many it has)."""
    known = [lang for lang in languages if lang in table]
    means = {k: statistics.fmean(table[lang][k] for lang in known) / 100 for k in BASELINE_COLUMNS
             if known and all(k in table[lang] for lang in known)}
    return means, len(known)


def by_setting(per_language):
    """{setting: {seed: {language: accuracy}}}; two runs of one seed in a setting are a UsageError."""
    table, runs = defaultdict(lambda: defaultdict(dict)), {}
    for r in per_language:
        setting = (r["method"], float(r["xpe_frac"]), r["source"], r["backbone"], r["mode"])
        key = (setting, r["seed"], r["language"])
        if runs.setdefault(key, r["run"]) != r["run"]:
            raise UsageError(f"{runs[key]} and {r['run']} are both {method_name(*setting[:2])} from {setting[2]} with "
                             f"seed {r['seed']} on {r['language']}: one would hide the other in the means over seeds; "
                             f"evaluate them apart")
        table[setting][r["seed"]][r["language"]] = float(r["accuracy"])
    return table


def summarise(per_language, group_langs):
    """per_group rows: the mean over a run's languages of the group, then mean and std over a setting's seeds.

    Each row also keeps `covered`, the languages it averages, so that baselines average the same ones.
    """
    rows = []
    for (method, frac, source, backbone, mode), seeds in by_setting(per_language).items():
        for group, langs in group_langs.items():
            means, covered = [], set()
            for accuracies in seeds.values():
                mine = [lang for lang in langs if lang in accuracies]
                if mine:
                    means.append(statistics.fmean(accuracies[lang] for lang in mine))
                    covered.update(mine)
            if means:
                rows.append(dict(method=method, xpe_frac=frac, source=source, backbone=backbone, mode=mode,
                                 group=group, languages=len(covered), seeds=len(means),
                                 mean=round(statistics.fmean(means), 6),
                                 std=round(statistics.stdev(means), 6) if len(means) > 1 else "",
                                 covered=sorted(covered)))
    return rows


def add_baselines(group_rows, table):
    """SIB-200's published figures over exactly the languages of each row (Table 7 lacks nqo_Nkoo)."""
    for row in group_rows:
        means, known = baseline_means(row["covered"], table)
        row.update({k: round(means[k], 6) if k in means else "" for k in BASELINE_COLUMNS}, baseline_languages=known)


def paper_text(paper):
    return f" [{paper[0]:.1f}{'†' if paper[1] else ''}]" if paper else ""


def cell(row, paper=None):
    """'56.3 ± 1.2 (3) [56.0]': mean ± std over seeds (n seeds), then the paper's figure; one seed: '56.3 (n = 1)'."""
    text = f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f} ({row['seeds']})" if row["seeds"] > 1 else \
        f"{100 * row['mean']:.1f} (n = 1)"
    return text + paper_text(paper)


def provenance(per_language):
    """Which backbone, sources, seeds and steps a table or figure comes from, in one line."""
    seeds, steps = defaultdict(set), set()
    for r in per_language:
        seeds[r["source"], r["mode"]].add(r["seed"])
        if r["steps"] not in ("", None):
            steps.add(int(r["steps"]))
    backbones = sorted({r["backbone"] for r in per_language})
    sources = sorted({s for s, _ in seeds})
    if len({frozenset(v) for v in seeds.values()}) == 1:
        seed_text = f"seeds {seed_list(next(iter(seeds.values())))}"
    else:
        seed_text = "seeds " + "; ".join(f"{seed_list(v)} ({s}{', supervised' if m == 'supervised' else ''})"
                                         for (s, m), v in sorted(seeds.items()))
    return " · ".join([f"backbone {', '.join(backbones)}", f"source{'s' if len(sources) > 1 else ''} "
                       f"{', '.join(sources)}", seed_text, f"steps {', '.join(map(str, sorted(steps)))}" if steps
                       else "steps not recorded"])


def paper_note(per_language):
    backbones = {r["backbone"] for r in per_language}
    ours = "" if backbones and all(Path(b).name.lower() == PAPER_BACKBONE for b in backbones) else \
        "; this backbone is not XLM-R large, so they only show the pattern to look for"
    return f"[x]: the paper's figure, on XLM-R large{ours}; †: secondhand, quoted by the first author's xpe-exp"


def zero_shot_tables(group_rows, specs, with_baselines):
    """Tables 1 and 2: a row per target group and source, a column per method (Table 2: then the baselines).

    Returns (header, lines of cells, csv rows); the best of our cells in a row is marked with *.
    """
    rows = [r for r in group_rows if r["mode"] == "zero-shot"]
    methods = sorted({method_name(r["method"], r["xpe_frac"]) for r in rows}, key=method_order)
    sources = sorted({r["source"] for r in rows})
    header = ["target", "source", "languages"] + methods + (
        [BASELINE_COLUMNS[k] for k in BASELINE_COLUMNS] if with_baselines else [])
    lines, csv_rows = [], []
    for group in specs:
        for source in sources:
            mine = {method_name(r["method"], r["xpe_frac"]): r for r in rows
                    if r["group"] == group and r["source"] == source}
            if not mine:
                continue
            best = max(r["mean"] for r in mine.values())
            # how many languages the row averages: fewer than the group when only part of it was scored
            covered = sorted(set().union(*(r["covered"] for r in mine.values())))
            line = [group, source, len(covered)]
            for m in methods:
                r = mine.get(m)
                paper = PAPER.get((m, source, group))
                if r is None:
                    line.append("-")
                    continue
                mark = "*" if r["mean"] == best and len(mine) > 1 else ""
                line.append(mark + (f"{100 * r['mean']:.1f}{paper_text(paper)}" if with_baselines else cell(r, paper)))
                csv_rows.append(dict(target=group, source=source, column=m, kind="ours", mean=r["mean"], std=r["std"],
                                     seeds=r["seeds"], languages=r["languages"], best=int(r["mean"] == best),
                                     paper=paper[0] if paper else "", paper_secondhand=int(paper[1]) if paper else ""))
            if with_baselines:
                means, known = baseline_means(covered, load_baselines())
                for k, name in BASELINE_COLUMNS.items():
                    line.append(f"{100 * means[k]:.1f}" if k in means else "-")
                    if k in means:
                        csv_rows.append(dict(target=group, source=source, column=k, kind="baseline",
                                             mean=round(means[k], 6), std="", seeds="", languages=known, best="",
                                             paper="", paper_secondhand=""))
                if known < len(covered):
                    line[1] += f" ({known}/{len(covered)})"
            lines.append(line)
    return header, lines, csv_rows


def supervised_table(per_language, groups, codes):
    """Table 3: target runs (sequential full supervision) per target group beside in-language full fine-tuning."""
    rows = [r for r in per_language if r["mode"] == "supervised"]
    if not rows:
        return None
    specs = {name: data.resolve_languages(spec, groups, codes) for name, spec in SUPERVISED_GROUPS.items()
             if all(part in groups for part in spec.split(","))}
    if not specs:  # a groups file of one's own: one row over every target language
        specs = {"targets": sorted({r["language"] for r in rows})}
    group_rows = summarise(rows, specs)
    settings = sorted({(method_name(r["method"], r["xpe_frac"]), r["source"]) for r in group_rows},
                      key=lambda s: (method_order(s[0]), s[1]))
    header = ["target"] + [f"{m} from {s}" for m, s in settings] + [BASELINE_COLUMNS["xlmr_large"]]
    lines, csv_rows, table = [], [], load_baselines()
    for group in specs:
        mine = {(method_name(r["method"], r["xpe_frac"]), r["source"]): r for r in group_rows if r["group"] == group}
        if not mine:
            continue
        line = [group]
        for m, s in settings:
            r, paper = mine.get((m, s)), PAPER.get((m, s, group))
            line.append("-" if r is None else cell(r, paper))
            if r is not None:
                csv_rows.append(dict(target=group, column=f"{m} from {s}", kind="ours", mean=r["mean"], std=r["std"],
                                     seeds=r["seeds"], languages=r["languages"], paper=paper[0] if paper else ""))
        covered = sorted(set().union(*(r["covered"] for r in mine.values())))
        means, known = baseline_means(covered, table)
        paper = PAPER.get(("xlmr_large", "", group))
        line.append(f"{100 * means['xlmr_large']:.1f}{paper_text(paper)}" +
                    (f" ({known}/{len(covered)})" if known < len(covered) else "") if "xlmr_large" in means else "-")
        if "xlmr_large" in means:
            csv_rows.append(dict(target=group, column="xlmr_large", kind="baseline", mean=round(means["xlmr_large"], 6),
                                 std="", seeds="", languages=known, paper=paper[0] if paper else ""))
        lines.append(line)
    return header, lines, csv_rows


def render(header, lines):
    """An aligned plain-text table."""
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)


def markdown(header, lines):
    bold = [[f"**{c[1:]}**" if isinstance(c, str) and c.startswith("*") else c for c in line] for line in lines]
    rows = [header, ["---"] * len(header)] + bold
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)


def write_table(out, name, title, table, per_language, notes):
    """Print a table under its title and provenance; write it as NAME.md and NAME.csv."""
    header, lines, csv_rows = table
    caption = f"{title}. {provenance(per_language)}"
    notes = [line for line, needed in notes if needed(lines)]
    print(f"\n{caption}\n{render(header, lines)}")
    for line in notes:
        print(line)
    text = f"{caption}\n\n{markdown(header, lines)}\n\n" + "".join(f"{line}  \n" for line in notes)
    xpe.atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    fields = list(dict.fromkeys(k for r in csv_rows for k in r))
    extra = dict(backbone=", ".join(sorted({r["backbone"] for r in per_language})),
                 seed_list=seed_list({r["seed"] for r in per_language}),
                 steps=", ".join(sorted({str(r["steps"]) for r in per_language})))
    write_csv(out / f"{name}.csv", fields + list(extra), [{**r, **extra} for r in csv_rows])


def write_csv(path, fields, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue(), encoding="utf-8"))


# ---- paired differences ------------------------------------------------------------------------

COMPARE_FIELDS = ["source", "backbone", "group", "a", "b", "seeds", "languages", "mean_diff", "ci_low", "ci_high",
                  "wins", "ties", "losses"]
TIE = 1e-9  # a per-language difference smaller than this is a tie


def paired_bootstrap(diff, mask, resamples, seed, chunk=10000):
    """95 % percentile interval of the mean of diff over mask (seeds x languages, float64 tensors).

    Each resample draws the seeds (rows) with replacement and, independently, the languages (columns)
    with replacement; its mean is over the cells both draws picked, counted as often as drawn.
    """
    generator = torch.Generator().manual_seed(seed)
    n_seeds, n_langs = diff.shape
    weighted, means = diff * mask, []

    def counts(k, n):  # how often each of n items is drawn in each of k resamples of size n
        draws = torch.randint(n, (k, n), generator=generator)
        return torch.zeros(k, n, dtype=torch.float64).scatter_add_(1, draws, torch.ones(k, n, dtype=torch.float64))

    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        seed_counts, lang_counts = counts(k, n_seeds), counts(k, n_langs)
        total = ((seed_counts @ weighted) * lang_counts).sum(1)
        cells = ((seed_counts @ mask) * lang_counts).sum(1)
        means.append(total / cells)  # nan where a resample drew no cell that both runs have
    low, high = torch.nanquantile(torch.cat(means), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


def compare(per_language, a, b, group_langs, resamples=10000, seed=0):
    """Paired zero-shot differences A - B per source, backbone and target group: COMPARE_FIELDS rows.

    a, b: methods as method_name writes them (xpe, spt, dual:0.7). Runs of A and B are paired by seed
    (the same seed has the same data order); mean_diff is the mean of A - B over the (seed, language)
    pairs both have, ci_low/ci_high a 95 % paired bootstrap interval (paired_bootstrap, resamples
    draws from a generator seeded with seed, the same for every row), and wins/ties/losses count
    the languages by the mean over seeds of A - B (a tie is closer than TIE to 0).
    """
    names = [method_name(*parse_method(m)) for m in (a, b)]
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise UsageError(f"the bootstrap needs at least 1 resample, got {resamples!r}")
    found = defaultdict(dict)  # method name -> (source, backbone) -> {seed: {language: accuracy}}
    zero_shot = by_setting(r for r in per_language if r["mode"] == "zero-shot")
    for (method, frac, source, backbone, _), by_seed in zero_shot.items():
        found[method_name(method, frac)][source, backbone] = by_seed
    for name in names:
        if name not in found:
            raise UsageError(f"no zero-shot runs of {name} to compare; there are runs of: "
                             f"{', '.join(sorted(found)) or 'none'}")

    def sources(name):
        return ", ".join(sorted({s for s, _ in found[name]}))

    shared = sorted(set(found[names[0]]) & set(found[names[1]]))
    if not shared:
        raise UsageError(f"{names[0]} and {names[1]} have no source in common ({names[0]}: {sources(names[0])}; "
                         f"{names[1]}: {sources(names[1])}): train both on one source")
    rows = []
    for source, backbone in shared:
        runs_a, runs_b = found[names[0]][source, backbone], found[names[1]][source, backbone]
        common = sorted(set(runs_a) & set(runs_b))
        if not common:
            raise UsageError(f"{names[0]} and {names[1]} from {source} are unpaired: no seed in common "
                             f"({names[0]}: {', '.join(map(str, sorted(runs_a)))}; "
                             f"{names[1]}: {', '.join(map(str, sorted(runs_b)))}): train them with the same --seed")
        for group, langs in group_langs.items():
            both = {(s, lang) for s in common for lang in langs if lang in runs_a[s] and lang in runs_b[s]}
            seeds = [s for s in common if any((s, lang) in both for lang in langs)]
            targets = [lang for lang in dict.fromkeys(langs) if any((s, lang) in both for s in common)]
            row = dict(source=source, backbone=backbone, group=group, a=names[0], b=names[1], seeds=len(seeds),
                       languages=len(targets), mean_diff=None, ci_low=None, ci_high=None, wins=0, ties=0, losses=0)
            rows.append(row)
            if not both:  # e.g. a group of the source's own languages: nothing zero-shot to compare
                continue
            diff = torch.tensor([[runs_a[s][lang] - runs_b[s][lang] if (s, lang) in both else 0.0
                                  for lang in targets] for s in seeds], dtype=torch.float64)
            mask = torch.tensor([[float((s, lang) in both) for lang in targets] for s in seeds], dtype=torch.float64)
            per_lang = (diff.sum(0) / mask.sum(0)).tolist()
            low, high = paired_bootstrap(diff, mask, resamples, seed)
            row.update(mean_diff=round((diff.sum() / mask.sum()).item(), 6), ci_low=round(low, 6),
                       ci_high=round(high, 6), wins=sum(d >= TIE for d in per_lang),
                       ties=sum(abs(d) < TIE for d in per_lang), losses=sum(d <= -TIE for d in per_lang))
    return rows


def print_compare(rows):
    """compare's rows as an aligned table, differences in accuracy points (%)."""
    several = len({r["backbone"] for r in rows}) > 1
    header = ["source"] + (["backbone"] if several else []) + ["group", "A - B", "mean (pp)", "95 % CI (pp)",
                                                               "wins", "ties", "losses", "seeds", "languages"]
    lines = []
    for r in rows:
        known = r["mean_diff"] is not None
        lines.append([r["source"]] + ([r["backbone"]] if several else []) + [
            r["group"], f"{r['a']} - {r['b']}", f"{100 * r['mean_diff']:+.2f}" if known else "-",
            f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]" if known else "-",
            r["wins"], r["ties"], r["losses"], r["seeds"], r["languages"]])
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    for row in [header] + lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


# ---- Figure 2 ----------------------------------------------------------------------------------

PLOT_SIZE = (2400, 1400)  # pixels; the default of the figure
PLOT_DPI = 100
PLOT_FIELDS = ["panel", "position", "language", "series", "accuracy", "seeds"]
CHANCE = 1 / 7  # SIB-200 has 7 topics


def parse_size(text):
    """(width, height) in pixels from "2400x1400"."""
    width, _, height = str(text).lower().partition("x")
    if not (width.strip().isdigit() and height.strip().isdigit()):
        raise UsageError(f"a figure size is WIDTHxHEIGHT in pixels, e.g. {PLOT_SIZE[0]}x{PLOT_SIZE[1]}; got {text!r}")
    return int(width), int(height)


def plot_series(per_language, baselines=None):
    """The figure's series: one per setting (mean over its seeds per language), then one per baseline.

    Each is a dict: label, setting (None for a baseline), values {language: accuracy}, seeds {language: count}.
    """
    table = by_setting(per_language)
    backbones = sorted({s[3] for s in table})
    if len(backbones) > 1:
        raise UsageError(f"results from different backbones ({', '.join(backbones)}): plot them one at a time")
    series = []
    for setting in sorted(table, key=lambda s: (s[2], s[4] != "zero-shot", s[1], s[0])):
        method, frac, source, _, mode = setting
        values = defaultdict(list)
        for accuracies in table[setting].values():
            for lang, accuracy in accuracies.items():
                values[lang].append(accuracy)
        label = f"{method_name(method, frac)} ({source}{', supervised' if mode != 'zero-shot' else ''})"
        series.append(dict(label=label, setting=setting, values={k: statistics.fmean(v) for k, v in values.items()},
                           seeds={k: len(v) for k, v in values.items()}))
    for name, values in (baselines or {}).items():
        outside = [lang for lang, v in values.items() if not 0 <= v <= 1]
        if outside:
            raise ValueError(f"baseline {name!r} has accuracies outside [0, 1] ({outside[0]}: {values[outside[0]]}); "
                             f"divide percentages by 100")
        series.append(dict(label=name, setting=None, values=dict(values), seeds={}))
    return series


def sort_series(series, sort_by):
    """The series named by sort_by: METHOD or METHOD@SOURCE (dual:0.7@joshi5), or a baseline's name.

    None: the first setting. Where a setting was run both zero-shot and supervised, the zero-shot one.
    """
    settings = [s for s in series if s["setting"]]
    if sort_by is None:
        return settings[0]
    for s in series:
        if s["setting"] is None and s["label"] == sort_by:
            return s
    name, _, source = str(sort_by).partition("@")
    try:
        name = method_name(*parse_method(name))
    except UsageError:
        pass  # no setting has that name: the error below lists those there are
    chosen = [s for s in settings if method_name(*s["setting"][:2]) == name and source in ("", s["setting"][2])]
    sources = sorted({s["setting"][2] for s in chosen})
    if len(sources) > 1:
        raise UsageError(f"{name} was trained on several sources ({', '.join(sources)}): sort by "
                         f"{' or '.join(f'{name}@{s}' for s in sources)}")
    if not chosen:
        there = list(dict.fromkeys(f"{method_name(*s['setting'][:2])}@{s['setting'][2]}" for s in settings))
        named = [s["label"] for s in series if not s["setting"]]
        raise UsageError(f"nothing to sort by named {sort_by!r}: name one of {', '.join(there)}"
                         + (f" or a baseline ({', '.join(named)})" if named else ""))
    return min(chosen, key=lambda s: s["setting"][4] != "zero-shot")


def seed_list(seeds):
    """"1-3, 7" for seeds 1, 2, 3, 7: runs of consecutive integers shortened."""
    seeds = sorted(seeds)
    if not all(isinstance(s, int) for s in seeds):
        return ", ".join(map(str, seeds))
    spans = []
    for s in seeds:
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}{'-' if b > a + 1 else ', '}{b}" for a, b in spans)


def plot_languages(per_language, groups, path, size=PLOT_SIZE, sort_by=None, baselines=None):
    """The paper's Figure 2: accuracy per target language, one series per setting and baseline.

    Two panels, the languages seen by XLM-R in pretraining and the unseen (groups["seen"],
    groups["unseen"]; one panel of all languages where groups lacks them), each sorted by the
    series sort_by names (sort_series), highest first. size: (width, height) of the PNG in pixels.
    baselines: {name shown in the legend: {language: accuracy in [0, 1]}}; missing languages are gaps.
    Writes path (.png) and, beside it, the plotted numbers as path with .csv (PLOT_FIELDS; accuracy in
    [0, 1], seeds: how many a setting's mean is over), each whole or not at all; returns those rows.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"the figure is a PNG: give a path ending in .png, got {path}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"a figure size is (width, height) in pixels, got {size!r}") from None
    if width < 400 or height < 300:
        raise UsageError(f"a figure of {width}x{height} pixels is too small to read: give at least 400x300 "
                         f"(default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})")
    try:
        import matplotlib  # noqa: F401 (first, so that a missing matplotlib is never hidden by a cached submodule)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        raise UsageError("the figure needs matplotlib: pip install matplotlib "
                         "(or pip install -r requirements-plot.txt)") from None
    series = plot_series(per_language, baselines)
    if not any(s["setting"] for s in series):
        raise UsageError("no per-language results to plot: evaluate some runs first")
    key = sort_series(series, sort_by)
    languages = set().union(*(s["values"] for s in series if s["setting"]))
    if groups.get("seen") and groups.get("unseen"):
        seen, unseen = set(groups["seen"]), set(groups["unseen"])
        panels = [("seen", "languages seen by XLM-R in pretraining", languages & seen),
                  ("unseen", "languages unseen by XLM-R", languages & unseen),
                  ("other", "languages in neither group", languages - seen - unseen)]
    else:
        panels = [("all", "all languages", languages)]
    panels = [(name, title, sorted(langs, key=lambda lang: (-key["values"].get(lang, -1.0), lang)))
              for name, title, langs in panels if langs]

    fig = Figure(figsize=((width + 0.5) / PLOT_DPI, (height + 0.5) / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    spacing = 0.93 * width / max(len(langs) for _, _, langs in panels)  # pixels between two x labels
    label_pt = max(4.0, min(9.0, 0.8 * spacing * 72 / PLOT_DPI / 1.2))
    longest = max(len(lang) for _, _, langs in panels for lang in langs) * 0.62 * label_pt * PLOT_DPI / 72
    rotation = 0 if longest < 0.85 * spacing else 90  # upright codes where they fit side by side
    colours = iter(["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
                    "#bcbd22", "#7f7f7f"] * 10)
    styles = []
    for s in series:
        if s["setting"]:
            styles.append(dict(color=next(colours), marker="o", markersize=3.5, linewidth=2.2 if s is key else 1.1,
                               zorder=3 if s is key else 2))
        else:
            k = sum(1 for st in styles if st.get("zorder") == 1)
            styles.append(dict(color=["black", "#666666"][k % 2], marker="x+"[k % 2], markersize=4.5, linewidth=0.9,
                               linestyle=["--", "-."][k % 2], zorder=1))
    for ax, (_, title, langs) in zip(axes, panels):
        x = list(range(len(langs)))
        for s, style in zip(series, styles):
            ax.plot(x, [100 * s["values"][lang] if lang in s["values"] else float("nan") for lang in langs],
                    label=s["label"], **style)
        ax.axhline(100 * CHANCE, color="grey", linewidth=0.8, linestyle=":", label="chance (1 in 7 topics)")
        ax.set_xticks(x, langs, rotation=rotation, fontsize=label_pt)
        ax.set_xlim(-0.7, len(langs) - 0.3)
        ax.set_ylim(0, 100)
        ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
        ax.set_ylabel("accuracy")
        ax.grid(axis="y", alpha=0.35)
        ax.grid(axis="x", alpha=0.12)
        ax.set_title(f"{title} ({len(langs)}), sorted by {key['label']}", fontsize=11, loc="left")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("SIB-200 test accuracy per target language\n" + textwrap.fill(
        f"{provenance(per_language)} · each point: the mean over a setting's seeds", max(40, int(width / 9))),
        fontsize=11)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), fontsize=10, frameon=False)

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=PLOT_DPI)
    rows = [dict(panel=name, position=i + 1, language=lang, series=s["label"],
                 accuracy=round(s["values"][lang], 6) if lang in s["values"] else "",
                 seeds=s["seeds"].get(lang, "") if s["setting"] else "")
            for name, _, langs in panels for i, lang in enumerate(langs) for s in series]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path.with_suffix(".csv"), PLOT_FIELDS, rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_bytes(png.getvalue()))
    return rows


# ---- classify new text ------------------------------------------------------------------------------

def read_texts(source):
    """One text a line from a file, or from standard input for '-'; blank lines are refused by number."""
    name = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--predict {name}: cannot read it ({type(e).__name__}: {e}); give a UTF-8 file with one "
                         f"text a line, or - for standard input") from None
    texts = text.splitlines()
    if not texts:
        raise UsageError(f"--predict {name} is empty: give one text a line")
    blank = next((i for i, t in enumerate(texts, 1) if not t.strip()), None)
    if blank:
        raise UsageError(f"--predict {name}, line {blank} is blank: give one text a line, with no blank lines")
    return texts


def predict_texts(args, device):
    """--predict: CSV of text, label and one probability column per label (the run's order) on standard output."""
    runs = find_runs(args.runs)
    if len(runs) != 1:
        raise UsageError(f"--predict classifies with one run, got {len(runs)}: name one run folder in --runs")
    texts = read_texts(args.predict)
    backbone, tokenizer = xpe.load_backbone(read_run(runs[0])["config"]["model"], device)
    model, config = xpe.load_artifact(runs[0], backbone)
    labels = config["labels"]
    probabilities = xpe.classify(model, tokenizer, texts, config["max_length"], args.batch_size)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"] + labels)
    for text, p in zip(texts, probabilities.tolist()):
        writer.writerow([text, labels[max(range(len(p)), key=p.__getitem__)]] + [round(x, 6) for x in p])
    sys.stdout.write(buf.getvalue())
    note(f"{len(texts)} texts classified with {runs[0]}")
    return 0


# ---- --export-peft: the artifact as a PEFT prompt-tuning adapter ----------------------------------

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
# By model_type: where our head lives in the backbone's *ForSequenceClassification, and the modules besides
# its classifier that peft must keep. XLM-R's classifier is our head; BERT's is tanh(pooler.dense(h[:, 0]))
# then one Linear, so our dense becomes the pooler's.
PEFT_HEADS = {"xlm-roberta": ({"dense": "classifier.dense", "out_proj": "classifier.out_proj"}, []),
              "bert": ({"dense": "bert.pooler.dense", "out_proj": "classifier"}, ["pooler"])}


def export_peft(run_dir, out_dir):
    """Write run_dir's artifact into out_dir as a PEFT adapter, PROMPT_TUNING for SEQ_CLS; (adapter config, N).

    Without importing peft: the two files are laid out as peft 0.14 and later save them, so that
    PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=N), out_dir)
    gives our logits. A ValueError in one line, before anything is written, for what the user can fix.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    tensors, config = xpe.read_artifact(run_dir)
    for key in ("model", "labels"):
        if key not in config:
            raise ValueError(f"{run_dir}/{xpe.ARTIFACT_CONFIG} lacks {key!r}: not written by train.py")
    try:
        backbone = AutoConfig.from_pretrained(config["model"])
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read the backbone's config {config['model']!r} ({first})") from None
    if backbone.model_type not in PEFT_HEADS:
        raise ValueError(f"--export-peft supports the backbones {' and '.join(sorted(PEFT_HEADS))} (model_type), "
                         f"not {backbone.model_type!r} of {config['model']}")
    prompt, num_labels = tensors["prompt"], len(config["labels"])
    head_labels = tensors["head.out_proj.weight"].shape[0]
    if prompt.ndim != 2 or prompt.shape[1] != backbone.hidden_size or head_labels != num_labels:
        raise ValueError(f"{run_dir}: the prompt {tuple(prompt.shape)} and the head for {head_labels} labels do not "
                         f"fit {config['model']} (hidden size {backbone.hidden_size}) and the {num_labels} labels "
                         f"of its config.json")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--export-peft {out} is a file: name a new folder, an empty one or a previous export")
    # Only our two files (and the temporary names of a killed export) may be overwritten.
    foreign = sorted(p.name for p in out.iterdir() if p.name not in PEFT_FILES and not
                     (p.name.startswith(".adapter_") and p.name.endswith(".tmp"))) if out.is_dir() else []
    if foreign:
        raise ValueError(f"--export-peft {out} holds other files ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): name a new folder, an empty one or a previous "
                         f"export")

    heads, extra_modules = PEFT_HEADS[backbone.model_type]
    # PEFT saves the prompt as prompt_embeddings and the modules it keeps under base_model.<module path>.
    weights = {"prompt_embeddings": prompt}
    for part, path in heads.items():
        for kind in ("weight", "bias"):
            weights[f"base_model.{path}.{kind}"] = tensors[f"head.{part}.{kind}"]
    weights = {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}
    # The fields of peft 0.14's PromptTuningConfig, with the values its save_pretrained writes: no later field,
    # which 0.14 to 0.16 would warn about, except modules_to_save where a backbone needs it.
    adapter = dict(peft_type="PROMPT_TUNING", task_type="SEQ_CLS", base_model_name_or_path=config["model"],
                   revision=None, auto_mapping=None, inference_mode=True, num_virtual_tokens=prompt.shape[0],
                   token_dim=backbone.hidden_size, num_transformer_submodules=1,
                   num_attention_heads=backbone.num_attention_heads, num_layers=backbone.num_hidden_layers,
                   prompt_tuning_init="RANDOM", prompt_tuning_init_text=None, tokenizer_name_or_path=None,
                   tokenizer_kwargs=None)
    if extra_modules:
        # The pooler loads without this (its weights are plain keys of the state dict), but only a listed
        # module is wrapped by peft 0.17 and later: trained on and saved again. peft 0.14 to 0.16 have no such
        # field; they warn that they ignore it and load the same weights.
        adapter["modules_to_save"] = extra_modules
    out.mkdir(parents=True, exist_ok=True)
    xpe.atomic_write(out / PEFT_FILES[1], lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    xpe.atomic_write_json(out / PEFT_FILES[0], adapter)
    return adapter, num_labels


def peft_load_line(adapter, num_labels, out_dir):
    """The Python line that loads an export with peft and transformers alone."""
    return (f"from peft import PeftModel; from transformers import AutoModelForSequenceClassification; "
            f"model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained("
            f"{adapter['base_model_name_or_path']!r}, num_labels={num_labels}), {str(out_dir)!r})")


def export_main(args):
    """--export-peft: one run's artifact as a PEFT adapter; nothing is scored."""
    if len(args.runs) != 1:
        raise UsageError(f"--export-peft takes exactly one run in --runs, got {len(args.runs)}")
    runs = find_runs(args.runs)
    if len(runs) != 1:
        raise UsageError(f"--export-peft takes one run; {args.runs[0]} holds {len(runs)}: name one of them")
    adapter, num_labels = export_peft(runs[0], args.export_peft)
    print(f"wrote {runs[0]} as a PEFT prompt-tuning adapter ({adapter['num_virtual_tokens']} virtual tokens, "
          f"{num_labels} labels) to {args.export_peft} ({', '.join(PEFT_FILES)}); load it with: "
          f"{peft_load_line(adapter, num_labels, args.export_peft)}")
    return 0


# ---- the command line --------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="*", default=[], help="run folders or folders of runs (default: the newest in runs/)")
    p.add_argument("--scores", nargs="+", help="make the tables, figure and comparisons from earlier per_language.csv "
                                               "files instead of scoring runs (e.g. one per source, from a job array)")
    p.add_argument("--group", help="one target set: a group, codes, or a mix such as unseen-lowperf")
    p.add_argument("--groups", help=f"target groups, comma-separated (default {TABLE2_GROUPS}; with --groups-file, "
                                    f"the file's groups)")
    p.add_argument("--groups-file", help="language groups in the form of groups.json (default groups.json)")
    p.add_argument("--data-dir", help="local data laid out as DIR/<code>/test.tsv (default: SIB-200 from the hub)")
    p.add_argument("--out", default="results", help="folder for per_language.csv, per_group.csv and the tables "
                                                    "(default results)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per backbone pass, shared by the runs scored "
                                                               "together (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one)")
    p.add_argument("--baseline", action="store_true",
                   help="Table 2: SIB-200's published figures over the same languages beside ours")
    p.add_argument("--compare", metavar="A,B", action="append",
                   help="paired zero-shot difference A - B per source and target group, e.g. xpe,spt or "
                        "dual:0.7,spt; may be given again for more pairs; written to compare.csv")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples of --compare (default 10000)")
    p.add_argument("--plot", metavar="FILE.png", help="the paper's Figure 2: accuracy per language, seen and unseen "
                                                      "panels; its numbers go to FILE.csv (needs matplotlib)")
    p.add_argument("--plot-sort", metavar="METHOD[@SOURCE]",
                   help="order the figure's languages by this setting, highest first, e.g. dual:0.7 or "
                        "dual:0.7@joshi5 (default: the first setting)")
    p.add_argument("--plot-size", default=f"{PLOT_SIZE[0]}x{PLOT_SIZE[1]}",
                   help=f"the figure's size in pixels (default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})")
    p.add_argument("--plot-baselines", help=f"baselines.csv columns drawn in the figure, comma-separated, from "
                                            f"{', '.join(BASELINE_COLUMNS)} (default with --baseline: xlt_eng,gpt4)")
    p.add_argument("--predict", metavar="FILE", help="classify the texts of FILE (one a line; - reads standard input) "
                                                     "with one run: CSV on standard output")
    p.add_argument("--export-peft", metavar="DIR", help="write one run as a PEFT prompt-tuning adapter that "
                                                        "peft.PeftModel.from_pretrained loads")
    return p.parse_args(argv)


def check_flags(args):
    """Everything about the flags that can be refused before an hour of scoring."""
    if args.group and args.groups:
        raise UsageError("give --group or --groups, not both")
    if args.scores and args.runs:
        raise UsageError("--scores tabulates earlier results and --runs scores runs: give one of them")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    for given in args.compare or []:
        pair = [m.strip() for m in given.split(",")]
        if len(pair) != 2:
            raise UsageError(f"--compare takes two methods, A,B (e.g. xpe,spt), got {given!r}")
        for m in pair:
            parse_method(m)
    if args.plot:
        if Path(args.plot).suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG: give a path ending in .png, got {args.plot}")
        parse_size(args.plot_size)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install -r requirements-plot.txt") from None
    for column in (args.plot_baselines or "").split(","):
        if column and column not in BASELINE_COLUMNS:
            raise UsageError(f"--plot-baselines: unknown column {column!r}; use some of {', '.join(BASELINE_COLUMNS)}")


def check_settings(args, runs, languages):
    """--compare and --plot-sort against the settings of the runs, before they are scored."""
    # one row a run with a made-up accuracy: what compare and the figure need to know of the settings
    preview = [dict(run=str(run["dir"]), mode=run["mode"], method=run["config"]["method"],
                    xpe_frac=float(run["config"]["xpe_frac"]), source=run["config"]["source"],
                    seed=run["config"]["seed"], backbone=run["config"]["model"], steps="", language=lang, n=1,
                    accuracy=0.0) for run in runs for lang in targets_of(run, languages)[:1]]
    for pair in args.compare or []:
        compare(preview, *[m.strip() for m in pair.split(",")], {"any": languages}, resamples=1)
    if args.plot and args.plot_sort:
        sort_series(plot_series(preview), args.plot_sort)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        if args.export_peft is not None:
            return export_main(args)
        if args.predict is not None:
            return predict_texts(args, device)
        check_flags(args)
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        specs = [args.group] if args.group else (args.groups.split(",") if args.groups else
                                                 list(groups) if args.groups_file else TABLE2_GROUPS.split(","))
        group_langs = {spec: data.resolve_languages(spec, groups, codes) for spec in specs}
        if args.scores:
            per_language, runs = read_scores(args.scores), None
        else:
            runs = [read_run(d) for d in find_runs(args.runs)]
            languages = sorted(set().union(*group_langs.values()))
            check_runs(runs, languages)
            check_settings(args, runs, languages)
            for run in runs:
                left_out = sorted(set(languages) & run["trained"])
                if left_out:
                    note(f"{run['dir']}: left out of its zero-shot figures, trained on: {', '.join(left_out)}")
            # a target run is scored on its own language, whatever the groups
            languages = sorted(set(languages) | {run["only"] for run in runs if run["only"]})
            rows = data.load_split(languages, "test", args.data_dir, runs[0]["config"]["labels"])
            backbone, tokenizer = xpe.load_backbone(runs[0]["config"]["model"], device)
            per_language = score(runs, rows, backbone, tokenizer, args.batch_size, languages)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "per_language.csv", LANGUAGE_FIELDS, per_language)
        report(args, out, per_language, group_langs, groups, codes)
    except (UsageError, ValueError) as e:  # data.DataError and xpe's errors are ValueErrors
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    note(f"{len(per_language)} language results{f' from {len(runs)} run(s)' if runs else ''} in "
         f"{time.time() - start:.1f} s; written to {out}/")
    return 0


def report(args, out, per_language, group_langs, groups, codes):
    """per_group.csv, the tables, and with their flags the comparison and the figure."""
    if not per_language:
        raise UsageError(f"no run has a target language in {', '.join(group_langs)}: choose other --groups")
    group_rows = summarise(per_language, group_langs)
    fields = GROUP_FIELDS
    if args.baseline:
        add_baselines(group_rows, load_baselines())
        fields = GROUP_FIELDS + list(BASELINE_COLUMNS) + ["baseline_languages"]
    write_csv(out / "per_group.csv", fields, group_rows)
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    # each note goes under a table only where its mark appears in the table's cells
    marks = lambda text: lambda lines: any(text in str(c) for line in lines for c in line)  # noqa: E731
    paper = (paper_note(per_language), marks(" ["))
    best = ("*: the best of our methods in the row", marks("*"))
    missing = ("(k/n): SIB-200's Table 7 has k of the n languages (it lacks nqo_Nkoo)", marks("/"))
    if zero_shot:
        write_table(out, "table1", "Table 1: zero-shot accuracy (%) per target group and source, mean ± std over "
                    "seeds (n seeds)", zero_shot_tables(group_rows, group_langs, False), zero_shot, [paper, best])
    if zero_shot and args.baseline:
        write_table(out, "table2", "Table 2: ours (mean over seeds) beside SIB-200's published figures over the same "
                    "languages (XLM-R large fine-tuned in-language or on one language, GPT zero-shot prompting)",
                    zero_shot_tables(group_rows, group_langs, True), zero_shot, [paper, best, missing])
    supervised = supervised_table(per_language, groups, codes)
    if supervised:
        write_table(out, "table3", "Table 3: sequential full supervision, accuracy (%) on each target's own test "
                    "split, mean ± std over seeds (n seeds)", supervised,
                    [r for r in per_language if r["mode"] == "supervised"], [paper, missing])
    compared = []
    for pair in args.compare or []:
        a, b = [m.strip() for m in pair.split(",")]
        # groups made only of the source's own languages have nothing zero-shot to compare
        rows = [r for r in compare(per_language, a, b, group_langs, args.resamples) if r["mean_diff"] is not None]
        print(f"\nPaired difference {a} - {b} (accuracy points), 95 % bootstrap interval over seeds and languages. "
              f"{provenance(zero_shot)}")
        print_compare(rows)
        compared += rows
    if compared:
        write_csv(out / "compare.csv", COMPARE_FIELDS, compared)
    if args.plot:
        columns = (args.plot_baselines or ("xlt_eng,gpt4" if args.baseline else "")).split(",")
        table = load_baselines()
        baselines = {f"SIB-200 {BASELINE_COLUMNS[c]}": {code: v[c] / 100 for code, v in table.items() if c in v}
                     for c in columns if c}
        plot_languages(per_language, groups, args.plot, parse_size(args.plot_size), args.plot_sort, baselines)
        note(f"figure written to {args.plot}, its numbers to {Path(args.plot).with_suffix('.csv')}")


if __name__ == "__main__":
    sys.exit(main())
