"""Accuracy per language from run artifacts; the paper's tables and figure; paired verdicts; predictions.

    python evaluate.py --runs runs/ --baseline                 # Tables 1 and 2 over the paper's target groups
    python evaluate.py --runs runs/ --compare xpe,spt --plot results/figure2.png
    python evaluate.py --scores results/per_language.csv --baseline    # the tables again, without scoring
    python evaluate.py --scores results/per_language.csv --claims claims.csv --sweep lr_prompt
    python evaluate.py --runs runs/xpe-joshi5-s1 --predict texts.txt > predictions.csv
    python evaluate.py --runs runs/ --curves results/curves.png   # training curves from the logs; nothing scored
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

Why the decisions (t-intervals, exact power, margins, claims decided with Holm, sweeps) stay in this file rather than
a module of their own: they are a stage of the one flow above, reading the group means it makes and feeding the
renderers and the one output set below them, and no other file uses them; a module of their own would import this
one's settings and rows and be imported back for its outputs, so the flow would cross a file twice. A file holds one
concern, however long: this one's is "from runs to the numbers a reader decides by".
"""
import csv
import hashlib
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from dataclasses import fields, replace
from datetime import datetime, timezone
from decimal import Decimal
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
MODE_FLAGS = {"predict": {"predict", "batch_size", "device", "precision", "unfinished"},
              "score": {"scores", "group", "groups", "groups_file", "data_dir", "out", "batch_size", "device",
                        "baseline", "compare", "margin", "claims", "sweep", "sweep_plot", "plot", "plot_sort", "plot_size",
                        "plot_baselines", "unfinished",
                        "precision", "pool_code", "curves"},
              "curves": {"curves", "plot_size"}}  # --curves alone draws the runs' logs: nothing is scored


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
    once = {}
    for run in runs:  # a run named twice, or named and inside a folder named, is scored once, and that is said
        if run.resolve() in once:
            note(f"{run} is given twice in --runs (or inside a folder given): it is scored once, as "
                 f"{once[run.resolve()]}")
        else:
            once[run.resolve()] = run
    return list(once.values())


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


def logged_step(cell):
    """A log.csv step cell as train.py writes it (train.STEP), else None."""
    try:
        step = train.STEP.read(cell or "")
    except ValueError:
        return None
    return step if train.STEP.holds(step) else None


def last_logged_step(run_dir):
    try:
        with open(Path(run_dir) / "log.csv", newline="") as f:
            reader = csv.DictReader(f)
            if column_twice(reader.fieldnames) is not None:  # not train.py's log: its step is not known
                return None
            steps = [step for r in reader for step in [logged_step(r.get("step"))] if step is not None]
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


def backbone_label(model):
    """A backbone as the outputs name it: a hub name as it is; a local folder, which a run records by its absolute
    path (train.model_key, so that it is scored from any folder), by its folder's name, so that no output records
    where a machine keeps it (its weights are told apart by backbone_weights in the settings)."""
    return Path(model).name if Path(model).is_absolute() else model


def run_row(run, lang, n, accuracy, precision):
    cfg = run["config"]
    return dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                source=cfg["source"], seed=cfg["seed"], backbone=backbone_label(cfg["model"]),
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
    untargeted = [run for run in found if not targets_of(run, languages)]
    if untargeted:
        run, more = untargeted[0], f" (and {len(untargeted) - 1} more runs)" if len(untargeted) > 1 else ""
        raise UsageError(f"{run['dir']}{more} was trained on every language of {', '.join(group_langs)}, so there is "
                         f"nothing to score it on zero-shot: choose target languages the runs were not trained on "
                         f"(--group/--groups), or leave it out of --runs")
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

MODES = ("zero-shot", "supervised")  # a row's mode: scored on a language the run did not train on, or did
ACCURACY = train.Values(float, 0, 1, why="a fraction, not a percentage")  # a row's, and a baseline's per language
# per_language.csv's columns, each with the values it takes (train.Values): a training setting's are TrainConfig's
LANGUAGE_COLUMNS = {
    "run": train.Values(str, filled=True, why="the run's folder"), "mode": train.Values(str, choices=MODES),
    **{key: train.values_of(key) for key in ("method", "xpe_frac", "source", "seed")},
    "backbone": train.Values(str, filled=True, why="the backbone's name"), "steps": train.values_of("steps"),
    "language": train.Values(str, filled=True, why="a language code"),
    "n": replace(train.COUNT, why="the rows scored"),
    "accuracy": ACCURACY,
    "precision": train.Values(str, choices=xpe.PRECISIONS[1:], why="the precision it was scored in"),
    "settings": train.TEXT, "ended": train.TEXT}  # the last two: a JSON object and a run's ending, read by typed_row
LANGUAGE_FIELDS = list(LANGUAGE_COLUMNS)
UNRECORDED = {"precision"}  # per_language.csv files from before a field was recorded lack it: read as empty
MAY_BE_EMPTY = {"steps", "precision", "settings", "ended"}  # files from before they were recorded
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
    """A recorded value as labels print it, reading back as itself (xpe.value_text)."""
    return xpe.value_text(v)


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
    table, runs, sources, trained = defaultdict(lambda: defaultdict(dict)), {}, {}, {}
    for r in per_language:
        setting = setting_of(r)
        if setting[5] not in trained:  # the languages a source was trained on: one name a set (one source)
            trained[setting[5]] = json.loads(setting[5]).get("source_languages") if setting[5] else None
        trained_on = trained[setting[5]]
        languages = json.dumps(trained_on) if isinstance(trained_on, list) and trained_on else None
        if languages and sources.setdefault(languages, r["source"]) != r["source"]:
            raise UsageError(f"the sources {sources[languages]} and {r['source']} are the same "
                             f"{len(trained_on)} languages ({r['run']}), so the tables would count them as two "
                             f"sources: evaluate them in separate calls, or train them with one --source")
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

def column_twice(fieldnames):
    """The first column a CSV header names twice, else None: csv.DictReader would keep only its last field."""
    names = [name.strip() if isinstance(name, str) else name for name in fieldnames or []]
    return next((name for i, name in enumerate(names) if name in names[:i]), None)


def _row_error(path, line, text):
    return UsageError(f"--scores {path}, line {line}: {text}")


def typed_row(r, path, line):
    """One per_language.csv row typed as scoring makes it (run_row); a cell out of its column's Values
    (LANGUAGE_COLUMNS) is a UsageError naming the line. MAY_BE_EMPTY may be empty."""
    row, imported = dict(r), r["ended"] == "imported"
    for key, values in LANGUAGE_COLUMNS.items():
        if key in MAY_BE_EMPTY and not r[key].strip():
            row[key] = ""
            continue
        try:
            row[key] = values.read(r[key])
        except ValueError:
            row[key] = None
        if not (values.holds(row[key]) or key == "steps" and train.recorded_holds(key, row[key], imported)):
            raise _row_error(path, line, f"{key} is {r[key][:40]!r}: it must be {values.words()}")
    try:
        xpe.split_prompt(row["method"], row["xpe_frac"])  # an xpe_frac that its method can have
        data.check_code(row["language"], "", "rename it")
        row["source"] = data.canonical_spec(row["source"])  # as train.py records it: one spelling a source
    except UsageError as e:
        raise _row_error(path, line, str(e)) from None
    try:
        settings = json.loads(row["settings"], object_pairs_hook=xpe.unique_keys) if row["settings"] else {}
    except ValueError as e:
        raise _row_error(path, line, f"settings {row['settings'][:40]!r} is not a JSON object (or empty): "
                                     f"{str(e)[:80]}") from None
    if not isinstance(settings, dict):
        raise _row_error(path, line, f"settings {row['settings'][:40]!r} is not a JSON object (or empty)")
    problem = train.recorded_problem(settings, imported)
    if problem:
        raise _row_error(path, line, f"settings' {problem[0]} is {json.dumps(problem[1])[:40]}: it must be "
                                     f"{problem[2]}")
    if row["settings"]:  # one spelling, as scoring writes it (settings_text): spaces or key order make no setting
        row["settings"] = json.dumps(settings, sort_keys=True, separators=(",", ":"))
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
                reader = csv.DictReader(f)
                found = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UsageError(f"--scores {path}: cannot read it ({type(e).__name__}: {e})") from None
        twice = column_twice(reader.fieldnames)
        if twice is not None:
            raise UsageError(f"--scores {path}, line 1: the column {twice!r} is in the header twice: give each "
                             f"column once")
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
        if column_twice(rows.fieldnames) is not None:
            raise UsageError(f"{path}: the column {column_twice(rows.fieldnames)!r} is in the header twice: give each "
                             f"column once")
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


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _chi_scale_density(u, df):
    """The density of U = sqrt(V / df), V chi-square on df degrees of freedom: the sample sd over the true one."""
    if u <= 0:
        return math.sqrt(2 / math.pi) if u == 0 and df == 1 else 0.0
    return math.exp(math.log(2) + df / 2 * math.log(df / 2) - math.lgamma(df / 2) + (df - 1) * math.log(u)
                    - df * u * u / 2)


def chi_scale_expectation(g, df, below=math.inf, tolerance=1e-11):
    """E[g(U); U < below] for U = sqrt(V / df), V ~ chi-square(df), g bounded by 1: adaptive Simpson over 48
    panels spanning U's mass (its mean 1 +- 12 of its sds, about 1 / sqrt(2 df)), each refined until two
    halves agree within its share of the tolerance."""
    spread = 12 / math.sqrt(2 * df)
    low, high = max(0.0, 1 - spread), min(below, 1 + spread + (8 if df < 3 else 0))  # df 1, 2: long right tails
    if high <= low:
        return 0.0
    f = lambda u: g(u) * _chi_scale_density(u, df)
    panels, total = 48, 0.0
    step = (high - low) / panels
    for i in range(panels):
        a, b = low + i * step, low + (i + 1) * step
        fa, fm, fb = f(a), f((a + b) / 2), f(b)
        stack = [(a, b, fa, fm, fb, (b - a) / 6 * (fa + 4 * fm + fb), tolerance / panels, 0)]
        while stack:
            a, b, fa, fm, fb, whole, tol, depth = stack.pop()
            m = (a + b) / 2
            flm, frm = f((a + m) / 2), f((m + b) / 2)
            left, right = (m - a) / 6 * (fa + 4 * flm + fm), (b - m) / 6 * (fm + 4 * frm + fb)
            if depth >= 40 or abs(left + right - whole) <= 15 * tol:
                total += left + right + (left + right - whole) / 15
            else:
                stack += [(a, m, fa, flm, fm, left, tol / 2, depth + 1), (m, b, fm, frm, fb, right, tol / 2, depth + 1)]
    return total


def nct_cdf(t, df, noncentrality):
    """P(T <= t) for the noncentral t, T = (Z + noncentrality) / sqrt(V / df): the mean over V ~ chi-square(df) of
    P(Z <= t sqrt(V / df) - noncentrality), integrated numerically (chi_scale_expectation) to about 1e-10."""
    return chi_scale_expectation(lambda u: normal_cdf(t * u - noncentrality), df)


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
        key = key.replace("-", "_")
        if key in picks:
            raise UsageError(f"--compare {text!r} names {key} twice ({picks[key]} and {value}): give each setting once")
        picks[key] = value
    return name, picks


def side_key(side):
    """A parsed side (parse_side) as one hashable value: two spellings of one side are equal."""
    name, picks = side
    return name, tuple(sorted(picks.items()))


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
    return {**{k: {**head, **row}[k] for k in COMPARE_FIELDS},
            "unrounded": dict(mean_diff=mean, sd=sd, ci_low=low, ci_high=high)}


def unrounded(row, key):
    """A row's number as computed, before its CSV's rounding to 6 decimals: what the printed tables round, once."""
    return row.get("unrounded", {}).get(key, row[key])


# ---- margins: what an interval rules out, and the seeds a decision would need ------------------------------

MARGIN_FIELDS = ["source", "backbone", "group", "a", "b", "margin", "languages", "n_seeds", "mean_diff", "ci_low",
                 "ci_high", "sd", "rules_out_plus", "rules_out_minus", "decision", "power", "seeds_for_power",
                 "p_plus_holm", "p_minus_holm", "power_within"]
POWER = 0.8


def holm(p_values):
    """Holm's adjusted p-values, in the order given: the k-th smallest of m times m - k + 1, never below the one
    before it, at most 1. Rejecting each hypothesis whose adjusted p is below alpha keeps the chance of rejecting
    any true one among the m at alpha, whatever their dependence."""
    adjusted, running, m = [None] * len(p_values), 0.0, len(p_values)
    for rank, i in enumerate(sorted(range(m), key=p_values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def nested_holm(tests):
    """Holm-adjusted p-values, in the order given, of tests [(family, p)] whose hypotheses are nested within a
    family (a difference of +M or more for several M: ruling out +1 rules out +2), so that a family counts once: the
    closed test with Bonferroni's test of each intersection. The intersection of a family's hypotheses is its
    strictest one, so the hardest intersection that holds a hypothesis pairs it with the largest p of each other
    family; Holm over that list decides it."""
    hardest = {}
    for family, p in tests:
        hardest[family] = max(p, hardest.get(family, 0.0))
    return [holm([p] + [q for other, q in hardest.items() if other != family])[0] for family, p in tests]


def t_test_p(mean, sd, n, value=0.0, side=0):
    """The p of a paired t-test of per-seed differences (their mean, sd and number n) against a true difference of
    value: side 0 two-sided, +1 that it is below value (small when the mean is far below), -1 above."""
    distance = mean - value
    if not sd:  # every seed alike: the data rule value out exactly when it is not their mean
        return float(distance == 0 or (side and (distance > 0) == (side > 0)))
    t = distance * math.sqrt(n) / sd
    return 2 * t_cdf(-abs(t), n - 1) if side == 0 else t_cdf(t if side > 0 else -t, n - 1)


def decision_of(plus, minus):
    """decision "within": +M and -M both ruled out, so no difference as large as M either way; "below": +M or more
    only; "above": -M or less only; "neither": neither side."""
    return "within" if plus and minus else "below" if plus else "above" if minus else "neither"


def power_at(margin, sd, n, level=LEVEL):
    """The chance that n seeds give an interval that excludes 0 (either way) when the true difference is margin
    and the per-seed sd is sd: the two-sided paired t-test's power, exact (the noncentral t on n - 1 df with
    noncentrality margin sqrt(n) / sd, nct_cdf's integral)."""
    if n < 2 or not sd:
        return None
    shift, critical = margin * math.sqrt(n) / sd, t_quantile(0.5 + level / 2, n - 1)
    both_tails = lambda u: normal_cdf(shift - critical * u) + normal_cdf(-shift - critical * u)
    return min(1.0, chi_scale_expectation(both_tails, n - 1))  # a chance: the quadrature's last 1e-12 not above 1


def within_power(margin, sd, n, level=LEVEL):
    """The chance of "within" M when the true difference is 0: that n seeds' interval lies inside (-M, +M), i.e.
    |mean| < M - t s / sqrt(n) (the two one-sided tests' power). Exact: at a sample sd s = sd U it is
    2 Phi(M sqrt(n) / sd - t U) - 1 where positive, averaged over U (chi_scale_expectation)."""
    if n < 2 or not sd:
        return None
    shift, critical = margin * math.sqrt(n) / sd, t_quantile(0.5 + level / 2, n - 1)
    return min(1.0, chi_scale_expectation(lambda u: 2 * normal_cdf(shift - critical * u) - 1, n - 1,
                                          below=shift / critical))


def seeds_for_power(margin, sd, power=POWER, level=LEVEL, most=10_000):
    """The fewest seeds (at least MIN_SEEDS) whose interval excludes 0 with the given power when the true
    difference is margin, at per-seed sd (power_at, exact, which grows with n); None beyond most."""
    if not sd:
        return None

    def enough(n):
        return power_at(margin, sd, n, level) >= power
    high = MIN_SEEDS
    while not enough(high):  # doubling, then halving: a few dozen integrals, not one a candidate n
        if high >= most:
            return None
        high = min(2 * high, most)
    low = max(MIN_SEEDS, high // 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return high


def power_of(row, size):
    """(power, seeds for POWER) of a compare row at a difference of size (> 0), from its sd as compare.csv writes
    it: the chance its seeds had to exclude 0 (power_at, unrounded), None without an interval; the seeds that
    would give POWER at its per-seed sd, None without one."""
    power = power_at(size, row["sd"], row["n_seeds"]) if row["ci_low"] is not None else None
    return power, seeds_for_power(size, row["sd"]) if row["sd"] else None


def from_points(points):
    """Accuracy points as a fraction, the decimal the user wrote divided exactly: 1.3 -> 0.013, not 1.3 / 100
    (0.013000000000000001), so that CSVs write it as given."""
    return float(Decimal(repr(float(points))) / 100)


def margin_rows(compared, margins):
    """MARGIN_FIELDS rows: each compare row with a per-seed sd, against each margin (a fraction, e.g. 0.02), decided
    as one table: each row's two one-sided t-tests (a difference of +M or more; of -M or less) at 2.5 % each, as
    the 95 % interval's two ends, Holm-adjusted over the table's differences and sides, the margins of one side of
    one difference nested (nested_holm; p_plus_holm, p_minus_holm). power: the
    chance of excluding 0 at a true difference of M; power_within: of "within" at a true 0 (each test alone,
    before Holm). Below MIN_SEEDS seeds, no decision, but the seeds a decision would need."""
    rows, tests = [], []
    for r in compared:
        if r["sd"] is None:
            continue
        mean, sd, n = r["mean_diff"], r["sd"], r["n_seeds"]  # as compare.csv writes them: recomputable from it
        for margin in margins:
            power, seeds = power_of(r, margin)
            within = within_power(margin, sd, n) if r["ci_low"] is not None else None
            row = {**{k: r[k] for k in ("source", "backbone", "group", "a", "b", "languages", "n_seeds", "mean_diff",
                                        "ci_low", "ci_high", "sd")},
                   "margin": margin, "rules_out_plus": "", "rules_out_minus": "", "decision": "too few seeds",
                   "power": None if power is None else round(power, 3), "seeds_for_power": seeds,
                   "p_plus_holm": None, "p_minus_holm": None,
                   "power_within": None if within is None else round(within, 3),
                   "unrounded": {**r.get("unrounded", {}), "power": power, "power_within": within}}
            if r["ci_low"] is not None:
                difference = tuple(r[k] for k in ("source", "backbone", "group", "a", "b"))
                tests += [(row, "plus", (difference, "plus"), t_test_p(mean, sd, n, margin, side=+1)),
                          (row, "minus", (difference, "minus"), t_test_p(mean, sd, n, -margin, side=-1))]
            rows.append(row)
    one_side = (1 - LEVEL) / 2
    for (row, side, _, _), adjusted in zip(tests, nested_holm([(family, p) for _, _, family, p in tests])):
        row[f"p_{side}_holm"], row[f"rules_out_{side}"] = round(adjusted, 6), "yes" if adjusted < one_side else "no"
    for row in rows:
        if row["rules_out_plus"]:
            row["decision"] = decision_of(row["rules_out_plus"] == "yes", row["rules_out_minus"] == "yes")
    return rows


def decision_text(decision, points):
    return {"within": f"no effect of {points:g} either way", "below": f"below +{points:g}",
            "above": f"above -{points:g}"}.get(decision, decision)


def aligned(header, lines):
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + lines)


def interval_text(row):
    """A row's 95 % interval in accuracy points, rounded once from the numbers as computed; "-" without one."""
    low, high = unrounded(row, "ci_low"), unrounded(row, "ci_high")
    return "-" if low is None else f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def chance_text(row, key):
    value = unrounded(row, key)
    return "-" if value is None else f"{value:.2f}"


def margin_text(rows):
    """margin_rows as an aligned table, in accuracy points."""
    header = ["source", "group", "A - B", "M (pp)", "95 % t-interval (pp)", "rules out +M", "rules out -M",
              "decision (Holm)", "seeds", "power to exclude 0 at M", f"seeds for {POWER:.0%} power",
              "P(within) at 0"]
    lines = [[r["source"], r["group"], f"{r['a']} - {r['b']}", f"{100 * r['margin']:g}", interval_text(r),
              r["rules_out_plus"] or "-", r["rules_out_minus"] or "-",
              decision_text(r["decision"], 100 * r["margin"]), r["n_seeds"], chance_text(r, "power"),
              "-" if r["seeds_for_power"] is None else r["seeds_for_power"], chance_text(r, "power_within")]
             for r in rows]
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
            r["group"], f"{r['a']} - {r['b']}", f"{100 * unrounded(r, 'mean_diff'):+.2f}" if known else "-",
            f"{100 * unrounded(r, 'sd'):.2f}" if r["sd"] is not None else "-", interval_text(r), r["verdict"],
            r["n_seeds"], r["wins"], r["ties"], r["losses"], r["languages"]])
    return aligned(header, lines)


def print_compare(rows):
    print(compare_text(rows))


# ---- claims: effects another study reported, decided against ours -----------------------------------------

SIDE = train.Values(str, filled=True, why="a setting, as --compare names one, e.g. xpe or dual:0.7")
POINTS = 100  # accuracy points: a difference of two accuracies lies strictly within ±100
MARGIN = train.Values(float, 0, POINTS, low_open=True, high_open=True, why="a difference in accuracy points, e.g. 2")
CLAIM_COLUMNS = {  # the columns of a --claims file with the values each takes; and study, optional: who reported it
    "a": SIDE, "b": SIDE, "group": train.Values(str, filled=True, why="a group or language codes, e.g. lowperf"),
    "reported": train.Values(float, -POINTS, POINTS, low_open=True, high_open=True,
                             why="the difference A - B another study found, in accuracy points, e.g. 3.1")}
CLAIM_FIELDS = ["study", "a", "b", "group", "reported", "source", "backbone", "setting_a", "setting_b", "differ",
                "languages", "wins", "ties", "losses", "n_seeds", "mean_diff", "ci_low", "ci_high", "sd", "verdict",
                "against_reported", "power", "seeds_for_power", "p_zero_holm", "p_reported_holm"]


def read_claims(path):
    """--claims: [{study, a, b, group, reported}] from a CSV of CLAIM_COLUMNS (a study column optional); reported is
    the difference A - B another study found, in accuracy points (kept as a fraction). Each side is parsed as
    --compare's are; anything else is a UsageError naming the line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--claims {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    reader = csv.DictReader(io.StringIO(text))
    twice = column_twice(reader.fieldnames)
    if twice is not None:
        raise UsageError(f"--claims {path} line 1: the column {twice!r} is in the header twice: give each column once")
    missing = [c for c in CLAIM_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"--claims {path} lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)}: give a CSV "
                         f"with the columns {','.join(CLAIM_COLUMNS)} (and study), e.g. xpe,spt,lowperf,3.1")
    claims, first_line = [], {}
    for line, r in enumerate(reader, 2):
        where = f"--claims {path} line {line}"
        if None in r or any(r[c] is None for c in CLAIM_COLUMNS):
            raise UsageError(f"{where}: give {len(reader.fieldnames)} fields, as the header names them")
        cells = {}
        for key, values in CLAIM_COLUMNS.items():
            try:
                cells[key] = values.read(r[key])
            except ValueError:
                cells[key] = None
            if not values.holds(cells[key]):
                raise UsageError(f"{where}: {key} is {r[key][:40]!r}: it must be {values.words()}")
        reported = cells["reported"]
        try:
            sides = tuple(side_key(parse_side(side)) for side in (r["a"], r["b"]))
            group = data.canonical_spec(r["group"])
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        study = (r.get("study") or "").strip()
        key, turned = (study, sides, group), (study, sides[::-1], group)
        if key in first_line or turned in first_line:  # b - a is a - b with its sign turned: the same claim
            raise UsageError(f"{where}: the claim {r['a'].strip()} - {r['b'].strip()} on {group}"
                             f"{' of ' + key[0] if key[0] else ''} again (first on line "
                             f"{first_line.get(key) or first_line[turned]}{'' if key in first_line else ', as b - a'}); "
                             f"a claim is decided once, so give it once")
        first_line[key] = line
        claims.append(dict(study=(r.get("study") or "").strip(), a=r["a"].strip(), b=r["b"].strip(),
                           group=group, reported=from_points(reported)))
    if not claims:
        raise UsageError(f"--claims {path} holds no claim: a line a,b,group,reported each, e.g. xpe,spt,lowperf,3.1")
    return claims


def against_reported(adjusted, mean, reported):
    """What A - B says of the reported difference at a Holm-adjusted p (claim_rows): "rules it out (below)" or
    "(above)" when the adjusted p is below 1 - LEVEL, on the side the mean lies, else "cannot rule it out"."""
    if adjusted >= 1 - LEVEL:
        return "cannot rule it out"
    return "rules it out (below)" if mean < reported else "rules it out (above)"


def claim_rows(per_language, claims, group_langs):
    """CLAIM_FIELDS rows: each claim's paired difference (compare) per source, decided as one table: against 0 (the
    verdict), Holm over the table's distinct differences, and against the reported difference, Holm over its
    claims; each a two-sided t-test at 5 % (p_zero_holm, p_reported_holm: Holm-adjusted p). Beside them the power
    the seeds had at the reported difference (each test alone) and the seeds 80 % power would need at the
    observed per-seed sd."""
    rows, compared = [], {}
    for c in claims:
        if (c["a"], c["b"]) not in compared:
            compared[c["a"], c["b"]] = compare(per_language, c["a"], c["b"], group_langs)
        for r in compared[c["a"], c["b"]]:
            if r["group"] != c["group"]:
                continue
            size = abs(c["reported"])
            power, seeds = power_of(r, size) if size else (None, None)
            rows.append({**c, **{k: r[k] for k in ("source", "backbone", "differ", "languages", "wins", "ties", "losses",
                                                   "n_seeds", "mean_diff", "ci_low", "ci_high", "sd", "verdict")},
                         "setting_a": r["a"], "setting_b": r["b"], "against_reported": r["verdict"],
                         "power": None if power is None else round(power, 3), "seeds_for_power": seeds,
                         "p_zero_holm": None, "p_reported_holm": None,
                         "unrounded": {**r.get("unrounded", {}), "power": power}})
    decided = [r for r in rows if r["ci_low"] is not None]
    test = lambda r, value: t_test_p(r["mean_diff"], r["sd"], r["n_seeds"], value)  # from the CSV's numbers
    differences = {tuple(r[k] for k in ("source", "backbone", "setting_a", "setting_b", "group")): r for r in decided}
    at_zero = dict(zip(differences, holm([test(r, 0.0) for r in differences.values()])))
    for r, adjusted in zip(decided, holm([test(r, r["reported"]) for r in decided])):
        zero = at_zero[tuple(r[k] for k in ("source", "backbone", "setting_a", "setting_b", "group"))]
        mean = r["mean_diff"]
        r.update(p_zero_holm=round(zero, 6), p_reported_holm=round(adjusted, 6),
                 verdict="undecided" if zero >= 1 - LEVEL else "holds" if mean > 0 else "fails",
                 against_reported=against_reported(adjusted, mean, r["reported"]))
    return rows


def p_text(p):
    return "" if p is None else f", Holm p {'< 0.001' if p < 0.001 else f'{p:.3f}'}"


def claims_markdown(rows):
    """claim_rows as a Markdown table, differences in accuracy points, each rounded once from its computed value."""
    pp = lambda x: "-" if x is None else f"{100 * x:+.2f}"
    lines = ["| claim | reported by | reported (pp) | source | here: A − B (pp) | 95 % t-interval over seeds (pp) "
             "| seeds | languages won / tied / lost | against 0 | against the reported | power at the reported "
             "| seeds for 80 % power |", "|" + " --- |" * 12]
    for r in rows:
        lines.append(f"| {r['setting_a']} − {r['setting_b']} on {r['group']} | {r['study'] or '-'} "
                     f"| {pp(r['reported'])} | {r['source']} | {pp(unrounded(r, 'mean_diff'))} | {interval_text(r)} "
                     f"| {r['n_seeds']} | {r['wins']} / {r['ties']} / {r['losses']} of {r['languages']} "
                     f"| **{r['verdict']}**{p_text(r['p_zero_holm'])} "
                     f"| **{r['against_reported']}**{p_text(r['p_reported_holm'])} | {chance_text(r, 'power')} "
                     f"| {r['seeds_for_power'] or '-'} |")
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
                rows.append({**{k: round(x, 6) if isinstance(x, float) and k not in ("value", "next") else x
                                for k, x in row.items()}, "unrounded": row})  # the swept values kept exact: they name rows
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
                text = "-" if r is None or r["mean"] is None else pct(unrounded(r, "mean")) + (
                    f" [{pct(unrounded(r, 'ci_low'))}, {pct(unrounded(r, 'ci_high'))}]" if r["ci_low"] is not None
                    else "") + f" ({r['seeds']})"
                cells.append(f"**{text}**" if r is not None and r["best"] else text)
            lines.append("| " + " | ".join([_value(v)] + cells) + " |")
        lines.append("")
        for r in rs:
            if r["best"] and r["next"] is not None:
                lead = "-" if r["lead"] is None else f"{100 * unrounded(r, 'lead'):+.2f} points" + (
                    f" [{100 * unrounded(r, 'lead_low'):+.2f}, {100 * unrounded(r, 'lead_high'):+.2f}]"
                    if r["lead_low"] is not None else "")
                lines.append(f"- {r['group']}: best {key} {_value(r['value'])}, {lead} over the next "
                             f"({_value(r['next'])}), paired by seed: {r['lead_verdict']} (per group, uncorrected)")
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
    size = re.fullmatch(r"([0-9]+)x([0-9]+)", str(text).strip().lower())  # ASCII: isdigit() takes "²", int() not
    if not size:
        raise UsageError(f"a figure size is WIDTHxHEIGHT in pixels, e.g. {PLOT_SIZE[0]}x{PLOT_SIZE[1]}; got {text!r}")
    return int(size[1]), int(size[2])


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
        outside = [lang for lang, v in values.items() if not ACCURACY.holds(v)]
        if outside:
            raise UsageError(f"baseline {name!r} has an accuracy that is not {ACCURACY.words()} ({outside[0]}: "
                             f"{values[outside[0]]}); divide percentages by 100")
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


def check_figure(path, size, drawing=True):
    """The figure's path and size, before anything is scored; (width, height). drawing: matplotlib must be there too
    (check_flags asks for it last, so that every other refusal is the same without it)."""
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
    if drawing:
        require_matplotlib()
    return width, height


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401 (first, so that a missing matplotlib is never hidden by a cached submodule)
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UsageError("the figure needs matplotlib: pip install matplotlib "
                         "(or pip install -r requirements-plot.txt)") from None


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
    return {path: png, numbers_path(path): csv_text(PLOT_FIELDS, rows).encode("utf-8")}, rows


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


def png_bytes(fig, metadata=None):
    """The PNG's bytes; metadata: text chunks to add ({key: text})."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=PLOT_DPI, **({"metadata": metadata} if metadata else {}))
    return png.getvalue()


CURVES_MARK = "xpe-curves-numbers-sha256"  # a --curves PNG's text chunk: the digest of the numbers written beside it


def png_text(path):
    """{keyword: text} of a PNG file's tEXt chunks; {} for a file that is no PNG or cannot be read."""
    try:
        content = Path(path).read_bytes()
    except OSError:
        return {}
    if not content.startswith(b"\x89PNG\r\n\x1a\n"):
        return {}
    texts, at = {}, 8
    while at + 8 <= len(content):
        size, kind = int.from_bytes(content[at:at + 4], "big"), content[at + 4:at + 8]
        if kind == b"tEXt":
            key, _, value = content[at + 8:at + 8 + size].partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + size
    return texts


def curves_pair_is_ours(png):
    """A --curves PNG and its numbers, both as a call wrote them: the PNG names the digest of the CSV it was drawn
    with, and of the CSV of ours it replaces (written after it: a kill between leaves that one beside it). --curves
    alone writes no set in --out, so this is how a later call knows the pair is its own to replace."""
    marks = png_text(png).get(CURVES_MARK, "").split()
    try:
        return bool(marks) and digest(numbers_path(png).read_bytes()) in marks
    except OSError:
        return False


# ==== training curves: the runs' log.csv against the step ========================================================
# curves_numbers reads each run's log.csv (train.LOG_FIELDS; a log from before a column was logged lacks it) into
# series: a run's own, and per setting of several seeds their mean with a band of one sd over seeds; curves_png
# draws them, a panel per column any run logged; curves_files gives the PNG and its numbers as a CSV.

CURVE_PANELS = {"train_loss": "training loss", "dev_loss": "dev loss", "dev_accuracy": "dev accuracy",
                "grad_norm": "gradient norm, all parts (before clipping)",
                **{f"grad_norm_{part}": f"gradient norm: {name}" for part, name in (
                    ("spt", "SPT part"), ("pseudo", "pseudo-prompts"), ("mlp", "MLP"), ("head", "head"))},
                **{f"param_norm_{part}": f"parameter norm: {name}" for part, name in (
                    ("spt", "SPT part"), ("pseudo", "pseudo-prompts"), ("mlp", "MLP"), ("head", "head"))},
                "prompt_row_norm": "static prompt: mean row norm"}
CURVE_FIELDS = ["panel", "series", "run", "seed", "step", "value", "runs", "sd"]


def read_log(run_dir):
    """A run's log.csv as rows {column: float or None} (None: empty, or a column its train.py did not log yet),
    in step order; [] where there is none (an imported adapter). A cell that is no number is a UsageError."""
    path = Path(run_dir) / "log.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} cannot be read ({type(e).__name__}): not a log train.py wrote") from None
    reader = csv.DictReader(io.StringIO(text))
    if "step" not in (reader.fieldnames or []):
        raise UsageError(f"{path} has no step column: not a log train.py wrote")
    rows = []
    for line, raw in enumerate(reader, 2):
        row = {"step": logged_step(raw.get("step"))}
        if row["step"] is None:
            raise UsageError(f"{path}, line {line}: step {raw.get('step')!r} is not a step ({train.STEP.words()}): "
                             f"not a log train.py wrote")
        for column in CURVE_PANELS:
            cell = (raw.get(column) or "").strip()
            try:  # a number as Python writes one: a loss may be nan where a run left its pack
                row[column] = train.Values(float).read(cell) if cell else None
            except ValueError:
                raise UsageError(f"{path}, line {line}: {column} {cell[:40]!r} is not a number: not a log train.py "
                                 f"wrote") from None
        rows.append(row)
    return sorted(rows, key=lambda r: r["step"])


def swept_key(settings):
    """The setting a sweep varies, or None: the one recorded setting (with those equal to it in every run) in which
    the settings differ, its values numbers."""
    recorded = {s: described(s) for s in settings}
    keys = sorted({k for d in recorded.values() for k in d})
    varied = [k for k in keys if len({json.dumps(d.get(k)) for d in recorded.values()}) > 1]
    for key in varied:
        values = [d.get(key) for d in recorded.values()]
        if (all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                and all(all(d.get(k) == d.get(key) for d in recorded.values()) for k in varied if k != key)):
            return key
    return None


def curves_numbers(runs):
    """(series, panels, swept setting or None, CSV rows) of the runs' logs. A series: label, setting, swept value
    (or None), runs [(run dir, seed, rows)] and, with several seeds, mean {panel: [(step, mean, sd, n)]}; panels: the
    columns any run logged, in CURVE_PANELS' order."""
    by_setting_seed, missing = defaultdict(dict), []
    for run in runs:
        rows = read_log(run["dir"])
        if not rows:
            missing.append(str(run["dir"]))
            continue
        setting = setting_of(run_row(run, run["only"], 0, 0.0, "")) + (run["only"],)
        seed = run["config"]["seed"]
        if seed in by_setting_seed[setting]:
            raise UsageError(f"{by_setting_seed[setting][seed][0]} and {run['dir']} are both {name_of(setting)} from "
                             f"{setting[2]} with seed {seed} and the same settings: one would hide the other in the "
                             f"means over seeds; draw them apart")
        by_setting_seed[setting][seed] = (str(run["dir"]), rows, str(run["ended"]).startswith("unfinished"))
    if missing:
        note(f"no log.csv, so no curves: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if not by_setting_seed:
        raise UsageError("no run of --runs has a log.csv to draw: train one with train.py")
    panels = [c for c in CURVE_PANELS if any(r[c] is not None for seeds in by_setting_seed.values()
                                            for _, rows, _ in seeds.values() for r in rows)]
    labels, key = setting_labels({s[:6]: None for s in by_setting_seed}), swept_key({s[:6] for s in by_setting_seed})
    series, out = [], []
    for setting in sorted(by_setting_seed, key=lambda s: (s[2], s[6], method_order(name_of(s)),
                                                        value_order(described(s).get(key, 0)), labels[s[:6]])):
        seeds = by_setting_seed[setting]
        label = labels[setting[:6]] + (f" → {setting[6]}" if setting[6] else f" ({setting[2]})") + \
            (" ‡ unfinished" if any(u for _, _, u in seeds.values()) else "")
        s = dict(label=label, setting=setting, value=described(setting).get(key) if key else None,
                 runs=[(d, seed, rows) for seed, (d, rows, _) in sorted(seeds.items())], mean={})
        for d, seed, rows in s["runs"]:
            out += [dict(panel=c, series=label, run=d, seed=seed, step=int(r["step"]), value=r[c], runs="", sd="")
                    for c in panels for r in rows if r[c] is not None]
        if len(seeds) > 1:
            for c in panels:
                at = defaultdict(list)
                for _, _, rows in s["runs"]:
                    for r in rows:
                        if r[c] is not None:
                            at[int(r["step"])].append(r[c])
                s["mean"][c] = [(step, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v))
                                for step, v in sorted(at.items())]
                out += [dict(panel=c, series=label, run="mean", seed="", step=step, value=round(m, 6),
                             runs=n, sd="" if sd is None else round(sd, 6)) for step, m, sd, n in s["mean"][c]]
        series.append(s)
    return series, panels, key, out


def curves_png(series, panels, key, size, caption, metadata=None):
    """The curves drawn: a panel per column, a thin line per run, and for a setting of several seeds its mean (bold)
    with a band of one sd over the seeds; a sweep's settings coloured by the swept value on one colour scale (the
    methods then by line style); PNG bytes of size (width, height) pixels."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    width = size[0]
    values = [s["value"] for s in series if s["value"] is not None]
    if key and values:
        log = min(values) > 0 and max(values) >= 10 * min(values)
        scale = (LogNorm if log else Normalize)(min(values), max(values))
        colour = {id(s): colormaps["viridis"](0.9 * scale(s["value"])) for s in series}  # 0.9: no pale yellow
    else:
        palette = colormaps["tab10"].colors
        colour = {id(s): palette[i % len(palette)] for i, s in enumerate(series)}
    styles = dict(zip(dict.fromkeys(name_of(s["setting"]) for s in series),  # by colour a setting, else a method
                      ["-", "--", ":", "-."] * 10 if key and values else ["-"] * len(series)))
    fig = blank_figure(size)
    columns = min(len(panels), 4)
    axes = fig.subplots(-(-len(panels) // columns), columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for s in series:
            style = dict(color=colour[id(s)], linestyle=styles[name_of(s["setting"])])
            several = bool(s["mean"])
            for i, (_, _, rows) in enumerate(s["runs"]):
                points = [(r["step"], r[panel]) for r in rows if r[panel] is not None]
                if points:
                    ax.plot(*zip(*points), linewidth=0.8 if several else 1.6, alpha=0.35 if several else 1.0,
                            label=None if several or i else s["label"], **style)
            if several and s["mean"].get(panel):
                steps, means, sds, _ = zip(*s["mean"][panel])
                ax.plot(steps, means, linewidth=2.2, label=f"{s['label']}, mean of {len(s['runs'])} seeds", **style)
                banded = [(x, m, sd) for x, m, sd in zip(steps, means, sds) if sd is not None]
                if banded:
                    xs, ms, sd = zip(*banded)
                    ax.fill_between(xs, [m - d for m, d in zip(ms, sd)], [m + d for m, d in zip(ms, sd)],
                                    color=style["color"], alpha=0.18, linewidth=0)
        if panel.startswith("grad_norm") and all(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            ax.set_yscale("log")  # gradient norms span orders of magnitude
        ax.set_title(CURVE_PANELS[panel], loc="left", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = {}, {}
    for ax in axes[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.suptitle("Training curves from log.csv\n" + textwrap.fill(
        f"{caption} · thin: a run; bold: the mean over a setting's seeds, band: ± one sd over them"
        + (f" · colour: {key}" if key and values else ""), max(40, int(width / 9))), fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 3),
               fontsize=9, frameon=False)
    return png_bytes(fig, metadata)


def write_figure(files):
    """--curves alone: the PNG, then its numbers ({path: bytes}), each whole or not at all (the PNG names both the
    new numbers and those it replaces: curves_pair_is_ours); no set in --out (a drawing of the logs replaces none of
    the tables there)."""
    for target, content in sorted(files.items(), key=lambda kv: kv[0].suffix == ".csv"):
        target.parent.mkdir(parents=True, exist_ok=True)
        xpe.atomic_write(target, lambda tmp, content=content: Path(tmp).write_bytes(content))


def curves_files(runs, path, size=PLOT_SIZE):
    """{path: bytes} of the curves' PNG and, beside it, their numbers (path with .csv); nothing is written."""
    path = Path(path)
    width, height = check_figure(path, size)
    series, panels, key, rows = curves_numbers(runs)
    seeds = sorted({seed for s in series for _, seed, _ in s["runs"]})
    caption = f"{sum(len(s['runs']) for s in series)} runs, seeds {seed_list(seeds)}"
    numbers = csv_text(CURVE_FIELDS, rows).encode("utf-8")
    marks = [digest(numbers)] + ([digest(numbers_path(path).read_bytes())] if curves_pair_is_ours(path) else [])
    png = curves_png(series, panels, key, (width, height), caption, {CURVES_MARK: " ".join(marks)})
    return {path: png, numbers_path(path): numbers}


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
                                  f"{MIN_SEEDS} seeds); each verdict is its row's alone, not corrected for the "
                                  f"number of rows. {provenance(zero_shot)}",
                                  compare_text(rows)] + compare_notes(rows)))
        compared += rows
    if compared:
        files["compare.csv"] = csv_text(COMPARE_FIELDS, compared)
    if compared and args.margin:
        margins = margin_rows(compared, [from_points(m) for m in args.margin])
        printed.append("\n".join([
            "Margins (accuracy points): whether each difference above rules out a difference of +M or more and of -M "
            "or less, by a one-sided t-test at 2.5 % each (as the 95 % interval's ends), decided as one table: Holm "
            "over its differences and sides, a side's margins nested so that they count once; 'no effect of M either "
            "way': both ruled out. Power, exact and of each test alone at the observed per-seed sd: to exclude 0 with "
            "this many seeds when the difference is M, and P(within) at 0, the chance of 'no effect of M either way' "
            "when the difference is 0.",
            margin_text(margins)]))
        files["margins.csv"] = csv_text(MARGIN_FIELDS, margins)
    if args.claims:
        claimed = claim_rows(per_language, args.claims, group_langs)
        files["decisions.csv"], files["decisions.md"] = csv_text(CLAIM_FIELDS, claimed), claims_markdown(claimed)
        printed.append("Claims: each reported difference A - B against ours, paired by seed (95 % t-interval over "
                       "seeds), decided as one table by two-sided t-tests at 5 %, Holm-adjusted: against 0 over its "
                       "distinct differences (the verdict), against the reported difference over its claims; power "
                       f"at the reported difference (exact, of one test alone) and the seeds {POWER:.0%} power would "
                       f"need at the observed per-seed sd. {provenance(zero_shot)}\n\n" + files["decisions.md"].rstrip())
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
                    numbers_path(png): files["sweep.csv"].encode("utf-8")}
    return files, pictures, [f"Sweep of {args.sweep}. {provenance(zero_shot)}\n\n" + files["sweep.md"].rstrip()]


# ---- one set of outputs -------------------------------------------------------------------------------------

def digest(content):
    return hashlib.sha256(content).hexdigest()


# Where a call writes is known before anything is scored (check_plan): the set's files in --out, each figure and
# its numbers. None of them may be an input of the call or another of its outputs, lie in a run's folder or the
# data, or replace a file that evaluate.py did not write: an existing file is replaced only where the manifest of
# --out lists it as it is (previous_set), as train.py only ever writes into a folder of its own.

def set_names(args):
    """The files of --out this call may write (which of table1 and table3 it does follows from the rows)."""
    names = {"per_language.csv", "per_group.csv", "table1.md", "table1.csv", "table3.md", "table3.csv"}
    for given, more in ((args.baseline, {"table2.md", "table2.csv"}), (args.compare, {"compare.csv"}),
                        (args.margin, {"margins.csv"}), (args.claims_file, {"decisions.csv", "decisions.md"}),
                        (args.sweep, {"sweep.csv", "sweep.md"})):
        names |= more if given else set()
    return [name for name in OUTPUT_FILES if name in names]


def curves_alone(args):
    """--curves with no flag of scoring: the runs' logs drawn, nothing scored, no set written into --out."""
    return getattr(args, "curves_alone", False)  # main sets it from mode_of


def numbers_path(png):
    """Where a figure's numbers go: beside it, FILE.csv."""
    return Path(png).with_suffix(".csv")


def planned_outputs(args):
    """[(what, path)]: every file the call may write, the manifest with them."""
    out = Path(args.out)
    planned = [] if curves_alone(args) else [(f"--out's {name}", out / name) for name in set_names(args) + [MANIFEST]]
    for flag, png in (("--plot", args.plot), ("--sweep-plot", args.sweep_plot), ("--curves", args.curves)):
        if png:
            planned += [(f"{flag} {png}", Path(png)), (f"the numbers of {flag} {png}", numbers_path(png))]
    return planned


def call_inputs(args):
    """[(what, path)]: the files the call reads, which it must never write over."""
    inputs = [(f"--scores {path}", Path(path)) for path in args.scores or []]
    inputs.append(("--groups-file", Path(args.groups_file)) if args.groups_file else ("groups.json", data.GROUPS_PATH))
    inputs.append(("baselines.csv", BASELINES_PATH))
    if args.claims_file:
        inputs.append((f"--claims {args.claims_file}", Path(args.claims_file)))
    return inputs


def path_key(path):
    """One key for the names of one file: resolved (links, ..) and case-folded, since a case-insensitive file system
    (macOS's, Windows') takes a.PNG and a.png for one file."""
    return str(Path(path).resolve()).casefold()


def one_file(a, b):
    try:
        return path_key(a) == path_key(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def rewritten_input(args, files):
    """The tables again in place (--scores results/per_language.csv, --out results): the set's per_language.csv may
    be a --scores file of the call, only where the call writes it again byte for byte (the rows of that file alone),
    so that it is left as it is (write_outputs writes no file that is there already as it would be)."""
    path = Path(args.out) / "per_language.csv"
    read = next((p for p in args.scores or [] if one_file(Path(p), path)), None)
    if read and path.read_bytes() != files["per_language.csv"].encode("utf-8"):
        raise UsageError(f"--scores {read} is the per_language.csv of --out {args.out}, which this call would write "
                         f"with other rows (those of every --scores file): write the set elsewhere (--out)")


def check_plan(args):
    """Every path the call writes against its inputs, each other, and what is there now; before anything is
    scored. An interrupted set in --out is finished first (or refused: finish_pending), so its manifest is current."""
    out = Path(args.out)
    if out.is_dir():
        finish_pending(out)
    planned = planned_outputs(args)
    for i, (what, path) in enumerate(planned):
        other = next((w for w, p in planned[:i] if one_file(p, path)), None)
        if other:
            raise UsageError(f"{other} and {what} are one file ({path}): give each output its own path")
        taken = next((w for w, p in call_inputs(args) if one_file(p, path)), None)
        if taken and not (taken.startswith("--scores") and path == out / "per_language.csv"):  # rewritten_input
            raise UsageError(f"{what} ({path}) is {taken}, which this call reads: write it elsewhere")
    data_dir = Path(args.data_dir).resolve() if args.data_dir else None
    ours = {path_key(p) for p in previous_set(out)} if out.is_dir() else set()
    manifest = read_manifest(out) if out.is_dir() else {}
    for what, path in planned:
        folder = path.parent
        if (folder / train.MARK).exists() or (folder / xpe.ARTIFACT_CONFIG).exists():
            raise UsageError(f"{what} ({path}) would go into {folder}, the folder of a run (or of a model), which "
                             f"holds that run alone: write it elsewhere")
        if data_dir and (path.resolve() == data_dir or data_dir in path.resolve().parents):
            raise UsageError(f"{what} ({path}) would go into --data-dir {args.data_dir}, which this call reads: "
                             f"write it elsewhere")
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir():
            raise UsageError(f"{what} ({path}) is a folder: name another path")
        if path.name == MANIFEST and path.parent == out and manifest is None:
            raise UsageError(f"{path} is not an {MANIFEST} that evaluate.py wrote, so it will not be replaced: move "
                             f"it aside or choose another --out")
        if path.name != MANIFEST and path_key(path) not in ours and not (
                args.curves and path_key(path) in {path_key(args.curves), path_key(numbers_path(args.curves))}
                and curves_pair_is_ours(args.curves)):
            raise UsageError(f"{what} ({path}) is a file that evaluate.py did not write (the {MANIFEST} of --out "
                             f"{out} does not list it as it is), so it will not be replaced: move it aside or "
                             f"choose another path")


def read_manifest(out):
    """The manifest of out as evaluate.py writes it ({"command": "python evaluate.py ...", "files": {name: sha256}});
    {} where out has none, None where its outputs.json is not one evaluate.py wrote."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    if (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
            and str(manifest.get("command", "")).startswith("python evaluate.py")):
        return manifest
    return None


def previous_set(out):
    """{path: sha256} of the files an earlier call wrote, as its manifest lists them, and unchanged since: the only
    files a call removes when it does not write them again, and the only ones it replaces. Without a manifest,
    none."""
    listed = (read_manifest(out) or {}).get("files", {})
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
    since every step can be taken again. Only to exactly the set the journal names: where a file of it is neither
    its temporary nor in place as written (a temporary removed since), the call is refused and nothing changes."""
    try:
        journal = json.loads((out / PENDING).read_text())
        renames, listed = [(path, tmp) for path, tmp in journal["renames"]], journal["manifest"]["files"]
        temps = {os.path.relpath(path, out): tmp for path, tmp in renames}
        shas, stale = {name: str(sha) for name, sha in listed.items()}, dict(journal["stale"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{out / PENDING}: an interrupted set's journal that cannot be read ({e}): move it and the "
                         f"folder's files aside, and evaluate again") from None
    for name, sha in shas.items():  # before anything changes: each file of the set is the one the call wrote
        path, tmp = out / name, temps.get(name, "")
        try:
            whole = digest(Path(tmp if tmp and os.path.exists(tmp) else path).read_bytes()) == sha
        except OSError:
            whole = False
        if not whole:
            raise UsageError(f"{out / PENDING}: the set an interrupted call was putting in place is no longer whole "
                             f"({path} is missing or not the file it wrote), so nothing was changed: remove "
                             f"{PENDING} to keep the folder as it is, and evaluate again")
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one, the folder claims no whole set
    for path, tmp in renames:
        if os.path.exists(tmp):
            os.replace(tmp, path)
    for path, sha in stale.items():
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
    out = out.absolute()  # the journal's paths hold from any working folder
    files = {path.absolute(): content for path, content in files.items()}
    out.mkdir(parents=True, exist_ok=True)
    finish_pending(out)
    temps = {}
    try:
        for path, content in files.items():
            if path.is_file() and path.read_bytes() == content:
                continue  # there as it would be written (rewritten_input): left alone, listed in the manifest
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.fchmod(fd, xpe.plain_mode())  # not mkstemp's 0600: the mode open() would give
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
    run = read_run(found[0])
    if run["ended"] not in FINISHED and not args.unfinished:
        raise UsageError(f"{found[0]} is {run['ended']}: classify with a finished run, or give --unfinished to take "
                         f"its best weights so far")
    precision = xpe.resolve_precision(args.precision, device)
    backbone, tokenizer = xpe.load_backbone(run["config"]["model"], device, precision)
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
    p = train.Parser(prog="evaluate.py", description=__doc__.split("\n")[0])
    path = train.path_text
    p.add_argument("--runs", nargs="*", type=path, default=[],
                   help="run folders or folders of runs (default: the newest in runs/)")
    p.add_argument("--scores", type=path, nargs="+",
                   help="make the tables, figure and comparisons from earlier per_language.csv "
                        "files instead of scoring runs (e.g. one per source, from a job array)")
    p.add_argument("--group", help="one target set: a group, codes, or a mix such as unseen-lowperf")
    p.add_argument("--groups", help=f"target groups, comma-separated (default {TABLE2_GROUPS}; with --groups-file, "
                                    f"the file's groups)")
    p.add_argument("--groups-file", type=path, help="language groups in the form of groups.json (default groups.json)")
    p.add_argument("--data-dir", type=path,
                   help="local data laid out as DIR/<code>/test.tsv (default: SIB-200 from the hub)")
    p.add_argument("--out", type=path, default=None, help="folder for per_language.csv, per_group.csv, the tables and "
                                               "compare.csv, written as one set (default results)")
    p.add_argument("--batch-size", type=train.value_type(train.COUNT), default=256,
                   help="rows per backbone pass, shared by the runs scored together (default 256)")
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
    p.add_argument("--claims", type=path, metavar="FILE.csv",
                   help="differences other studies reported, a line a,b,group,reported (accuracy points; a study "
                        "column optional), e.g. xpe,spt,lowperf,3.1: each decided by our paired seeds against 0 "
                        "(holds, fails, undecided) and against the reported difference (rules it out, or cannot), "
                        "with the power at it; the groups named are scored too; to decisions.csv and decisions.md")
    p.add_argument("--sweep", metavar="SETTING", help="a table of one setting's values (e.g. lr_prompt, from a "
                   "train.py call with --lr-prompt 5e-3,5e-4,5e-5): per value and target group the mean over seeds "
                   "with its 95 %% t-interval over seeds, the best in bold and its lead over the next, paired by seed; "
                   "to sweep.csv and sweep.md")
    p.add_argument("--sweep-plot", type=path, metavar="FILE.png",
                   help="with --sweep: accuracy against the swept value, a panel "
                        "per target group, the interval as a band; its numbers to "
                        "FILE.csv (needs matplotlib)")
    p.add_argument("--unfinished", action="store_true", help="score runs that have not finished too, marked ‡")
    p.add_argument("--pool-code", action="store_true", help="runs whose settings differ only in the code that trained "
                                                            "them (its fingerprint) make one column, not one each; "
                                                            "the tables' note names the code versions pooled")
    p.add_argument("--plot", type=path, metavar="FILE.png",
                   help="the paper's Figure 2: accuracy per language, seen and unseen "
                        "panels; its numbers go to FILE.csv (needs matplotlib)")
    p.add_argument("--curves", type=path, metavar="FILE.png",
                   help="training curves from the runs' log.csv: losses, dev accuracy and the norms against the step, "
                        "a line a run, a setting's seeds also as their mean with a band; its numbers go to FILE.csv "
                        "(needs matplotlib); with --runs alone, nothing is scored")
    p.add_argument("--plot-sort", metavar="METHOD[@SOURCE]",
                   help="order the figure's languages by this setting, highest first, e.g. dual:0.7 or "
                        "dual:0.7@joshi5, or a series' label (default: the first setting)")
    p.add_argument("--plot-size", default=f"{PLOT_SIZE[0]}x{PLOT_SIZE[1]}",
                   help=f"the figures' size in pixels (default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})")
    p.add_argument("--plot-baselines", help=f"baselines.csv columns drawn in the figure, comma-separated, from "
                                            f"{', '.join(BASELINE_COLUMNS)} (default with --baseline: xlt_eng,gpt4)")
    p.add_argument("--predict", type=path, metavar="FILE",
                   help="classify the texts of FILE (one a line; - reads standard input) "
                        "with one run: CSV on standard output")
    return p


def mode_of(args, defaults):
    """predict, curves (--curves with no flag of scoring) or score; a flag given that belongs to another mode is a
    UsageError, and so is a value out of range of a flag that every mode takes (checked here, where all pass)."""
    given = {k for k, v in vars(args).items() if k != "runs" and v != defaults[k]}
    mode = ("predict" if args.predict is not None else
            "curves" if args.curves and given <= MODE_FLAGS["curves"] else "score")
    stray = [k for k, v in vars(args).items() if k != "runs" and k not in MODE_FLAGS[mode] and v != defaults[k]]
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UsageError(f"{flags} {'does' if len(stray) == 1 else 'do'} not go with "
                         f"{'--predict' if mode == 'predict' else 'scoring'}: leave {'it' if len(stray) == 1 else 'them'} out")
    if not train.COUNT.holds(args.batch_size):  # rows a backbone pass: as train.py's --eval-batch-size
        raise UsageError(f"--batch-size must be {train.COUNT.words()}, got {args.batch_size}")
    return mode


def margin_list(text):
    """--margin's points: a number or a comma list of them, each of MARGIN."""
    try:
        points = [MARGIN.read(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"--margin {text}: give accuracy points, e.g. --margin 2 or --margin 2,3.1") from None
    if not all(MARGIN.holds(p) for p in points):
        raise UsageError(f"--margin {text}: each margin must be {MARGIN.words()}")
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
    margins = [p for text in args.margin or [] for p in margin_list(text)]
    twice = next((p for i, p in enumerate(margins) if p in margins[:i]), None)
    if twice is not None:
        raise UsageError(f"--margin names {twice:g} twice: give each margin once")
    args.margin = sorted(margins)
    if args.margin and not args.compare:
        raise UsageError("--margin reads the intervals of --compare: give --compare A,B too")
    pairs = {}
    for given in args.compare or []:
        pair = [m.strip() for m in given.split(",")]
        if len(pair) != 2:
            raise UsageError(f"--compare takes two settings, A,B (e.g. xpe,spt), got {given!r}")
        key = tuple(side_key(parse_side(m)) for m in pair)  # the grammar now; against the runs' settings in check_rows
        if key in pairs:  # B,A after A,B is asked for: the same rows with the sign turned
            raise UsageError(f"--compare {given} is given twice (first as {pairs[key]}): give each pair once")
        pairs[key] = given
    args.claims_file, args.claims = args.claims, read_claims(args.claims) if args.claims is not None else None
    if args.sweep_plot and not args.sweep:
        raise UsageError("--sweep-plot draws the table of --sweep: give --sweep SETTING too")
    if args.sweep is not None:
        args.sweep = args.sweep.strip().replace("-", "_")
        if not args.sweep:
            raise UsageError("--sweep is empty: name the swept setting as config.json's settings do, e.g. lr_prompt")
    args.out = args.out or "results"
    xpe.check_writable(args.out, "--out")
    if args.curves and args.scores:
        raise UsageError("--curves draws the runs' log.csv: give --runs, not --scores")
    if args.plot:
        xpe.check_writable(args.plot, "--plot", "file")
        check_figure(args.plot, parse_size(args.plot_size), drawing=False)
    if args.sweep_plot:
        xpe.check_writable(args.sweep_plot, "--sweep-plot", "file")
        check_figure(args.sweep_plot, parse_size(args.plot_size), drawing=False)
    if args.curves:
        xpe.check_writable(args.curves, "--curves", "file")
        check_figure(args.curves, parse_size(args.plot_size), drawing=False)
    for column in (args.plot_baselines or "").split(","):
        if column and column not in BASELINE_COLUMNS:
            raise UsageError(f"--plot-baselines: unknown column {column!r}; use some of {', '.join(BASELINE_COLUMNS)}")
    check_plan(args)
    if args.plot or args.sweep_plot or args.curves:
        require_matplotlib()  # last: every refusal above is the same without it (CI's venv pass has none)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args, defaults = p.parse_args(argv), vars(p.parse_args([]))
    start = time.time()
    try:
        mode = mode_of(args, defaults)
        args.curves_alone = mode == "curves"  # set after mode_of, which reads the flags alone
        device = xpe.pick_device(args.device)
        if mode == "predict":
            return predict_texts(args, device)
        check_flags(args)
        curves = curves_files([read_run(d) for d in find_runs(args.runs, note if mode == "curves" else lambda text: None)],
                              args.curves, parse_size(args.plot_size)) if args.curves else {}
        if mode == "curves":
            write_figure(curves)
            note(f"curves written to {args.curves}, their numbers to {numbers_path(args.curves)}")
            return 0
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        specs = ([data.canonical_spec(args.group)] if args.group else data.spec_items(args.groups) if args.groups
                 else list(groups) if args.groups_file else TABLE2_GROUPS.split(","))
        specs += [group for group in dict.fromkeys(c["group"] for c in args.claims or []) if group not in specs]
        group_langs = {spec: data.resolve_languages(spec, groups, codes) for spec in specs}
        if args.scores:
            per_language, found = read_scores(args.scores), None
            check_rows(args, per_language)
        else:
            per_language, found = score_runs(args, group_langs, device)
        files, pictures, printed = report(args, per_language, group_langs, groups, codes)
        rewritten_input(args, files)
        out = Path(args.out)
        write_outputs(out, {out / name: text.encode("utf-8") for name, text in files.items()} | pictures | curves,
                      argv)
    except UsageError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    for text in printed:
        print(f"\n{text}")
    for png in (args.plot, args.sweep_plot, args.curves):
        if png:
            note(f"figure written to {png}, its numbers to {numbers_path(png)}")
    note(f"{len(per_language)} language results{f' from {len(found)} run(s)' if found else ''} in "
         f"{time.time() - start:.1f} s; written to {out}/ ({MANIFEST} lists the set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
