"""Accuracy per language from run artifacts; the paper's tables and figure; paired verdicts; predictions.

    python evaluate.py --runs runs/ --baseline                 # Tables 1 and 2 over the paper's target groups
    python evaluate.py --runs runs/ --compare xpe,spt --plot results/figure2.png
    python evaluate.py --scores results/per_language.csv --baseline    # the tables again, without scoring
    python evaluate.py --scores results/per_language.csv --claims claims.csv --sweep lr_prompt
    python evaluate.py --runs runs/xpe-joshi5-s1 --predict texts.txt > predictions.csv
    python -m tools.peft_adapters export runs/xpe-joshi5-s1 peft/xpe-joshi5-s1   # PEFT in and out: a command of its own

The data flows one way, top to bottom in this file: run folders or --scores -> per-language rows (score, or
read_scores) -> settings and group means (summarise) -> the tables as data, paired verdicts, margins, claims decided
and sweeps, Figure 2's numbers -> one renderer a kind (text, Markdown, CSV, PNG) -> one set of output files, written together
(write_outputs).

Only the inference artifact of each run is used (static prompt + head on the backbone): no prompt
encoder. The backbone loads once; the test rows are tokenised once and run longest first in large
batches, every run that shares a max length and its target languages in the same backbone pass (each
run's prompt in front of its own copy of the batch). A source run is scored zero-shot on the target
languages it was not trained on; a target run (train.py --target) on its own language. A setting is
every training setting but the seed (BOOKKEEPING lists what else is not the experiment).
"""
import argparse
import csv
import hashlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from dataclasses import fields
from datetime import datetime, timezone
from fractions import Fraction
from itertools import groupby
from pathlib import Path

import torch
from tqdm import tqdm

import data
import train
import xpe
from xpe import UsageError

TABLE2_GROUPS = "lowperf,unseen,seen-wo-j5,all-wo-j5"
SUPERVISED_GROUPS = {"supervised-seen": "supervised-seen", "supervised-unseen": "supervised-unseen",
                     "supervised": "supervised-seen,supervised-unseen"}  # Table 3's rows
# The files evaluate.py writes into --out; with the figure they are one set (write_outputs).
OUTPUT_FILES = ["per_language.csv", "per_group.csv", "table1.md", "table1.csv", "table2.md", "table2.csv",
                "table3.md", "table3.csv", "compare.csv", "margins.csv", "decisions.csv", "decisions.md", "sweep.csv",
                "sweep.md"]
MANIFEST = "outputs.json"  # written last: which files make the set, with their sha256
PENDING = ".outputs.pending.json"  # while a set is put in place: what is left to do (finish_pending)
# The flags of each mode besides --runs; a flag of another mode is refused.
MODE_FLAGS = {"predict": {"predict", "batch_size", "device", "precision"},
              "score": {"scores", "group", "groups", "groups_file", "data_dir", "out", "batch_size", "device",
                        "baseline", "compare", "margin", "claims", "sweep", "sweep_plot", "plot", "plot_sort", "plot_size",
                        "plot_baselines", "unfinished",
                        "precision", "pool_code"}}


def note(text):
    """Progress and notes go to standard error: standard output carries tables, or --predict's CSV alone."""
    print(text, file=sys.stderr)


# ---- run folders, as evaluation reads them (train.py writes them) ---------------------------------------

FINISHED = tuple(why for why in train.ENDINGS if why != train.Ended.NOT_FINITE.value)  # config.json's "why" of a run to score


def find_runs(paths, note, runs_root=Path("runs")):
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
    config = train.read_run_config(run_dir, str(run_dir))
    target = config.get("target") or ""
    run = dict(dir=run_dir, config=config, mode="supervised" if target else "zero-shot",
               trained=set(config.get("source_languages", [])) if not target else set(), only=target,
               settings=settings_text(run_settings(config)))
    run["ended"] = run_end(run)
    return run


# the settings a run's config.json keeps at its top level, beside the artifact's other keys (train.py writes each
# setting once: these there, the others under "settings")
SETTINGS_AT_TOP = tuple(f.name for f in fields(xpe.PromptConfig) if f.name != "num_labels") + (
    "model", "max_length", "source", "target", "seed")
DECODER_AT_TOP = ("text_template", "chat_template")  # what a decoder run keeps there beside them (its template)


def run_settings(config):
    """What made a run, from its config.json: its settings (train.py's flags, and since they are recorded the
    training code's and the backbone weights' fingerprints and a target run's source run) and its source languages."""
    settings = {**{k: config[k] for k in SETTINGS_AT_TOP + DECODER_AT_TOP if k in config}, **config.get("settings", {})}
    if config.get("source_languages"):
        settings["source_languages"] = sorted(config["source_languages"])
    return settings


def last_logged_step(run_dir):
    try:
        with open(Path(run_dir) / "log.csv", newline="") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if str(r.get("step", "")).isdigit()]
    except (OSError, KeyError, ValueError):
        return None
    return max(steps, default=None)


def run_end(run):
    """How a run ended: "steps", "early" or "imported" (finished), or "unfinished ..." with its step: what
    config.json's "ended" says ({"why": ..., "step": N}; null while the run trains)."""
    config, total = run["config"], run["config"].get("settings", {}).get("steps")
    ended = config.get("ended")
    if isinstance(ended, dict) and ended.get("why") in FINISHED:
        return ended["why"]
    if isinstance(ended, dict):
        return f"unfinished: {ended.get('why')} at step {ended.get('step')}"
    step = last_logged_step(run["dir"])
    return f"unfinished: still training, at step {'?' if step is None else step} of {total}"


def targets_of(run, languages):
    """The languages a run is scored on: its own for a target run, else those it was not trained on."""
    if run["only"]:
        return [run["only"]]
    return [lang for lang in languages if lang not in run["trained"]]


def check_runs(runs):
    """One backbone and one label set a call (the rest is checked on the runs' rows: check_rows)."""
    for key, what in (("model", "backbones"), ("labels", "label sets")):
        found = list(dict.fromkeys(json.dumps(r["config"][key]) for r in runs))
        if len(found) > 1:
            raise UsageError(f"runs with different {what} ({', '.join(found[:3])}): evaluate them in separate calls")


def preview_rows(runs, languages, precision):
    """One per_language row a run (a made-up accuracy): what check_rows needs to know before scoring."""
    return [run_row(run, lang, 1, 0.0, precision) for run in runs for lang in targets_of(run, languages)[:1]]


def run_row(run, lang, n, accuracy, precision):
    cfg = run["config"]
    return dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                source=cfg["source"], seed=cfg["seed"], backbone=cfg["model"],
                steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=accuracy,
                precision=precision, settings=run["settings"], ended=run["ended"])


# ---- scoring: runs -> per-language rows ----------------------------------------------------------------

def score(runs, rows, backbone, tokenizer, batch_size, languages, precision="fp32"):
    """per_language rows: each run's accuracy on each of its target languages.

    Runs that share a max length and their target languages share every backbone pass.
    """
    labels = torch.tensor([r.label for r in rows])
    row_langs = [r.lang for r in rows]
    packs, encoded, per_language = defaultdict(list), {}, []
    for run in runs:
        packs[run["config"]["max_length"], run_template(run["config"]), tuple(targets_of(run, languages))].append(run)
    for (max_length, template, targets), pack in packs.items():
        if (max_length, template) not in encoded:  # tokenised once per max length (and a decoder's template)
            encoded[max_length, template] = data.encode(rows, tokenizer, max_length, template and dict(
                zip(("text_template", "chat_template"), template)))
        wanted = set(targets)
        index = [i for i, lang in enumerate(row_langs) if lang in wanted]
        models = [xpe.load_artifact(run["dir"], backbone)[0] for run in pack]
        title = pack[0]["dir"].name if len(pack) == 1 else f"{len(pack)} runs"
        logits = xpe.predict(models, [encoded[max_length, template][i] for i in index], tokenizer.pad_token_id,
                             batch_size,
                             progress=lambda batches: tqdm(batches, desc=title, leave=False, dynamic_ncols=True),
                             precision=precision)
        for run, run_logits in zip(pack, logits):
            correct = run_logits.argmax(-1) == labels[index]
            totals = defaultdict(lambda: [0, 0])
            for i, ok in zip(index, correct.tolist()):
                totals[row_langs[i]][0] += ok
                totals[row_langs[i]][1] += 1
            for lang in targets:
                right, n = totals[lang]
                per_language.append(run_row(run, lang, n, round(right / n, 6), precision))
    return per_language


def run_template(config):
    """(text template, chat template) that a decoder run's rows go through; None for an encoder's."""
    if config.get("readout") != xpe.READOUT:
        return None
    return str(config.get("text_template")), bool(config.get("chat_template"))


def load_test_rows(runs, languages, data_dir):
    """The test rows of the languages; a target language without test rows is an error before scoring."""
    rows = data.load_split(languages, "test", data_dir, runs[0]["config"]["labels"])
    needed = {lang for run in runs for lang in targets_of(run, languages)}
    empty = sorted(needed - {r.lang for r in rows})
    if empty:
        raise UsageError(f"the test split of {', '.join(empty[:3])} has no rows: nothing to score there; fill it "
                         f"or leave {'it' if len(empty) == 1 else 'them'} out of --group/--groups")
    return rows


def score_runs(args, group_langs, device):
    """--runs: read and check every run (finished, settings, flags against them), then score."""
    found = [read_run(d) for d in find_runs(args.runs, note)]
    languages = sorted(set().union(*group_langs.values()))
    precision = xpe.resolve_precision(args.precision, device)
    check_runs(found)
    check_rows(args, preview_rows(found, languages, precision))
    for run in found:
        left_out = sorted(set(languages) & run["trained"])
        if left_out:
            note(f"{run['dir']}: left out of its zero-shot figures, trained on: {', '.join(left_out)}")
    # a target run is scored on its own language, whatever the groups
    languages = sorted(set(languages) | {run["only"] for run in found if run["only"]})
    rows = load_test_rows(found, languages, args.data_dir)
    backbone, tokenizer = xpe.load_backbone(found[0]["config"]["model"], device, precision)
    note(f"scoring in {precision} (--precision {args.precision}) on {device}")
    return score(found, rows, backbone, tokenizer, args.batch_size, languages, precision), found


# ==== settings, rows read back, group means and the tables as data ================================
# per-language rows into settings, group means and the paper's tables, with no model, apart from scoring.
# evaluate.py scores runs into per-language rows (LANGUAGE_FIELDS) or reads them back (read_scores);
# from there on everything is numbers: a setting is every training setting but the seed (setting_of),
# a cell is the mean over seeds of the mean over its row's languages (summarise), and a table is data
# (cells with their marks) that one renderer writes as text, Markdown or CSV (render).

LANGUAGE_FIELDS = ["run", "mode", "method", "xpe_frac", "source", "seed", "backbone", "steps", "language", "n",
                   "accuracy", "precision", "settings", "ended"]
UNRECORDED = {"precision"}  # per_language.csv files from before a field was recorded lack it: read as empty
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

def identifying(settings):
    """settings without BOOKKEEPING, in a target run's source run's settings (init_settings) too."""
    return {k: identifying(v) if isinstance(v, dict) else v for k, v in settings.items() if k not in BOOKKEEPING}


def settings_text(settings):
    """The identifying part of a run's settings (run_settings) as one canonical JSON string (per_language.csv's
    settings)."""
    return json.dumps(identifying(settings), sort_keys=True, separators=(",", ":"))


def setting_of(row):
    """(method, xpe_frac, source, backbone, mode, settings): what a run is, but for its seed; rows scored in another
    precision are another setting (settings gains scored_in)."""
    settings = row.get("settings", "")
    if row.get("precision"):
        settings = settings_text({**(json.loads(settings) if settings else {}), "scored_in": row["precision"]})
    return row["method"], float(row["xpe_frac"]), row["source"], row["backbone"], row["mode"], settings


def pooled_code(per_language):
    """--pool-code: the rows with the training code left out of their settings (kept in "code" for the tables'
    note), so that runs that differ only in it are one setting."""
    pooled = []
    for r in per_language:
        settings = json.loads(r["settings"]) if r.get("settings") else {}
        code = settings.pop("code", None)
        if isinstance(settings.get("init_settings"), dict):
            settings["init_settings"] = {k: v for k, v in settings["init_settings"].items() if k != "code"}
        pooled.append({**r, "settings": settings_text(settings) if r.get("settings") else "", "code": code})
    return pooled


def rest_of(setting):
    """A setting without its method: two settings with the same rest differ only in method."""
    return setting[2:]


def name_of(setting):
    return xpe.method_name(*setting[:2])


def _value(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


def differs(recorded, key):
    """Whether settings ({setting: described}) differ in key; in a source's languages only among settings of one
    source: between sources they differ by definition, and the source is named apart."""
    values = defaultdict(set)
    for s, d in recorded.items():
        values[s[2] if key.endswith("source_languages") else ""].add(json.dumps(d.get(key)))
    return any(len(v) > 1 for v in values.values())


def setting_labels(settings, across_methods=False):
    """{setting: column label}: the method name, then what differs among that method's settings, e.g. xpe lr 0.001
    (across_methods: what differs among all the settings, for naming candidates that should pair)."""
    by_name = defaultdict(list)
    for s in settings:
        by_name["" if across_methods else name_of(s)].append(s)
    labels = {}
    for name, group in by_name.items():
        recorded = {s: described(s) if s[5] else {"backbone": s[3], "settings": "not recorded"} for s in group}
        keys = sorted({k for d in recorded.values() for k in d})
        differ = [k for k in keys if differs(recorded, k)]
        for s, d in recorded.items():
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
    """One per_language.csv row typed as scoring makes it (run_row); a field out of its range is a UsageError
    naming the line. Each field of LANGUAGE_FIELDS has its range here; steps, precision, settings and ended
    may be empty (files from before they were recorded)."""
    try:
        row = {**r, "xpe_frac": float(r["xpe_frac"]), "seed": int(r["seed"]), "n": int(r["n"]),
               "accuracy": float(r["accuracy"]), "steps": int(r["steps"]) if r["steps"].strip() else ""}
    except (TypeError, ValueError):
        raise _row_error(path, line, "xpe_frac, seed, n, accuracy and steps must be numbers (seed, n and steps "
                                     "whole; steps may be empty)") from None
    empty = [k for k in ("run", "mode", "method", "source", "backbone", "language") if not r.get(k)]
    if empty:
        raise _row_error(path, line, f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
    if not 0 <= row["accuracy"] <= 1:  # also refuses nan
        raise _row_error(path, line, f"accuracy {r['accuracy']} is not in [0, 1] (a fraction, not a percentage)")
    for key, low in (("n", 1), ("seed", 0), ("steps", 1)):
        if row[key] != "" and row[key] < low:
            raise _row_error(path, line, f"{key} = {row[key]}: it is a whole number of at least {low}")
    if row["mode"] not in ("zero-shot", "supervised"):
        raise _row_error(path, line, f"mode {row['mode']!r} is neither zero-shot nor supervised")
    try:
        xpe.split_prompt(row["method"], row["xpe_frac"])  # the method, and an xpe_frac that it can have
        data.check_code(row["language"], "", "rename it")
    except UsageError as e:
        raise _row_error(path, line, str(e)) from None
    if row["precision"] not in ("", *xpe.PRECISIONS[1:]):
        raise _row_error(path, line, f"precision {row['precision']!r} is none of {', '.join(xpe.PRECISIONS[1:])} "
                                     f"(or empty)")
    try:
        settings = json.loads(row["settings"]) if row["settings"] else {}
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise _row_error(path, line, f"settings {row['settings'][:40]!r} is not a JSON object (or empty)")
    if row["ended"] and row["ended"] not in FINISHED and not row["ended"].startswith("unfinished"):
        raise _row_error(path, line, f"ended {row['ended']!r} is none of {', '.join(FINISHED)}, unfinished... "
                                     f"(or empty)")
    return row


def read_scores(paths):
    """per_language rows from per_language.csv files (evaluate.py --out), checked and typed."""
    rows, where = [], {}
    for path in map(Path, paths):
        try:
            if finish_pending(path.parent):  # a set that a kill left half in place: put the rest in place first
                note(f"{path.parent}: finished putting in place the set of outputs an interrupted call left")
            with open(path, newline="", encoding="utf-8") as f:
                found = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UsageError(f"--scores {path}: cannot read it ({type(e).__name__}: {e})") from None
        missing = [k for k in LANGUAGE_FIELDS if k not in UNRECORDED and (not found or k not in found[0])]
        if missing:
            raise UsageError(f"--scores {path} is not a per_language.csv written by evaluate.py (it lacks "
                             f"{', '.join(missing)})")
        for line, r in enumerate(found, 2):
            if None in r or None in r.values():
                raise _row_error(path, line, "it has another number of fields than the header")
            row = typed_row({**dict.fromkeys(UNRECORDED, ""), **r}, path, line)
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


def code_of(row):
    """The fingerprint of the code that trained a row's run ("" where it was not recorded); pooled_code keeps it."""
    if "code" in row:
        return row["code"] or ""
    return (json.loads(row["settings"]) if row.get("settings") else {}).get("code") or ""


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
    codes = sorted({code_of(r) for r in per_language})
    pooled = " (pooled by --pool-code)" if len(codes) > 1 and any("code" in r for r in per_language) else ""
    imported = all(r.get("ended") == "imported" for r in per_language)  # PEFT adapters: not trained here
    code_text = (f"code {', '.join(c or 'not recorded' for c in codes)}{pooled}" if any(codes) else
                 "imported adapters, not trained here" if imported else
                 "training code not recorded (runs from before train.py named it)")
    precisions = sorted({r.get("precision") or "" for r in per_language})
    return " · ".join([f"backbone{'s' if len(backbones) > 1 else ''} {', '.join(backbones)}",
                       f"source{'s' if len(sources) > 1 else ''} {', '.join(sources)}", seed_text,
                       f"steps {', '.join(map(str, sorted(steps)))}" if steps else "steps not recorded", code_text,
                       f"scored in {', '.join(p or 'a precision not recorded' for p in precisions)}"])


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


# ==== paired verdicts: does A beat B, by seeds ====================================================
# does method A beat method B? Paired differences with seeds as the unit, t-intervals and verdicts.
# For a pair of settings that differ only in method and a target group: d_s, the mean over the group's
# languages of A's accuracy minus B's for each seed s both have; then n, the mean of d_s, their standard
# deviation and a 95 % t-interval on n - 1 degrees of freedom. The languages are the named members of
# the group, not a sample of languages, so they are averaged, not resampled. With fewer than 3 seeds no
# interval is given: one degree of freedom makes it the mean ± 12.7 times |d_1 - d_2| / 2, a width that
# rests on a single difference.

COMPARE_FIELDS = ["source", "backbone", "group", "a", "b", "differ", "seeds", "languages", "mean_diff", "ci_low", "ci_high",
                  "wins", "ties", "losses", "n_seeds", "sd", "verdict", "left_out", "seed_diffs"]
MIN_SEEDS = 3  # fewer: no interval, "too few seeds"
LEVEL = 0.95


# ---- Student's t, without scipy ---------------------------------------------------------------------

def _beta_fraction(a, b, x):
    """The continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a, b, x):
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p (0.5 <= p < 1), by bisection on t_cdf to float precision."""
    if not 0.5 <= p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def seed_interval(diffs, level=LEVEL):
    """(n, mean, sd, low, high, verdict) of per-seed differences; sd "" below 2 seeds, no interval below 3."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else None
    if n < MIN_SEEDS:
        return n, mean, sd, None, None, "too few seeds"
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "holds" if low > 0 else "fails" if high < 0 else "undecided"
    return n, mean, sd, low, high, verdict


# ---- paired settings ---------------------------------------------------------------------------

def parse_side(text):
    """A side of --compare A,B: a method, then settings that pick among that method's settings, as the tables label
    them ("xpe lr 0.001") or as key=value ("dual:0.7 lr_spt=5e-05"): (method name, {setting: value as given})."""
    words = str(text).split()
    if not words:
        raise UsageError("--compare takes two settings, A,B (e.g. xpe,spt or \"dual:0.7 lr_spt=5e-05\",spt), "
                         "got an empty one")
    name, picks, rest = xpe.method_name(*xpe.parse_method(words[0])), {}, words[1:]
    while rest:
        word = rest.pop(0)
        if "=" not in word and not rest:
            raise UsageError(f"--compare {text!r}: {word!r} has no value: name a setting as key=value, e.g. lr=0.001")
        key, value = word.split("=", 1) if "=" in word else (word, rest.pop(0))
        picks[key.replace("-", "_")] = value
    return name, picks


def described(setting):
    """A setting's recorded settings by name, the backbone among them; a source run's as init_settings.NAME."""
    flat = {"backbone": setting[3]}
    for k, v in (json.loads(setting[5]) if setting[5] else {}).items():
        flat.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
    return flat


def same_value(recorded, given):
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        try:
            return float(given) == recorded
        except ValueError:
            return False
    return _value(recorded) == given


def differences(sa, sb):
    """What sets two settings apart beyond the method, e.g. "lr_spt 5e-05 / 0.005"; "" when only the method."""
    da, db = described(sa), described(sb)
    keys = sorted(k for k in set(da) | set(db) if json.dumps(da.get(k)) != json.dumps(db.get(k)))
    return "; ".join(f"{k} {_value(da[k]) if k in da else '-'} / {_value(db[k]) if k in db else '-'}" for k in keys)


def pair_settings(table, a, b):
    """[(setting of A, setting of B)] for --compare A,B (parse_side): those that differ only in method; failing any,
    the one setting of each side per source and backbone (differences names what else differs). A UsageError names
    the candidates when a side has none, or several to choose from."""
    sides = []
    for text in (a, b):
        name, picks = parse_side(text)
        of_name = [s for s in table if name_of(s) == name]
        if not of_name:
            raise UsageError(f"no zero-shot runs of {name} to compare; there are runs of: "
                             f"{', '.join(sorted({name_of(s) for s in table})) or 'none'}")
        chosen = [s for s in of_name if all(k in described(s) and same_value(described(s)[k], v)
                                            for k, v in picks.items())]
        if not chosen:
            labels = setting_labels(of_name)
            raise UsageError(f"no setting of {name} has {' '.join(f'{k}={v}' for k, v in picks.items())}; its "
                             f"settings: {'; '.join(sorted(labels.values()))}")
        sides.append(chosen)
    found_a, found_b = sides
    if set(found_a) == set(found_b):
        raise UsageError(f"--compare {a},{b} compares {a} with itself: name two settings, e.g. xpe,spt")
    sources = [sorted({s[2] for s in found}) for found in sides]
    if not set(sources[0]) & set(sources[1]):
        raise UsageError(f"{a} and {b} have no source in common ({a}: {', '.join(sources[0])}; {b}: "
                         f"{', '.join(sources[1])}): train both on one source")
    pairs = [(sa, sb) for sa in found_a for sb in found_b if sa != sb and rest_of(sa) == rest_of(sb)]
    if not pairs:
        place = lambda s: s[2:5]  # source, backbone, mode
        for where in sorted({place(s) for s in found_a} & {place(s) for s in found_b}):
            here = [[s for s in found if place(s) == where] for found in sides]
            if len(here[0]) > 1 or len(here[1]) > 1:
                labels = setting_labels(here[0] + here[1], across_methods=True)
                raise UsageError(f"{a} - {b} from {where[0]}: no setting of one differs from one of the other only "
                                 f"in method, and there are several to pair (candidates: "
                                 f"{'; '.join(labels[s] for s in here[0] + here[1])}): name the two settings, e.g. "
                                 f"\"{name_of(here[0][0])} lr=0.001\",{name_of(here[1][0])}")
            pairs.append((here[0][0], here[1][0]))
    return sorted(pairs, key=lambda p: (p[0][2], p[0][3], str(p[0][5])))


def check_pair(table, a, b):
    """The setting pairs of --compare A,B in table (by_setting of zero-shot rows), each with a seed in common."""
    pairs = pair_settings(table, a, b)
    for sa, sb in pairs:
        if not set(table[sa]) & set(table[sb]):
            raise UsageError(f"{a} and {b} from {sa[2]} are unpaired: no seed in common "
                             f"({a}: {', '.join(map(str, sorted(table[sa])))}; "
                             f"{b}: {', '.join(map(str, sorted(table[sb])))}): train them with the same --seed")
    return pairs


def compare(per_language, a, b, group_langs):
    """Paired zero-shot differences A - B per setting pair, source and target group: COMPARE_FIELDS rows.

    a, b: methods as method_name writes them (xpe, spt, dual:0.7). A seed is in a row when A and B both
    have it on every language of the row (the group's languages the source was scored on); the others
    are named in left_out. wins/ties/losses count the languages by the sign of the mean over those seeds of
    A - B, from the rows counted right (correct_rows): a tie is no difference at all.
    """
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    table, langs_of = by_setting(zero_shot), row_languages(zero_shot, group_langs)
    counted = by_setting(zero_shot, value=correct_rows)
    labels = setting_labels(table)
    rows = []
    for sa, sb in check_pair(table, a, b):
        runs_a, runs_b = table[sa], table[sb]
        common = sorted(set(runs_a) & set(runs_b))
        for group in group_langs:
            rows.append(compare_row(runs_a, runs_b, common, langs_of.get((group, sa[2], "zero-shot"), []),
                                    dict(source=sa[2], backbone=sa[3], group=group, a=labels[sa], b=labels[sb],
                                         differ=differences(sa, sb)),
                                    (counted[sa], counted[sb])))
    return rows


def correct_rows(row):
    """A row's accuracy as the exact share of its n test rows it got right (scoring rounds it to 6 decimals)."""
    return Fraction(round(row["accuracy"] * row["n"]), row["n"])


def compare_row(runs_a, runs_b, common, langs, head, counted):
    """One COMPARE_FIELDS row (head: its source, backbone, group, a, b) over the seeds in common that cover
    every one of langs in A and in B; counted: A's and B's exact shares right (correct_rows), for the signs."""
    full_a, part_a = seed_means({s: runs_a[s] for s in common}, langs)
    full_b, part_b = seed_means({s: runs_b[s] for s in common}, langs)
    seeds = [s for s in common if s in full_a and s in full_b]
    left_out = sorted((set(full_a) | set(full_b) | set(part_a) | set(part_b)) - set(seeds))
    row = dict(seeds=" ".join(map(str, seeds)), languages=len(langs), mean_diff=None, ci_low=None, ci_high=None,
               wins=0, ties=0, losses=0, n_seeds=len(seeds), sd=None, verdict="no seeds",
               left_out=" ".join(map(str, left_out)), seed_diffs="")
    if not seeds:  # e.g. a group of the source's own languages: nothing zero-shot to compare
        return {k: {**head, **row}[k] for k in COMPARE_FIELDS}
    diffs = [full_a[s] - full_b[s] for s in seeds]
    n, mean, sd, low, high, verdict = seed_interval(diffs)
    per_lang = [sum(counted[0][s][lang] - counted[1][s][lang] for s in seeds) for lang in langs]  # exact
    row.update(seed_diffs=" ".join(f"{d:.6f}" for d in diffs), mean_diff=round(mean, 6), sd=None if sd is None else round(sd, 6), verdict=verdict,
               ci_low=None if low is None else round(low, 6), ci_high=None if high is None else round(high, 6),
               wins=sum(d > 0 for d in per_lang), ties=sum(d == 0 for d in per_lang),
               losses=sum(d < 0 for d in per_lang))
    return {k: {**head, **row}[k] for k in COMPARE_FIELDS}


# ---- margins: what an interval rules out, and the seeds a decision would need ------------------------------

MARGIN_FIELDS = ["source", "backbone", "group", "a", "b", "margin", "languages", "n_seeds", "mean_diff", "ci_low",
                 "ci_high", "sd", "rules_out_plus", "rules_out_minus", "decision", "power", "seeds_for_power"]
POWER = 0.8


def margin_decision(low, high, margin):
    """(rules out +M, rules out -M, decision): what a 95 % interval [low, high] says of a difference of margin M
    (> 0) or more, either way. decision "within": the interval lies inside (-M, +M), so no difference as large
    as M either way; "below": it rules out +M or more only; "above": -M or less only; "neither": neither side.
    """
    plus, minus = high < margin, low > -margin
    return plus, minus, "within" if plus and minus else "below" if plus else "above" if minus else "neither"


def power_at(margin, sd, n, level=LEVEL):
    """The chance that n seeds of per-seed sd give an interval that excludes 0 when the difference is margin
    (a paired t-test; the noncentral t approximated by a shifted central one)."""
    if n < 2 or not sd:
        return None
    return 1 - t_cdf(t_quantile(0.5 + level / 2, n - 1) - margin * math.sqrt(n) / sd, n - 1)


def seeds_for_power(margin, sd, power=POWER, level=LEVEL, most=10_000):
    """The fewest seeds whose interval excludes 0 with the given power when the difference is margin, at the
    observed per-seed sd: the smallest n with t(level, n-1) + t(power, n-1) <= margin * sqrt(n) / sd."""
    if not sd:
        return None

    def enough(n):  # true from some n on: the left side falls and the right side grows with n
        return t_quantile(0.5 + level / 2, n - 1) + t_quantile(power, n - 1) <= margin * math.sqrt(n) / sd
    high = MIN_SEEDS
    while not enough(high):  # doubling, then halving: a few dozen quantiles, not one pair a candidate n
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(MIN_SEEDS, high // 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return high


def power_of(row, size):
    """(power, seeds for POWER) of a compare row at a difference of size (> 0): the chance its seeds had to exclude 0,
    None without an interval; the seeds that would give POWER at its per-seed sd, None without one."""
    power = power_at(size, row["sd"], row["n_seeds"]) if row["ci_low"] is not None else None
    return None if power is None else round(power, 3), seeds_for_power(size, row["sd"]) if row["sd"] else None


def margin_rows(compared, margins):
    """MARGIN_FIELDS rows: each compare row with a per-seed sd, against each margin (a fraction, e.g. 0.02); below
    MIN_SEEDS seeds, no interval: no decision, but the seeds a decision would need."""
    rows = []
    for r in compared:
        if r["sd"] is None:
            continue
        for margin in margins:
            if r["ci_low"] is None:
                plus, minus, decision = None, None, "too few seeds"
            else:
                plus, minus, decision = margin_decision(r["ci_low"], r["ci_high"], margin)
            power, seeds = power_of(r, margin)
            rows.append({**{k: r[k] for k in ("source", "backbone", "group", "a", "b", "languages", "n_seeds",
                                              "mean_diff", "ci_low", "ci_high", "sd")},
                         "margin": round(margin, 6), "rules_out_plus": {True: "yes", False: "no"}.get(plus, ""),
                         "rules_out_minus": {True: "yes", False: "no"}.get(minus, ""), "decision": decision,
                         "power": power, "seeds_for_power": seeds})
    return rows


def decision_text(decision, points):
    return {"within": f"no effect of {points:g} either way", "below": f"below +{points:g}",
            "above": f"above -{points:g}"}.get(decision, decision)


def aligned(header, lines):
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)


def margin_text(rows):
    """margin_rows as an aligned table, in accuracy points."""
    header = ["source", "group", "A - B", "M (pp)", "95 % t-interval (pp)", "rules out +M", "rules out -M",
              "decision", "seeds", "power at M", f"seeds for {POWER:.0%} power"]
    lines = [[r["source"], r["group"], f"{r['a']} - {r['b']}", f"{100 * r['margin']:g}",
              "-" if r["ci_low"] is None else f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]",
              r["rules_out_plus"] or "-", r["rules_out_minus"] or "-",
              decision_text(r["decision"], 100 * r["margin"]), r["n_seeds"],
              "-" if r["power"] is None else f"{r['power']:.2f}",
              "-" if r["seeds_for_power"] is None else r["seeds_for_power"]] for r in rows]
    return aligned(header, lines)


def compare_notes(rows):
    differ = {(r["a"], r["b"], r["source"], r["backbone"]): r["differ"] for r in rows if r["differ"]}
    return [f"{r['a']} - {r['b']} from {r['source']} on {r['group']}: seed{'s' if ' ' in r['left_out'] else ''} "
            f"{r['left_out'].replace(' ', ', ')} left out, not scored on all {r['languages']} languages in both"
            for r in rows if r["left_out"]] + [
        f"{a} - {b} from {source}: beyond the method the settings differ in {text} (A / B)"
        for (a, b, source, _), text in differ.items()]


def compare_text(rows):
    """compare's rows as an aligned table, differences in accuracy points (%)."""
    several = len({r["backbone"] for r in rows}) > 1
    header = ["source"] + (["backbone"] if several else []) + [
        "group", "A - B", "mean (pp)", "sd (pp)", "95 % t-interval (pp)", "verdict", "seeds", "wins", "ties",
        "losses", "languages"]
    lines = []
    for r in rows:
        known = r["mean_diff"] is not None
        lines.append([r["source"]] + ([r["backbone"]] if several else []) + [
            r["group"], f"{r['a']} - {r['b']}", f"{100 * r['mean_diff']:+.2f}" if known else "-",
            f"{100 * r['sd']:.2f}" if r["sd"] is not None else "-",
            f"[{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]" if r["ci_low"] is not None else "-",
            r["verdict"], r["n_seeds"], r["wins"], r["ties"], r["losses"], r["languages"]])
    return aligned(header, lines)


def print_compare(rows):
    print(compare_text(rows))


# ---- claims: effects another study reported, decided against ours -----------------------------------------

CLAIM_COLUMNS = ["a", "b", "group", "reported"]  # and study, optional: who reported it
CLAIM_FIELDS = ["study", "a", "b", "group", "reported", "source", "backbone", "setting_a", "setting_b", "differ",
                "languages", "wins", "ties", "losses", "n_seeds", "mean_diff", "ci_low", "ci_high", "sd", "verdict",
                "against_reported", "power", "seeds_for_power"]


def read_claims(path):
    """--claims: [{study, a, b, group, reported}] from a CSV of CLAIM_COLUMNS (a study column optional); reported is
    the difference A - B another study found, in accuracy points (kept as a fraction). Each side is parsed as
    --compare's are; anything else is a UsageError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--claims {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CLAIM_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"--claims {path} lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}: give a CSV "
                         f"with the columns {','.join(CLAIM_COLUMNS)} (and study), e.g. xpe,spt,lowperf,3.1")
    claims = []
    for line, r in enumerate(reader, 2):
        where = f"--claims {path} line {line}"
        if None in r or any(r[c] is None for c in CLAIM_COLUMNS):
            raise UsageError(f"{where}: give {len(reader.fieldnames)} fields, as the header names them")
        try:
            reported = float(r["reported"])
        except ValueError:
            reported = math.nan
        if not abs(reported) < 100:  # also nan and inf
            raise UsageError(f"{where}: reported {r['reported']!r} is no difference in accuracy points (e.g. 3.1)")
        if not r["group"].strip():
            raise UsageError(f"{where}: the group is empty: name a group or language codes, e.g. lowperf")
        for side in (r["a"], r["b"]):
            try:
                parse_side(side)
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
        claims.append(dict(study=(r.get("study") or "").strip(), a=r["a"].strip(), b=r["b"].strip(),
                           group=r["group"].strip(), reported=reported / 100))
    if not claims:
        raise UsageError(f"--claims {path} holds no claim: a line a,b,group,reported each, e.g. xpe,spt,lowperf,3.1")
    return claims


def against_reported(low, high, reported):
    """What an interval [low, high] of A - B says of the reported difference: "rules it out (above)" or "(below)"
    when the interval lies on one side of it, else "cannot rule it out"."""
    if high < reported:
        return "rules it out (below)"
    return "rules it out (above)" if low > reported else "cannot rule it out"


def claim_rows(per_language, claims, group_langs):
    """CLAIM_FIELDS rows: each claim's paired difference (compare) per source, decided against 0 (the verdict) and
    against the reported difference, with the power the seeds had at it and the seeds 80 % power would need at
    the observed per-seed sd."""
    rows, compared = [], {}
    for c in claims:
        if (c["a"], c["b"]) not in compared:
            compared[c["a"], c["b"]] = compare(per_language, c["a"], c["b"], group_langs)
        for r in compared[c["a"], c["b"]]:
            if r["group"] != c["group"]:
                continue
            size = abs(c["reported"])
            decided = r["ci_low"] is not None
            power, seeds = power_of(r, size) if size else (None, None)
            rows.append({**c, **{k: r[k] for k in ("source", "backbone", "differ", "languages", "wins", "ties", "losses",
                                                   "n_seeds", "mean_diff", "ci_low", "ci_high", "sd", "verdict")},
                         "setting_a": r["a"], "setting_b": r["b"],
                         "against_reported": against_reported(r["ci_low"], r["ci_high"], c["reported"]) if decided
                         else r["verdict"],
                         "power": power, "seeds_for_power": seeds})
    return rows


def claims_markdown(rows):
    """claim_rows as a Markdown table, differences in accuracy points."""
    pp = lambda x: "-" if x is None else f"{100 * x:+.2f}"
    lines = ["| claim | reported by | reported (pp) | source | here: A − B (pp) | 95 % t-interval over seeds (pp) "
             "| seeds | languages won / tied / lost | against 0 | against the reported | power at the reported "
             "| seeds for 80 % power |", "|" + " --- |" * 12]
    for r in rows:
        interval = "-" if r["ci_low"] is None else f"[{pp(r['ci_low'])}, {pp(r['ci_high'])}]"
        power = "-" if r["power"] is None else f"{r['power']:.2f}"
        lines.append(f"| {r['setting_a']} − {r['setting_b']} on {r['group']} | {r['study'] or '-'} "
                     f"| {pp(r['reported'])} | {r['source']} | {pp(r['mean_diff'])} | {interval} | {r['n_seeds']} "
                     f"| {r['wins']} / {r['ties']} / {r['losses']} of {r['languages']} | **{r['verdict']}** | **{r['against_reported']}** | {power} | {r['seeds_for_power'] or '-'} |")
    return "\n".join(lines) + "\n"


# ---- a sweep: one setting's values side by side, decided by seeds -------------------------------------------

SWEEP_FIELDS = ["source", "backbone", "family", "setting", "swept", "moved_with_it", "value", "group", "languages", "seeds", "mean",
                "sd", "ci_low", "ci_high", "best", "next", "lead", "lead_low", "lead_high", "lead_verdict"]


def sweep_families(table, key):
    """({family: {value: setting}}, [settings that moved with key]) of the settings of table (by_setting) that
    record key: a family is a setting with key left out, so that its members differ in key alone (and in the
    settings equal to it in every run, as lr_spt follows lr_prompt); those of one value are no sweep and left out.
    A UsageError when none is left."""
    families, recorded = defaultdict(dict), {s: json.loads(s[5]) if s[5] else {} for s in table}
    having = [d for d in recorded.values() if key in d and not isinstance(d[key], dict)]
    moving = {k for d in having for k in d if k != key and all(e.get(k) == e[key] for e in having)}
    for s, d in recorded.items():
        if key in d and not isinstance(d[key], dict):  # a setting equal to key in every run moved with it (lr_spt
            # follows lr_prompt): not part of the family
            rest = {k: v for k, v in d.items() if k != key and k not in moving}
            families[s[:5] + (settings_text(rest),)][d[key]] = s
    if not any(len(values) > 1 for values in families.values()):
        keys = sorted({k for d in recorded.values() for k in d})
        varied = [k for k in keys if len({json.dumps(d.get(k)) for d in recorded.values()}) > 1]
        raise UsageError(f"--sweep {key}: no two settings differ in {key} alone"
                         f"{'' if families else ' (no run records it)'}; the settings that differ among the runs: "
                         f"{', '.join(varied) or 'none beyond the method'}")
    return {family: values for family, values in families.items() if len(values) > 1}, sorted(moving)


def value_order(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def sweep_rows(per_language, group_langs, key):
    """SWEEP_FIELDS rows: per family (sweep_families), target group and value of key, the mean over seeds of each
    seed's mean over the group's languages, with its 95 % t-interval over seeds; the value of the highest mean is
    best, and its lead over the next highest is a paired difference by seed with its interval and verdict."""
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    table, langs_of = by_setting(zero_shot), row_languages(zero_shot, group_langs)
    families, moving = sweep_families(table, key)
    labels, family_labels = setting_labels(table), setting_labels(families)
    rows = []
    for family, members in families.items():
        for group in group_langs:
            langs = langs_of.get((group, family[2], "zero-shot"), [])
            means = {v: seed_means(table[s], langs)[0] for v, s in members.items()}
            if not any(means.values()):
                continue
            ranked = sorted((v for v in members if means[v]), key=lambda v: -statistics.fmean(means[v].values()))
            for v in sorted(members, key=value_order):
                n, mean, sd, low, high, _ = seed_interval(list(means[v].values())) if means[v] else (0,) + (None,) * 5
                row = dict(source=family[2], backbone=family[3], family=family_labels[family],
                           setting=labels[members[v]], swept=key, moved_with_it=" ".join(moving), value=v, group=group, languages=len(langs),
                           seeds=n, mean=mean, sd=sd, ci_low=low, ci_high=high, best=v == ranked[0],
                           next=None, lead=None, lead_low=None, lead_high=None, lead_verdict=None)
                if v == ranked[0] and len(ranked) > 1:
                    common = sorted(set(means[v]) & set(means[ranked[1]]))
                    diffs = [means[v][seed] - means[ranked[1]][seed] for seed in common]
                    _, lead, _, lead_low, lead_high, verdict = seed_interval(diffs) if diffs else (0, None, None,
                                                                                                   None, None, "no seeds")
                    row.update(next=ranked[1], lead=lead, lead_low=lead_low, lead_high=lead_high, lead_verdict=verdict)
                rows.append({k: round(x, 6) if isinstance(x, float) and k != "value" else x for k, x in row.items()})
    return rows


def sweep_markdown(rows):
    """sweep_rows as Markdown: a table per family (a row per value, a column per group: the mean in % with its
    interval, the best in bold), then a line per group on whether the best leads the next."""
    pct = lambda x: f"{100 * x:.2f}"
    parts = []
    for (source, backbone, family), rs in groupby(rows, key=lambda r: (r["source"], r["backbone"], r["family"])):
        rs = list(rs)
        key, groups = rs[0]["swept"], list(dict.fromkeys(r["group"] for r in rs))
        values = list(dict.fromkeys(r["value"] for r in rs))
        cell = {(r["value"], r["group"]): r for r in rs}
        moved = f" ({rs[0]['moved_with_it'].replace(' ', ', ')} equal to it in every run)" if rs[0]["moved_with_it"] else ""
        lines = [f"**{family}** from {source} · backbone {backbone} · {key}{moved} · mean accuracy (%) over seeds, 95 % "
                 f"t-interval over seeds, (n seeds); the best of each group in bold", "",
                 "| " + " | ".join([key] + groups) + " |", "|" + "---|" * (len(groups) + 1)]
        for v in values:
            cells = []
            for g in groups:
                r = cell.get((v, g))
                text = "-" if r is None or r["mean"] is None else pct(r["mean"]) + (
                    f" [{pct(r['ci_low'])}, {pct(r['ci_high'])}]" if r["ci_low"] is not None else "") + f" ({r['seeds']})"
                cells.append(f"**{text}**" if r is not None and r["best"] else text)
            lines.append("| " + " | ".join([_value(v)] + cells) + " |")
        lines.append("")
        for r in rs:
            if r["best"] and r["next"] is not None:
                lead = "-" if r["lead"] is None else f"{100 * r['lead']:+.2f} points" + (
                    f" [{100 * r['lead_low']:+.2f}, {100 * r['lead_high']:+.2f}]" if r["lead_low"] is not None else "")
                lines.append(f"- {r['group']}: best {key} {_value(r['value'])}, {lead} over the next "
                             f"({_value(r['next'])}), paired by seed: {r['lead_verdict']}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def sweep_png(rows, size, caption):
    """Accuracy against the swept value, a panel per target group, a line per family with its 95 % interval over
    seeds as a band: PNG bytes of size (width, height) pixels. A log axis when the values are positive and span
    a factor of 10 or more; values that are not numbers stand at even steps."""
    width = size[0]
    key, groups = rows[0]["swept"], list(dict.fromkeys(r["group"] for r in rows))
    values = sorted({r["value"] for r in rows}, key=value_order)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    log = numeric and min(values) > 0 and max(values) >= 10 * min(values)
    x_of = (lambda v: v) if numeric else (lambda v: values.index(v))
    fig = blank_figure(size)
    columns = min(len(groups), 3)
    axes = fig.subplots(-(-len(groups) // columns), columns, squeeze=False).ravel()
    for ax, group in zip(axes, groups):
        for family, rs in groupby((r for r in rows if r["group"] == group and r["mean"] is not None),
                                  key=lambda r: (r["family"], r["source"], r["backbone"])):
            rs = list(rs)
            x = [x_of(r["value"]) for r in rs]
            line, = ax.plot(x, [100 * r["mean"] for r in rs], marker="o", label=f"{family[0]} from {family[1]}")
            banded = [r for r in rs if r["ci_low"] is not None]
            if banded:
                ax.fill_between([x_of(r["value"]) for r in banded], [100 * r["ci_low"] for r in banded],
                                [100 * r["ci_high"] for r in banded], color=line.get_color(), alpha=0.2, linewidth=0)
        if log:
            ax.set_xscale("log")
        ax.set_xticks([x_of(v) for v in values], [_value(v) for v in values])
        ax.minorticks_off()
        ax.set_xlabel(key)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(group, loc="left")
        ax.grid(alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"Zero-shot accuracy against {key}\n" + textwrap.fill(
        f"{caption} · each point: the mean over seeds of each seed's mean over the group's languages; band: its 95 % "
        f"t-interval over seeds", max(40, int(width / 9))), fontsize=11)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    return png_bytes(fig)


# ==== Figure 2: its numbers apart from the drawing ================================================
# the paper's Figure 2, its numbers (one series per setting and baseline) apart from the drawing.
# figure_numbers gives the series, panels and the rows of the figure's CSV; draw_png draws them with
# matplotlib (an optional extra) into PNG bytes; plot_languages writes both, each whole or not at all.

PLOT_SIZE = (2400, 1400)  # pixels; the default of the figure
PLOT_MAX = (20000, 20000)  # a side below 2^16, and at most 1.6 GB of RGBA
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
    series, labels = [], setting_labels(table)
    unfinished = {setting_of(r) for r in per_language if str(r.get("ended", "")).startswith("unfinished")}
    for setting in sorted(table, key=lambda s: (s[2], s[4] != "zero-shot", s[1], s[0], labels[s])):
        source, mode = setting[2], setting[4]
        values = defaultdict(list)
        for accuracies in table[setting].values():
            for lang, accuracy in accuracies.items():
                values[lang].append(accuracy)
        label = f"{labels[setting]} ({source}{', supervised' if mode != 'zero-shot' else ''})" + \
            (" ‡ unfinished" if setting in unfinished else "")
        series.append(dict(label=label, setting=setting, values={k: statistics.fmean(v) for k, v in values.items()},
                           seeds={k: len(v) for k, v in values.items()}))
    for name, values in (baselines or {}).items():
        outside = [lang for lang, v in values.items() if not 0 <= v <= 1]
        if outside:
            raise UsageError(f"baseline {name!r} has accuracies outside [0, 1] ({outside[0]}: {values[outside[0]]}); "
                             f"divide percentages by 100")
        series.append(dict(label=name, setting=None, values=dict(values), seeds={}))
    return series


def sort_series(series, sort_by):
    """The series named by sort_by: METHOD or METHOD@SOURCE (dual:0.7@joshi5), a series' label, or a baseline's name.

    None: the first setting. Where a setting was run both zero-shot and supervised, the zero-shot one.
    """
    settings = [s for s in series if s["setting"]]
    if sort_by is None:
        return settings[0]
    for s in series:
        if s["label"] == sort_by:
            return s
    name, _, source = str(sort_by).partition("@")
    try:
        name = xpe.method_name(*xpe.parse_method(name))
    except UsageError:
        pass  # no setting has that name: the error below lists those there are
    chosen = [s for s in settings if name_of(s["setting"]) == name and source in ("", s["setting"][2])]
    sources = sorted({s["setting"][2] for s in chosen})
    if len(sources) > 1:
        raise UsageError(f"{name} was trained on several sources ({', '.join(sources)}): sort by "
                         f"{' or '.join(f'{name}@{s}' for s in sources)}")
    if not chosen:
        there = list(dict.fromkeys(f"{name_of(s['setting'])}@{s['setting'][2]}" for s in settings))
        named = [s["label"] for s in series if not s["setting"]]
        raise UsageError(f"nothing to sort by named {sort_by!r}: name one of {', '.join(there)}"
                         + (f" or a baseline ({', '.join(named)})" if named else ""))
    zero_shot = [s for s in chosen if s["setting"][4] == "zero-shot"] or chosen
    if len(zero_shot) > 1:
        raise UsageError(f"{sort_by} names {len(zero_shot)} settings: sort by one of their labels "
                         f"({'; '.join(s['label'] for s in zero_shot)})")
    return zero_shot[0]


def check_figure(path, size):
    """The figure's path and size, before anything is scored; (width, height)."""
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
    if width > PLOT_MAX[0] or height > PLOT_MAX[1]:  # matplotlib refuses 2^16 pixels a side, after the scoring
        raise UsageError(f"a figure of {width}x{height} pixels is larger than {PLOT_MAX[0]}x{PLOT_MAX[1]}, which "
                         f"matplotlib draws: give a smaller --plot-size (default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})")
    try:
        import matplotlib  # noqa: F401 (first, so that a missing matplotlib is never hidden by a cached submodule)
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UsageError("the figure needs matplotlib: pip install matplotlib "
                         "(or pip install -r requirements-plot.txt)") from None
    return width, height


def figure_numbers(per_language, groups, sort_by=None, baselines=None):
    """(series, the series sorted by, panels, CSV rows): everything the figure shows, as numbers.

    panels: [(name, title, languages sorted by the key series, highest first)]; rows: PLOT_FIELDS.
    """
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
    rows = [dict(panel=name, position=i + 1, language=lang, series=s["label"],
                 accuracy=round(s["values"][lang], 6) if lang in s["values"] else "",
                 seeds=s["seeds"].get(lang, "") if s["setting"] else "")
            for name, _, langs in panels for i, lang in enumerate(langs) for s in series]
    return series, key, panels, rows


def figure_files(per_language, groups, path, size=PLOT_SIZE, sort_by=None, baselines=None):
    """{path: bytes} of the PNG and, beside it, its numbers (path with .csv); nothing is written."""
    path = Path(path)
    width, height = check_figure(path, size)
    series, key, panels, rows = figure_numbers(per_language, groups, sort_by, baselines)
    png = draw_png(series, key, panels, (width, height), provenance(per_language))
    return {path: png, path.with_suffix(".csv"): csv_text(PLOT_FIELDS, rows).encode("utf-8")}, rows


def plot_languages(per_language, groups, path, size=PLOT_SIZE, sort_by=None, baselines=None):
    """The paper's Figure 2: accuracy per target language, one series per setting and baseline.

    Two panels, the languages seen by XLM-R in pretraining and the unseen (groups["seen"],
    groups["unseen"]; one panel of all languages where groups lacks them), each sorted by the
    series sort_by names (sort_series), highest first. size: (width, height) of the PNG in pixels.
    baselines: {name shown in the legend: {language: accuracy in [0, 1]}}; missing languages are gaps.
    Writes path (.png) and, beside it, the plotted numbers as path with .csv (PLOT_FIELDS; accuracy in
    [0, 1], seeds: how many a setting's mean is over), each whole or not at all; returns those rows.
    """
    files, rows = figure_files(per_language, groups, path, size, sort_by, baselines)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for target, content in sorted(files.items(), key=lambda kv: kv[0].suffix != ".csv"):
        xpe.atomic_write(target, lambda tmp, content=content: Path(tmp).write_bytes(content))
    return rows


def draw_png(series, key, panels, size, caption):
    """The figure drawn from figure_numbers' series and panels: PNG bytes of size (width, height) pixels."""
    from matplotlib.ticker import PercentFormatter

    width = size[0]
    fig = blank_figure(size)
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
        f"{caption} · each point: the mean over a setting's seeds", max(40, int(width / 9))),
        fontsize=11)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), fontsize=10, frameon=False)
    return png_bytes(fig)


def blank_figure(size):
    """A matplotlib figure of size (width, height) pixels on an Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=((width + 0.5) / PLOT_DPI, (height + 0.5) / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig):
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=PLOT_DPI)
    return png.getvalue()


# ---- the report: every output file, in memory -----------------------------------------------------------

def for_tables(args, per_language):
    """The rows the tables, comparisons and figure are made from: per_language, or with --pool-code the rows with
    the training code pooled (pooled_code)."""
    return pooled_code(per_language) if args.pool_code else per_language


def check_rows(args, per_language):
    """The rows (or, before scoring, a row a run) against the flags, before anything is scored or written:
    unfinished runs unless --unfinished, two runs of one setting and seed, --compare and --plot-sort."""
    per_language = for_tables(args, per_language)
    unfinished = sorted(unfinished_runs(per_language).items())
    if unfinished and not args.unfinished:
        (run, why), more = unfinished[0], f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise UsageError(f"{run} is {why}{more}: leave it out, or give --unfinished to take it marked as such")
    by_setting(per_language)
    zero_shot = by_setting(r for r in per_language if r["mode"] == "zero-shot")
    for pair in args.compare or []:
        check_pair(zero_shot, *[m.strip() for m in pair.split(",")])
    for claim in args.claims or []:
        check_pair(zero_shot, claim["a"], claim["b"])
    if args.sweep:
        sweep_families(zero_shot, args.sweep)
    if args.plot and args.plot_sort:
        sort_series(plot_series(per_language), args.plot_sort)


def report(args, per_language, group_langs, groups, codes):
    """({file name in --out: text}, {figure path: bytes}, what to print): the whole set, nothing written."""
    if not per_language:
        raise UsageError(f"no run has a target language in {', '.join(group_langs)}: choose other --groups")
    files = {"per_language.csv": csv_text(LANGUAGE_FIELDS, per_language)}
    per_language = for_tables(args, per_language)
    tables, printed = table_outputs(args, per_language, group_langs, groups, codes)
    decisions, said = decision_outputs(args, per_language, group_langs)
    swept, pictures, shown = sweep_outputs(args, per_language, group_langs)
    if args.plot:
        columns = (args.plot_baselines or ("xlt_eng,gpt4" if args.baseline else "")).split(",")
        table = load_baselines()
        baselines = {f"SIB-200 {BASELINE_COLUMNS[c]}": {code: v[c] / 100 for code, v in table.items() if c in v}
                     for c in columns if c}
        pictures.update(figure_files(per_language, groups, args.plot, parse_size(args.plot_size),
                                     args.plot_sort, baselines)[0])
    return files | tables | decisions | swept, pictures, printed + said + shown


def table_outputs(args, per_language, group_langs, groups, codes):
    """per_group.csv and Tables 1-3 ({name: text}, [printed tables])."""
    files, printed = {}, []
    group_rows = summarise(per_language, group_langs)
    fields = GROUP_FIELDS
    if args.baseline:
        add_baselines(group_rows, load_baselines())
        fields = fields + list(BASELINE_COLUMNS) + ["baseline_languages"]
    files["per_group.csv"] = csv_text(fields, group_rows)
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    made = []
    if zero_shot:
        made.append(("table1", "Table 1: zero-shot accuracy (%) per target group and source, mean ± std over seeds "
                     "(n seeds) of each seed's mean over the row's languages",
                     zero_shot_table(zero_shot, group_langs, False), zero_shot))
    if zero_shot and args.baseline:
        made.append(("table2", "Table 2: ours (mean over seeds) beside SIB-200's published figures, both over the "
                     "languages of the row that SIB-200 has (XLM-R large fine-tuned in-language or on one language, "
                     "GPT zero-shot prompting)", zero_shot_table(zero_shot, group_langs, True), zero_shot))
    supervised = [r for r in per_language if r["mode"] == "supervised"]
    if supervised:
        specs = {name: data.resolve_languages(spec, groups, codes) for name, spec in SUPERVISED_GROUPS.items()
                 if all(part in groups for part in spec.split(","))}
        specs = specs or {"targets": sorted({r["language"] for r in supervised})}  # a groups file of one's own
        made.append(("table3", "Table 3: sequential full supervision, accuracy (%) on each target's own test split, "
                     "mean ± std over seeds (n seeds)", supervised_table(supervised, specs), supervised))
    for name, title, table, rows in made:
        table = finish_table(table, title, rows)
        files.update(table_files(name, table))
        printed.append(render_text(table))
    return files, printed


def decision_outputs(args, per_language, group_langs):
    """compare.csv, margins.csv and the claims' decisions ({name: text}, [printed])."""
    files, printed, compared = {}, [], []
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    for pair in args.compare or []:
        a, b = [m.strip() for m in pair.split(",")]
        rows = [r for r in compare(per_language, a, b, group_langs) if r["mean_diff"] is not None or
                r["left_out"]]  # a group of the source's own languages has nothing zero-shot to compare
        printed.append("\n".join([f"Paired difference {a} - {b} (accuracy points): per seed, the mean over the "
                                  f"group's languages; 95 % t-interval over seeds (none below "
                                  f"{MIN_SEEDS} seeds). {provenance(zero_shot)}",
                                  compare_text(rows)] + compare_notes(rows)))
        compared += rows
    if compared:
        files["compare.csv"] = csv_text(COMPARE_FIELDS, compared)
    if compared and args.margin:
        margins = margin_rows(compared, [m / 100 for m in args.margin])
        printed.append("\n".join([
            "Margins (accuracy points): whether each 95 % t-interval above rules out a difference of +M or more and "
            "of -M or less; 'no effect of M either way': it lies inside (-M, +M). Power: the chance that this many "
            "seeds, at the observed per-seed sd, give an interval that excludes 0 when the difference is M.",
            margin_text(margins)]))
        files["margins.csv"] = csv_text(MARGIN_FIELDS, margins)
    if args.claims:
        claimed = claim_rows(per_language, args.claims, group_langs)
        files["decisions.csv"], files["decisions.md"] = csv_text(CLAIM_FIELDS, claimed), claims_markdown(claimed)
        printed.append("Claims: each reported difference A - B against ours, paired by seed (95 % t-interval over "
                       "seeds); against 0 the verdict, against the reported difference whether the interval rules "
                       f"it out; power at the reported difference and the seeds {POWER:.0%} power would need at the "
                       f"observed per-seed sd. {provenance(zero_shot)}\n\n" + files["decisions.md"].rstrip())
    return files, printed


def sweep_outputs(args, per_language, group_langs):
    """sweep.csv and sweep.md ({name: text}), the sweep's figure and its numbers ({path: bytes}), [printed]."""
    if not args.sweep:
        return {}, {}, []
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    swept = sweep_rows(per_language, group_langs, args.sweep)
    files = {"sweep.csv": csv_text(SWEEP_FIELDS, swept), "sweep.md": sweep_markdown(swept)}
    pictures = {}
    if args.sweep_plot:
        png = Path(args.sweep_plot)
        pictures = {png: sweep_png(swept, parse_size(args.plot_size), provenance(zero_shot)),
                    png.with_suffix(".csv"): files["sweep.csv"].encode("utf-8")}
    return files, pictures, [f"Sweep of {args.sweep}. {provenance(zero_shot)}\n\n" + files["sweep.md"].rstrip()]


# ---- one set of outputs -------------------------------------------------------------------------------------

def digest(content):
    return hashlib.sha256(content).hexdigest()


def previous_set(out):
    """{path: sha256} of the files an earlier call wrote, as its manifest lists them, and unchanged since: the only
    files of --out a call removes when it does not write them again. Without a manifest, none."""
    try:
        listed = json.loads((out / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    stale = {}
    for name, sha in listed.items():
        path = (out / name).resolve()  # an absolute name stays itself
        try:
            if digest(path.read_bytes()) == sha:
                stale[path] = sha
        except OSError:
            pass
    return stale


def finish_pending(out):
    """Carry out the journal (PENDING) of a set being put in place: rename each file not yet renamed, remove the
    earlier set's files the new one does not hold (while unchanged), write the manifest, drop the journal. A call
    killed at any moment of this is finished so by the next call into the folder (or that reads a file of it),
    since every step can be taken again."""
    try:
        journal = json.loads((out / PENDING).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        raise UsageError(f"{out / PENDING}: an interrupted set's journal that cannot be read ({e}): move it and the "
                         f"folder's files aside, and evaluate again") from None
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one, the folder claims no whole set
    for path, tmp in journal["renames"]:
        if os.path.exists(tmp):
            os.replace(tmp, path)
    for path, sha in journal["stale"].items():
        try:
            if digest(Path(path).read_bytes()) == sha:
                os.unlink(path)
        except OSError:
            pass
    xpe.atomic_write_json(out / MANIFEST, journal["manifest"])
    (out / PENDING).unlink()
    return True


def write_outputs(out, files, argv):
    """Write files ({path: bytes}) as one set: each to a temporary name, then a journal of what is left to do
    (finish_pending), which puts them in place, removes the earlier set's files this call does not write and
    writes the manifest. A kill before the journal leaves the earlier set; after it, the next call finishes the new
    one."""
    out.mkdir(parents=True, exist_ok=True)
    finish_pending(out)
    temps = {}
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            temps[path] = tmp
        written = {p.resolve() for p in files}
        manifest = dict(written=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        command=" ".join(["python evaluate.py", *argv]),
                        files={os.path.relpath(p, out): digest(c) for p, c in files.items()})
        xpe.atomic_write_json(out / PENDING, dict(
            renames=[[str(p), tmp] for p, tmp in temps.items()], manifest=manifest,
            stale={str(p): sha for p, sha in previous_set(out).items() if p not in written}))
    except BaseException:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    finish_pending(out)


# ---- classify new text ------------------------------------------------------------------------------

def read_texts(source):
    """One text a line (split at \\n or \\r\\n only) from a UTF-8 file, or standard input for '-'."""
    name = "standard input" if source == "-" else source
    try:
        if source == "-":
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        else:
            raw = Path(source).read_bytes()
        text = raw.decode("utf-8-sig")  # a byte-order mark is no part of the first text
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--predict {name}: cannot read it ({type(e).__name__}: {e}); give a UTF-8 file with one "
                         f"text a line, or - for standard input") from None
    texts = text.split("\n")
    if texts and texts[-1] == "":
        texts.pop()  # the newline that ends the last line
    texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    if not texts:
        raise UsageError(f"--predict {name} is empty: give one text a line")
    blank = next((i for i, t in enumerate(texts, 1) if not t.strip()), None)
    if blank:
        raise UsageError(f"--predict {name}, line {blank} is blank: give one text a line, with no blank lines")
    return texts


def predict_texts(args, device):
    """--predict: CSV of text, label and one probability column per label (the run's order) on standard output."""
    found = find_runs(args.runs, note)
    if len(found) != 1:
        raise UsageError(f"--predict classifies with one run, got {len(found)}: name one run folder in --runs")
    texts = read_texts(args.predict)
    precision = xpe.resolve_precision(args.precision, device)
    backbone, tokenizer = xpe.load_backbone(read_run(found[0])["config"]["model"], device, precision)
    model, config = xpe.load_artifact(found[0], backbone)
    labels = config["labels"]
    probabilities = xpe.classify(model, tokenizer, texts, config["max_length"], args.batch_size, precision)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a field with a bare \r or \n is then quoted
    writer.writerow(["text", "label"] + labels)
    for text, p in zip(texts, probabilities.tolist()):
        writer.writerow([text, labels[max(range(len(p)), key=p.__getitem__)]] + [round(x, 6) for x in p])
    sys.stdout.write(buf.getvalue())
    note(f"{len(texts)} texts classified with {found[0]}")
    return 0


# ---- the command line --------------------------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="*", default=[], help="run folders or folders of runs (default: the newest in runs/)")
    p.add_argument("--scores", nargs="+", help="make the tables, figure and comparisons from earlier per_language.csv "
                                               "files instead of scoring runs (e.g. one per source, from a job array)")
    p.add_argument("--group", help="one target set: a group, codes, or a mix such as unseen-lowperf")
    p.add_argument("--groups", help=f"target groups, comma-separated (default {TABLE2_GROUPS}; with --groups-file, "
                                    f"the file's groups)")
    p.add_argument("--groups-file", help="language groups in the form of groups.json (default groups.json)")
    p.add_argument("--data-dir", help="local data laid out as DIR/<code>/test.tsv (default: SIB-200 from the hub)")
    p.add_argument("--out", default=None, help="folder for per_language.csv, per_group.csv, the tables and "
                                               "compare.csv, written as one set (default results)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per backbone pass, shared by the runs scored "
                                                               "together (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one)")
    p.add_argument("--precision", choices=xpe.PRECISIONS, default="auto",
                   help="of the backbone's passes: auto (bf16 on CUDA, fp32 on a CPU), fp32 or bf16 (default auto; "
                        + xpe.CPU_BF16 + ")")
    p.add_argument("--baseline", action="store_true",
                   help="Table 2: SIB-200's published figures over the same languages beside ours")
    p.add_argument("--compare", metavar="A,B", action="append",
                   help="paired zero-shot difference A - B per source and target group with a t-interval over "
                        "seeds and a verdict, e.g. xpe,spt or dual:0.7,spt; a side may name settings as the tables "
                        "label them, e.g. \"dual:0.7 lr_spt=5e-05\",spt; runs pair by source, backbone and seed, and "
                        "each row names what else differs; may be given again; to compare.csv")
    p.add_argument("--margin", metavar="M", action="append",
                   help="with --compare: differences in accuracy points (e.g. 1 or 2,3.1; may be given again) that "
                        "each interval is read against: whether it rules out +M or more and -M or less ('no effect "
                        "of M either way' when it lies inside (-M, +M)), the power its seeds had at M and the seeds "
                        "80 %% power would need at the observed per-seed sd; to margins.csv")
    p.add_argument("--claims", metavar="FILE.csv",
                   help="differences other studies reported, a line a,b,group,reported (accuracy points; a study "
                        "column optional), e.g. xpe,spt,lowperf,3.1: each decided by our paired seeds against 0 "
                        "(holds, fails, undecided) and against the reported difference (rules it out, or cannot), "
                        "with the power at it; the groups named are scored too; to decisions.csv and decisions.md")
    p.add_argument("--sweep", metavar="SETTING", help="a table of one setting's values (e.g. lr_prompt, from a "
                   "train.py call with --lr-prompt 5e-3,5e-4,5e-5): per value and target group the mean over seeds "
                   "with its 95 %% t-interval over seeds, the best in bold and its lead over the next, paired by seed; "
                   "to sweep.csv and sweep.md")
    p.add_argument("--sweep-plot", metavar="FILE.png", help="with --sweep: accuracy against the swept value, a panel "
                                                            "per target group, the interval as a band; its numbers to "
                                                            "FILE.csv (needs matplotlib)")
    p.add_argument("--unfinished", action="store_true", help="score runs that have not finished too, marked ‡")
    p.add_argument("--pool-code", action="store_true", help="runs whose settings differ only in the code that trained "
                                                            "them (its fingerprint) make one column, not one each; "
                                                            "the tables' note names the code versions pooled")
    p.add_argument("--plot", metavar="FILE.png", help="the paper's Figure 2: accuracy per language, seen and unseen "
                                                      "panels; its numbers go to FILE.csv (needs matplotlib)")
    p.add_argument("--plot-sort", metavar="METHOD[@SOURCE]",
                   help="order the figure's languages by this setting, highest first, e.g. dual:0.7 or "
                        "dual:0.7@joshi5, or a series' label (default: the first setting)")
    p.add_argument("--plot-size", default=f"{PLOT_SIZE[0]}x{PLOT_SIZE[1]}",
                   help=f"the figures' size in pixels (default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})")
    p.add_argument("--plot-baselines", help=f"baselines.csv columns drawn in the figure, comma-separated, from "
                                            f"{', '.join(BASELINE_COLUMNS)} (default with --baseline: xlt_eng,gpt4)")
    p.add_argument("--predict", metavar="FILE", help="classify the texts of FILE (one a line; - reads standard input) "
                                                     "with one run: CSV on standard output")
    return p


def mode_of(args, defaults):
    """predict or score; a flag given that belongs to the other mode is a UsageError."""
    mode = "predict" if args.predict is not None else "score"
    stray = [k for k, v in vars(args).items() if k != "runs" and k not in MODE_FLAGS[mode] and v != defaults[k]]
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UsageError(f"{flags} {'does' if len(stray) == 1 else 'do'} not go with "
                         f"{'--predict' if mode == 'predict' else 'scoring'}: leave {'it' if len(stray) == 1 else 'them'} out")
    return mode


def margin_list(text):
    """--margin's points: a number or a comma list of them, each above 0 and below 100."""
    try:
        points = [float(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--margin {text}: give accuracy points, e.g. --margin 2 or --margin 2,3.1") from None
    if not all(0 < p < 100 for p in points):  # also refuses nan and inf
        raise UsageError(f"--margin {text}: each margin is a difference in accuracy points above 0 and below 100")
    return points


def check_flags(args):
    """Everything about the flags that can be refused before an hour of scoring."""
    if args.group is not None and args.groups is not None:
        raise UsageError("give --group or --groups, not both")
    for flag, value in (("--group", args.group), ("--groups", args.groups)):
        if value is not None and not value.strip(" ,"):
            raise UsageError(f"{flag} is empty: name a group or language codes, e.g. {flag} lowperf")
    if args.scores and args.runs:
        raise UsageError("--scores tabulates earlier results and --runs scores runs: give one of them")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    args.margin = sorted({p for text in args.margin or [] for p in margin_list(text)})
    if args.margin and not args.compare:
        raise UsageError("--margin reads the intervals of --compare: give --compare A,B too")
    for given in args.compare or []:
        pair = [m.strip() for m in given.split(",")]
        if len(pair) != 2:
            raise UsageError(f"--compare takes two settings, A,B (e.g. xpe,spt), got {given!r}")
        for m in pair:
            parse_side(m)  # the grammar now; the pair against the runs' settings in check_rows
    args.claims_file, args.claims = args.claims, read_claims(args.claims) if args.claims is not None else None
    if args.sweep_plot and not args.sweep:
        raise UsageError("--sweep-plot draws the table of --sweep: give --sweep SETTING too")
    if args.sweep is not None:
        args.sweep = args.sweep.strip().replace("-", "_")
        if not args.sweep:
            raise UsageError("--sweep is empty: name the swept setting as config.json's settings do, e.g. lr_prompt")
    args.out = args.out or "results"
    xpe.check_writable(args.out, "--out")
    if args.claims and Path(args.claims_file).resolve() in {(Path(args.out) / name).resolve() for name in OUTPUT_FILES}:
        raise UsageError(f"--claims {args.claims_file} is a file evaluate.py writes into --out {args.out}: keep the "
                         f"claims elsewhere")
    if args.plot and args.sweep_plot and Path(args.plot).resolve() == Path(args.sweep_plot).resolve():
        raise UsageError("--plot and --sweep-plot name one file: give each its own")
    if args.plot:
        xpe.check_writable(args.plot, "--plot", "file")
        check_figure(args.plot, parse_size(args.plot_size))
    if args.sweep_plot:
        xpe.check_writable(args.sweep_plot, "--sweep-plot", "file")
        check_figure(args.sweep_plot, parse_size(args.plot_size))
    for column in (args.plot_baselines or "").split(","):
        if column and column not in BASELINE_COLUMNS:
            raise UsageError(f"--plot-baselines: unknown column {column!r}; use some of {', '.join(BASELINE_COLUMNS)}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args, defaults = p.parse_args(argv), vars(p.parse_args([]))
    start = time.time()
    try:
        mode = mode_of(args, defaults)
        device = xpe.pick_device(args.device)
        if mode == "predict":
            return predict_texts(args, device)
        check_flags(args)
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        specs = [args.group] if args.group else (args.groups.split(",") if args.groups else
                                                 list(groups) if args.groups_file else TABLE2_GROUPS.split(","))
        specs += [group for group in dict.fromkeys(c["group"] for c in args.claims or []) if group not in specs]
        group_langs = {spec: data.resolve_languages(spec, groups, codes) for spec in specs}
        if args.scores:
            per_language, found = read_scores(args.scores), None
            check_rows(args, per_language)
        else:
            per_language, found = score_runs(args, group_langs, device)
        files, pictures, printed = report(args, per_language, group_langs, groups, codes)
        out = Path(args.out)
        write_outputs(out, {out / name: text.encode("utf-8") for name, text in files.items()} | pictures, argv)
    except UsageError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    for text in printed:
        print(f"\n{text}")
    for png in (args.plot, args.sweep_plot):
        if png:
            note(f"figure written to {png}, its numbers to {Path(png).with_suffix('.csv')}")
    note(f"{len(per_language)} language results{f' from {len(found)} run(s)' if found else ''} in "
         f"{time.time() - start:.1f} s; written to {out}/ ({MANIFEST} lists the set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
