"""Why this file: per-language rows into settings, group means and the paper's tables, with no model, apart from scoring.

evaluate.py scores runs into per-language rows (LANGUAGE_FIELDS) or reads them back (read_scores);
from there on everything is numbers: a setting is every training setting but the seed (setting_of),
a cell is the mean over seeds of the mean over its row's languages (summarise), and a table is data
(cells with their marks) that one renderer writes as text, Markdown or CSV (render).
"""
import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

import xpe
from xpe import UsageError

LANGUAGE_FIELDS = ["run", "mode", "method", "xpe_frac", "source", "seed", "backbone", "steps", "language", "n",
                   "accuracy", "settings", "ended"]
GROUP_FIELDS = ["method", "xpe_frac", "source", "backbone", "mode", "setting", "group", "languages", "seeds", "mean",
                "std", "left_out", "settings"]
# Settings that are not the experiment: the seed is the replicate; the paths say where the data and the
# source run were, not what they were (the source, its languages and the labels are recorded apart); the
# target is the row's language; the evaluation batch size changes no number. method, xpe_frac, source and
# model are columns of their own.
BOOKKEEPING = {"seed", "eval_batch_size", "data_dir", "groups_file", "init", "target", "method", "xpe_frac", "source",
               "model"}
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


def method_order(name):
    method, frac = xpe.parse_method(name)
    return {"spt": 0, "dual": 1, "xpe": 2}[method], frac


# ---- settings ---------------------------------------------------------------------------------------

def settings_text(settings):
    """The identifying part of config.json's settings as one canonical JSON string (per_language.csv's settings)."""
    kept = {k: v for k, v in settings.items() if k not in BOOKKEEPING}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def setting_of(row):
    """(method, xpe_frac, source, backbone, mode, settings): what a run is, but for its seed."""
    return row["method"], float(row["xpe_frac"]), row["source"], row["backbone"], row["mode"], row.get("settings", "")


def rest_of(setting):
    """A setting without its method: two settings with the same rest differ only in method."""
    return setting[2:]


def name_of(setting):
    return xpe.method_name(*setting[:2])


def _value(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def setting_labels(settings, across_methods=False):
    """{setting: column label}: the method name, then what differs among that method's settings, e.g. xpe lr 0.001
    (across_methods: what differs among all the settings, for naming candidates that should pair)."""
    by_name = defaultdict(list)
    for s in settings:
        by_name["" if across_methods else name_of(s)].append(s)
    labels = {}
    for name, group in by_name.items():
        described = {s: {"backbone": s[3], **(json.loads(s[5]) if s[5] else {"settings": "not recorded"})}
                     for s in group}
        keys = sorted({k for d in described.values() for k in d})
        differ = [k for k in keys if len({json.dumps(d.get(k)) for d in described.values()}) > 1]
        for s, d in described.items():
            parts = [f"{k.replace('_', '-')} {_value(d[k])}" if k in d else f"no {k.replace('_', '-')}"
                     for k in differ]
            labels[s] = " ".join([name_of(s)] + parts)
    return labels


def by_setting(per_language, value=lambda r: float(r["accuracy"])):
    """{setting: {seed: {language: value(row)}}}, the accuracy by default; two runs of one seed in a setting are a
    UsageError."""
    table, runs = defaultdict(lambda: defaultdict(dict)), {}
    for r in per_language:
        setting = setting_of(r)
        key = (setting, r["seed"], r["language"])
        if runs.setdefault(key, r["run"]) != r["run"]:
            raise UsageError(f"{runs[key]} and {r['run']} are both {name_of(setting)} from {setting[2]} with seed "
                             f"{r['seed']} and the same settings on {r['language']}: one would hide the other in the "
                             f"means over seeds; evaluate them apart")
        table[setting][r["seed"]][r["language"]] = value(r)
    return table


def unfinished_runs(per_language):
    """{run: its ended text} of the rows marked unfinished (scored with --unfinished)."""
    return {r["run"]: r["ended"] for r in per_language if str(r.get("ended", "")).startswith("unfinished")}


# ---- per_language.csv read back ------------------------------------------------------------------

def _row_error(path, line, text):
    return UsageError(f"--scores {path}, line {line}: {text}")


def typed_row(r, path, line):
    """One per_language.csv row typed as scoring makes it; a row that cannot be true is a UsageError."""
    try:
        row = {**r, "xpe_frac": float(r["xpe_frac"]), "seed": int(r["seed"]), "n": int(r["n"]),
               "accuracy": float(r["accuracy"])}
    except (TypeError, ValueError):
        raise _row_error(path, line, "xpe_frac, seed, n and accuracy must be numbers (seed and n whole)") from None
    empty = [k for k in ("run", "mode", "method", "source", "backbone", "language") if not r.get(k)]
    if empty:
        raise _row_error(path, line, f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
    if not 0 <= row["accuracy"] <= 1:  # also refuses nan
        raise _row_error(path, line, f"accuracy {r['accuracy']} is not in [0, 1] (a fraction, not a percentage)")
    if row["n"] < 1:
        raise _row_error(path, line, f"n = {row['n']}: an accuracy needs at least one test row")
    if row["mode"] not in ("zero-shot", "supervised"):
        raise _row_error(path, line, f"mode {row['mode']!r} is neither zero-shot nor supervised")
    try:
        xpe.method_name(row["method"], row["xpe_frac"])
    except ValueError as e:
        raise _row_error(path, line, str(e)) from None
    return row


def read_scores(paths):
    """per_language rows from per_language.csv files (evaluate.py --out), checked and typed."""
    rows, where = [], {}
    for path in map(Path, paths):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                found = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UsageError(f"--scores {path}: cannot read it ({type(e).__name__}: {e})") from None
        missing = [k for k in LANGUAGE_FIELDS if not found or k not in found[0]]
        if missing:
            raise UsageError(f"--scores {path} is not a per_language.csv written by evaluate.py (it lacks "
                             f"{', '.join(missing)})")
        for line, r in enumerate(found, 2):
            if None in r or None in r.values():
                raise _row_error(path, line, "it has another number of fields than the header")
            row = typed_row(r, path, line)
            key = (row["run"], row["language"], row["mode"])
            if key in where:
                raise UsageError(f"--scores: {row['run']} on {row['language']} twice ({where[key]} and {path}, line "
                                 f"{line}): give each part once")
            where[key] = f"{path}, line {line}"
            rows.append(row)
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


def row_languages(per_language, group_langs):
    """{(group, source, mode): the group's languages that any run of the source scored, in the group's order}."""
    scored = defaultdict(set)
    for r in per_language:
        scored[r["source"], r["mode"]].add(r["language"])
    return {(group, source, mode): [lang for lang in dict.fromkeys(langs) if lang in have]
            for group, langs in group_langs.items() for (source, mode), have in scored.items()
            if any(lang in have for lang in langs)}


def seed_means(accuracies_by_seed, langs):
    """({seed: mean over langs} for the seeds that have every one of langs, [seeds that have only some])."""
    full, partial = {}, []
    if not langs:
        return full, partial
    for seed, accuracies in sorted(accuracies_by_seed.items()):
        have = [lang for lang in langs if lang in accuracies]
        if len(have) == len(langs):
            full[seed] = statistics.fmean(accuracies[lang] for lang in langs)
        elif have:
            partial.append(seed)
    return full, partial


def summarise(per_language, group_langs, only=None):
    """per_group rows: per setting and group, the mean over seeds of each seed's mean over the row's languages.

    A row's languages are the group's languages its source was scored on; a seed scored on only some of
    them is left out (left_out) rather than averaged over fewer. only: a set of languages the rows are
    restricted to (Table 2: those SIB-200's Table 7 has). Each row keeps `covered`, its languages.
    """
    table, langs_of = by_setting(per_language), row_languages(per_language, group_langs)
    labels = setting_labels(table)
    rows = []
    for setting, seeds in table.items():
        method, frac, source, backbone, mode, settings = setting
        for group in group_langs:
            langs = langs_of.get((group, source, mode))
            if langs and only is not None:
                langs = [lang for lang in langs if lang in only]
            if not langs:
                continue
            full, partial = seed_means(seeds, langs)
            if not full and not partial:
                continue
            means = list(full.values())
            rows.append(dict(method=method, xpe_frac=frac, source=source, backbone=backbone, mode=mode,
                             setting=labels[setting], group=group, languages=len(langs), seeds=len(means),
                             mean=round(statistics.fmean(means), 6) if means else "",
                             std=round(statistics.stdev(means), 6) if len(means) > 1 else "",
                             left_out=" ".join(map(str, partial)), settings=settings, covered=langs,
                             key=setting, seed_list=sorted(full)))
    return rows


def add_baselines(group_rows, table):
    """SIB-200's published figures over exactly the languages of each row (Table 7 lacks nqo_Nkoo)."""
    for row in group_rows:
        means, known = baseline_means(row["covered"], table)
        row.update({k: round(means[k], 6) if k in means else "" for k in BASELINE_COLUMNS}, baseline_languages=known)


def left_out_notes(group_rows):
    """One note per cell a seed was left out of, naming the seeds."""
    return [f"{r['group']} from {r['source']}, {r['setting']}: seed{'s' if ' ' in r['left_out'] else ''} "
            f"{r['left_out'].replace(' ', ', ')} left out, scored on only part of the row's {r['languages']} languages"
            + ("; no seed covers them all, so the cell is empty" if not r["seeds"] else "")
            for r in group_rows if r["left_out"]]


# ---- the tables as data -----------------------------------------------------------------------------

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
    return " · ".join([f"backbone{'s' if len(backbones) > 1 else ''} {', '.join(backbones)}",
                       f"source{'s' if len(sources) > 1 else ''} {', '.join(sources)}", seed_text,
                       f"steps {', '.join(map(str, sorted(steps)))}" if steps else "steps not recorded"])


def paper_note(per_language):
    backbones = {r["backbone"] for r in per_language}
    ours = "" if backbones and all(Path(b).name.lower() == PAPER_BACKBONE for b in backbones) else \
        "; this backbone is not XLM-R large, so they only show the pattern to look for"
    return f"[x]: the paper's figure, on XLM-R large{ours}; †: secondhand, quoted by the first author's xpe-exp"


def ours_cell(row, paper, unfinished):
    """A cell of ours from a per_group row: mean and std over seeds; empty (mean None) when no seed is full."""
    return dict(kind="ours", mean=row["mean"] if row["seeds"] else None, std=row["std"], seeds=row["seeds"],
                languages=row["languages"], paper=paper, best=False,
                unfinished=any(f"{row['key']}|{s}" in unfinished for s in row["seed_list"]))


def baseline_cell(mean, languages, code):
    return dict(kind="baseline", code=code, mean=mean, std="", seeds="", languages=languages, paper=None, best=False,
                unfinished=False)


def mark_best(cells):
    """The best of our full cells in a row (where there are two or more) gets the best mark.

    Only cells with the row's most seeds compete: a mean over 2 seeds beside one over 10 is not a ranking.
    """
    ours = [c for c in cells if c and c["kind"] == "ours" and c["mean"] is not None]
    most = max((c["seeds"] for c in ours), default=0)
    for c in ours:
        c["unranked"] = c["seeds"] < most
    ranked = [c for c in ours if not c["unranked"]]
    if len(ranked) > 1:
        top = max(c["mean"] for c in ranked)
        for c in ranked:
            c["best"] = c["mean"] == top


def unfinished_keys(per_language):
    """'setting|seed' of the rows scored from unfinished runs."""
    return {f"{setting_of(r)}|{r['seed']}" for r in per_language if str(r.get("ended", "")).startswith("unfinished")}


def zero_shot_table(per_language, group_langs, with_baselines):
    """Table 1 (or Table 2 with the baselines): a row per target group and source, a column per setting.

    Table 2 averages ours and SIB-200's over exactly the row's languages that SIB-200's Table 7 has.
    """
    rows = [r for r in per_language if r["mode"] == "zero-shot"]
    baselines = load_baselines() if with_baselines else None
    group_rows = summarise(rows, group_langs, only=set(baselines) if with_baselines else None)
    full = {(r["group"], r["source"]): r["languages"] for r in summarise(rows, group_langs)} \
        if with_baselines else {}
    labels = setting_labels({r["key"] for r in group_rows})
    columns = sorted(set(labels.values()), key=lambda c: (method_order(c.split()[0]), c))
    unfinished = unfinished_keys(rows)
    table = dict(keys=["target", "source", "languages"], columns=columns + (
        list(BASELINE_COLUMNS.values()) if with_baselines else []), rows=[], notes=left_out_notes(group_rows),
                 with_std=not with_baselines)
    for group in group_langs:
        for source in sorted({r["source"] for r in group_rows}):
            mine = {labels[r["key"]]: r for r in group_rows if r["group"] == group and r["source"] == source}
            if not mine:
                continue
            covered = next(iter(mine.values()))["covered"]
            cells = {c: ours_cell(r, PAPER.get((c, source, group)), unfinished) for c, r in mine.items()}
            languages = str(len(covered))
            if with_baselines:
                means, _ = baseline_means(covered, baselines)
                cells.update({BASELINE_COLUMNS[k]: baseline_cell(round(means[k], 6), len(covered), k)
                              for k in BASELINE_COLUMNS if k in means})
                if len(covered) < full[group, source]:
                    languages = f"{len(covered)} of {full[group, source]}"
            mark_best(list(cells.values()))
            table["rows"].append(dict(keys=[group, source, languages], cells=cells))
    if with_baselines and any(" of " in r["keys"][2] for r in table["rows"]):
        table["notes"].append("k of n: ours and SIB-200's figures both average the k of the row's n languages that "
                              "SIB-200's Table 7 has (it lacks nqo_Nkoo)")
    return table


def supervised_table(per_language, specs):
    """Table 3: target runs (sequential full supervision) per target group beside in-language full fine-tuning."""
    rows = [r for r in per_language if r["mode"] == "supervised"]
    if not rows:
        return None
    group_rows = summarise(rows, specs)
    labels = setting_labels({r["key"] for r in group_rows})
    named = {r["key"]: f"{labels[r['key']]} from {r['source']}" for r in group_rows}
    columns = sorted(set(named.values()), key=lambda c: (method_order(c.split()[0]), c))
    unfinished, baselines = unfinished_keys(rows), load_baselines()
    table = dict(keys=["target"], columns=columns + [BASELINE_COLUMNS["xlmr_large"]], rows=[],
                 notes=left_out_notes(group_rows), with_std=True)
    for group in specs:
        mine = [r for r in group_rows if r["group"] == group]
        if not mine:
            continue
        cells = {named[r["key"]]: ours_cell(r, PAPER.get((name_of(r["key"]), r["source"], group)), unfinished)
                 for r in mine}
        covered = sorted(set().union(*(r["covered"] for r in mine)))
        means, known = baseline_means(covered, baselines)
        if "xlmr_large" in means:
            cells[BASELINE_COLUMNS["xlmr_large"]] = dict(baseline_cell(round(means["xlmr_large"], 6), known, "xlmr_large"),
                                                         paper=PAPER.get(("xlmr_large", "", group)))
        table["rows"].append(dict(keys=[group], cells=cells))
    return table


def finish_table(table, title, per_language):
    """Caption and the notes of the marks that appear (the paper's figure, best, unfinished)."""
    cells = [c for r in table["rows"] for c in r["cells"].values()]
    notes = []
    if any(c["paper"] for c in cells):
        notes.append(paper_note(per_language))
    if any(c["best"] for c in cells):
        notes.append("*: the best of our methods in the row" + (
            ", of those with the row's most seeds" if any(c.get("unranked") for c in cells) else ""))
    if any(c["unfinished"] for c in cells):
        notes.append("‡: includes unfinished runs (scored with --unfinished): " + ", ".join(
            f"{run} ({why})" for run, why in sorted(unfinished_runs(per_language).items())))
    table.update(caption=f"{title}. {provenance(per_language)}", notes=notes + table["notes"],
                 backbone=", ".join(sorted({r["backbone"] for r in per_language})),
                 seed_list=seed_list({r["seed"] for r in per_language}),
                 steps=", ".join(sorted({str(r["steps"]) for r in per_language})))
    return table


# ---- one renderer: text, Markdown, CSV ------------------------------------------------------------

def cell_text(cell, with_std, markdown=False):
    """'56.3 ± 1.2 (3) [56.0]': mean ± std over seeds (n seeds), then the paper's figure; one seed: '56.3 (n = 1)'."""
    if cell is None or cell["mean"] is None:
        return "-"
    value = f"{100 * cell['mean']:.1f}"
    if with_std and cell["kind"] == "ours":
        value += f" ± {100 * cell['std']:.1f} ({cell['seeds']})" if cell["seeds"] > 1 else " (n = 1)"
    if cell["paper"]:
        value += f" [{cell['paper'][0]:.1f}{'†' if cell['paper'][1] else ''}]"
    if cell["unfinished"]:
        value += " ‡"
    if cell["best"]:
        value = f"**{value}**" if markdown else f"*{value}"
    return value


def grid(table, markdown=False):
    header = table["keys"] + table["columns"]
    lines = [r["keys"] + [cell_text(r["cells"].get(c), table["with_std"], markdown) for c in table["columns"]]
             for r in table["rows"]]
    return header, lines


def render_text(table):
    header, lines = grid(table)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    body = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)
    return "\n".join([table["caption"], body] + table["notes"])


def render_markdown(table):
    header, lines = grid(table, markdown=True)
    rows = [header, ["---"] * len(header)] + lines
    body = "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return f"{table['caption']}\n\n{body}\n\n" + "".join(f"{line}  \n" for line in table["notes"])


def render_csv_rows(table):
    """One CSV row per cell: its row's keys, the column, the numbers and marks as fields."""
    out = []
    for r in table["rows"]:
        keys = dict(zip(table["keys"], r["keys"]))
        for column in table["columns"]:
            c = r["cells"].get(column)
            if c is None:
                continue
            out.append({**keys, "column": c.get("code", column), "kind": c["kind"], "mean": "" if c["mean"] is None else c["mean"],
                        "std": c["std"], "seeds": c["seeds"], "languages": c["languages"],
                        "best": int(c["best"]) if c["kind"] == "ours" else "",
                        "paper": c["paper"][0] if c["paper"] else "",
                        "paper_secondhand": int(c["paper"][1]) if c["paper"] else "",
                        "unfinished": int(c["unfinished"]) if c["kind"] == "ours" else "",
                        "backbone": table["backbone"], "seed_list": table["seed_list"], "steps": table["steps"]})
    return out


def csv_text(fields, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def table_files(name, table):
    """{file name: text} of a table: NAME.md and NAME.csv."""
    rows = render_csv_rows(table)
    fields = list(dict.fromkeys(k for r in rows for k in r)) or table["keys"] + ["column", "mean"]
    return {f"{name}.md": render_markdown(table), f"{name}.csv": csv_text(fields, rows)}
