"""Accuracy per language from run artifacts; the paper's tables and figure; paired verdicts; predictions.

    python evaluate.py --runs runs/ --baseline                 # Tables 1 and 2 over the paper's target groups
    python evaluate.py --runs runs/ --compare xpe,spt --plot results/figure2.png
    python evaluate.py --scores results/per_language.csv --baseline    # the tables again, without scoring
    python evaluate.py --runs runs/xpe-joshi5-s1 --predict texts.txt > predictions.csv
    python evaluate.py --runs runs/xpe-joshi5-s1 --export-peft peft/xpe-joshi5-s1

The data flows in layers: run folders or --scores -> per-language rows (score here, or
tables.read_scores) -> group means and tables as data (tables.py) -> paired verdicts (verdicts.py)
-> the figure (figure.py) -> one set of output files, written together (write_outputs).

Only the inference artifact of each run is used (static prompt + head on the backbone): no prompt
encoder. The backbone loads once; the test rows are tokenised once and run longest first in large
batches, every run that shares a max length and its target languages in the same backbone pass (each
run's prompt in front of its own copy of the batch). A source run is scored zero-shot on the target
languages it was not trained on; a target run (train.py --target) on its own language. A setting is
every training setting but the seed (tables.BOOKKEEPING lists what else is not the experiment).
"""
import argparse
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

import data
import figure
import peft_adapters
import tables
import verdicts
import xpe
from tables import BASELINE_COLUMNS
from xpe import UsageError

TABLE2_GROUPS = "lowperf,unseen,seen-wo-j5,all-wo-j5"
SUPERVISED_GROUPS = {"supervised-seen": "supervised-seen", "supervised-unseen": "supervised-unseen",
                     "supervised": "supervised-seen,supervised-unseen"}  # Table 3's rows
# The files evaluate.py writes into --out; with the figure they are one set (write_outputs).
OUTPUT_FILES = ["per_language.csv", "per_group.csv", "table1.md", "table1.csv", "table2.md", "table2.csv",
                "table3.md", "table3.csv", "compare.csv", "margins.csv"]
MANIFEST = "outputs.json"  # written last: which files make the set, with their sha256
# The flags of each mode besides --runs; a flag of another mode is refused.
MODE_FLAGS = {"predict": {"predict", "batch_size", "device", "precision"}, "export": {"export_peft"},
              "import": {"import_peft", "out", "labels", "model", "source", "seed", "groups_file", "data_dir"},
              "score": {"scores", "group", "groups", "groups_file", "data_dir", "out", "batch_size", "device",
                        "baseline", "compare", "margin", "plot", "plot_sort", "plot_size", "plot_baselines", "unfinished",
                        "precision"}}


def note(text):
    """Progress and notes go to standard error: standard output carries tables, or --predict's CSV alone."""
    print(text, file=sys.stderr)


# ---- run folders, as evaluation reads them (train.py writes them) ---------------------------------------

FINISHED = ("steps", "early", "imported")  # config.json's ended "why" of a finished run (imported: a PEFT adapter)


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
    try:
        config = json.loads((run_dir / xpe.ARTIFACT_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{run_dir}/config.json cannot be read as JSON ({e}): not written by train.py") from None
    missing = [k for k in ("model", "labels", "method", "xpe_frac", "max_length", "source", "seed") if k not in config]
    if missing:
        raise UsageError(f"{run_dir}/config.json lacks {', '.join(missing)}: not written by train.py")
    target = config.get("target") or ""
    run = dict(dir=run_dir, config=config, mode="supervised" if target else "zero-shot",
               trained=set(config.get("source_languages", [])) if not target else set(), only=target,
               settings=tables.settings_text(config.get("settings", {})))
    run["ended"] = run_end(run)
    return run


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


def preview_rows(runs, languages):
    """One per_language row a run (a made-up accuracy): what check_rows needs to know before scoring."""
    return [run_row(run, lang, 1, 0.0) for run in runs for lang in targets_of(run, languages)[:1]]


def run_row(run, lang, n, accuracy):
    cfg = run["config"]
    return dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                source=cfg["source"], seed=cfg["seed"], backbone=cfg["model"],
                steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=accuracy,
                settings=run["settings"], ended=run["ended"])


# ---- scoring: runs -> per-language rows ----------------------------------------------------------------

def score(runs, rows, backbone, tokenizer, batch_size, languages, precision="fp32"):
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
                per_language.append(run_row(run, lang, n, round(right / n, 6)))
    return per_language


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
    check_runs(found)
    check_rows(args, preview_rows(found, languages))
    for run in found:
        left_out = sorted(set(languages) & run["trained"])
        if left_out:
            note(f"{run['dir']}: left out of its zero-shot figures, trained on: {', '.join(left_out)}")
    # a target run is scored on its own language, whatever the groups
    languages = sorted(set(languages) | {run["only"] for run in found if run["only"]})
    rows = load_test_rows(found, languages, args.data_dir)
    backbone, tokenizer = xpe.load_backbone(found[0]["config"]["model"], device)
    precision = xpe.resolve_precision(args.precision, device)
    note(f"scoring in {precision} (--precision {args.precision}) on {device}")
    return score(found, rows, backbone, tokenizer, args.batch_size, languages, precision), found


def read_scores(args):
    rows = tables.read_scores(args.scores)
    check_rows(args, rows)
    return rows


# ---- the report: every output file, in memory -----------------------------------------------------------

def check_rows(args, per_language):
    """The rows (or, before scoring, a row a run) against the flags, before anything is scored or written:
    unfinished runs unless --unfinished, two runs of one setting and seed, --compare and --plot-sort."""
    unfinished = sorted(tables.unfinished_runs(per_language).items())
    if unfinished and not args.unfinished:
        (run, why), more = unfinished[0], f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise UsageError(f"{run} is {why}{more}: leave it out, or give --unfinished to take it marked as such")
    tables.by_setting(per_language)
    zero_shot = tables.by_setting(r for r in per_language if r["mode"] == "zero-shot")
    for pair in args.compare or []:
        verdicts.check_pair(zero_shot, *[m.strip() for m in pair.split(",")])
    if args.plot and args.plot_sort:
        figure.sort_series(figure.plot_series(per_language), args.plot_sort)


def report(args, per_language, group_langs, groups, codes):
    """({file name in --out: text}, {figure path: bytes}, what to print): the whole set, nothing written."""
    if not per_language:
        raise UsageError(f"no run has a target language in {', '.join(group_langs)}: choose other --groups")
    files, printed = {"per_language.csv": tables.csv_text(tables.LANGUAGE_FIELDS, per_language)}, []
    group_rows = tables.summarise(per_language, group_langs)
    fields = tables.GROUP_FIELDS
    if args.baseline:
        tables.add_baselines(group_rows, tables.load_baselines())
        fields = fields + list(BASELINE_COLUMNS) + ["baseline_languages"]
    files["per_group.csv"] = tables.csv_text(fields, group_rows)
    zero_shot = [r for r in per_language if r["mode"] == "zero-shot"]
    made = []
    if zero_shot:
        made.append(("table1", "Table 1: zero-shot accuracy (%) per target group and source, mean ± std over seeds "
                     "(n seeds) of each seed's mean over the row's languages",
                     tables.zero_shot_table(zero_shot, group_langs, False), zero_shot))
    if zero_shot and args.baseline:
        made.append(("table2", "Table 2: ours (mean over seeds) beside SIB-200's published figures, both over the "
                     "languages of the row that SIB-200 has (XLM-R large fine-tuned in-language or on one language, "
                     "GPT zero-shot prompting)", tables.zero_shot_table(zero_shot, group_langs, True), zero_shot))
    supervised = [r for r in per_language if r["mode"] == "supervised"]
    if supervised:
        specs = {name: data.resolve_languages(spec, groups, codes) for name, spec in SUPERVISED_GROUPS.items()
                 if all(part in groups for part in spec.split(","))}
        specs = specs or {"targets": sorted({r["language"] for r in supervised})}  # a groups file of one's own
        made.append(("table3", "Table 3: sequential full supervision, accuracy (%) on each target's own test split, "
                     "mean ± std over seeds (n seeds)", tables.supervised_table(supervised, specs), supervised))
    for name, title, table, rows in made:
        table = tables.finish_table(table, title, rows)
        files.update(tables.table_files(name, table))
        printed.append(tables.render_text(table))
    compared = []
    for pair in args.compare or []:
        a, b = [m.strip() for m in pair.split(",")]
        rows = [r for r in verdicts.compare(per_language, a, b, group_langs) if r["mean_diff"] is not None or
                r["left_out"]]  # a group of the source's own languages has nothing zero-shot to compare
        printed.append("\n".join([f"Paired difference {a} - {b} (accuracy points): per seed, the mean over the "
                                  f"group's languages; 95 % t-interval over seeds (none below "
                                  f"{verdicts.MIN_SEEDS} seeds). {tables.provenance(zero_shot)}",
                                  verdicts.compare_text(rows)] + verdicts.compare_notes(rows)))
        compared += rows
    if compared:
        files["compare.csv"] = tables.csv_text(verdicts.COMPARE_FIELDS, compared)
    if compared and args.margin:
        margins = verdicts.margin_rows(compared, [m / 100 for m in args.margin])
        printed.append("\n".join([
            "Margins (accuracy points): whether each 95 % t-interval above rules out a difference of +M or more and "
            "of -M or less; 'no effect of M either way': it lies inside (-M, +M). Power: the chance that this many "
            "seeds, at the observed per-seed sd, give an interval that excludes 0 when the difference is M.",
            verdicts.margin_text(margins)]))
        files["margins.csv"] = tables.csv_text(verdicts.MARGIN_FIELDS, margins)
    pictures = {}
    if args.plot:
        columns = (args.plot_baselines or ("xlt_eng,gpt4" if args.baseline else "")).split(",")
        table = tables.load_baselines()
        baselines = {f"SIB-200 {BASELINE_COLUMNS[c]}": {code: v[c] / 100 for code, v in table.items() if c in v}
                     for c in columns if c}
        pictures, _ = figure.figure_files(per_language, groups, args.plot, figure.parse_size(args.plot_size),
                                          args.plot_sort, baselines)
    return files, pictures, printed


# ---- one set of outputs -------------------------------------------------------------------------------------

def digest(content):
    return hashlib.sha256(content).hexdigest()


def previous_set(out):
    """The files an earlier call wrote, as its manifest lists them, and unchanged since: the only files of --out a
    call removes when it does not write them again. Without a manifest, none."""
    try:
        listed = json.loads((out / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    stale = set()
    for name, sha in listed.items():
        path = (out / name).resolve()  # an absolute name stays itself
        try:
            if digest(path.read_bytes()) == sha:
                stale.add(path)
        except OSError:
            pass
    return stale


def write_outputs(out, files, argv):
    """Write files ({path: bytes}) as one set: all to temporary names first, then renamed into place; the
    earlier set's files this call does not write are removed; the manifest names the set, last."""
    out.mkdir(parents=True, exist_ok=True)
    stale, temps = previous_set(out), {}
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            temps[path] = tmp
        if (out / MANIFEST).exists():  # from here until the new manifest, the folder says it holds no whole set
            (out / MANIFEST).unlink()
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    written = {p.resolve() for p in files}
    for path in stale - written:
        if path.is_file():
            path.unlink()
    manifest = dict(written=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    command=" ".join(["python evaluate.py", *argv]),
                    files={os.path.relpath(p, out): digest(c) for p, c in files.items()})
    xpe.atomic_write_json(out / MANIFEST, manifest)


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
    backbone, tokenizer = xpe.load_backbone(read_run(found[0])["config"]["model"], device)
    model, config = xpe.load_artifact(found[0], backbone)
    labels = config["labels"]
    precision = xpe.resolve_precision(args.precision, device)
    probabilities = xpe.classify(model, tokenizer, texts, config["max_length"], args.batch_size, precision)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; a field with a bare \r or \n is then quoted
    writer.writerow(["text", "label"] + labels)
    for text, p in zip(texts, probabilities.tolist()):
        writer.writerow([text, labels[max(range(len(p)), key=p.__getitem__)]] + [round(x, 6) for x in p])
    sys.stdout.write(buf.getvalue())
    note(f"{len(texts)} texts classified with {found[0]}")
    return 0


def export_main(args):
    """--export-peft: one run's artifact as a PEFT adapter; nothing is scored."""
    if len(args.runs) != 1:
        raise UsageError(f"--export-peft takes exactly one run in --runs, got {len(args.runs)}")
    found = find_runs(args.runs, note)
    if len(found) != 1:
        raise UsageError(f"--export-peft takes one run; {args.runs[0]} holds {len(found)}: name one of them")
    xpe.check_writable(args.export_peft, "--export-peft")
    adapter, num_labels = peft_adapters.export_peft(found[0], args.export_peft)
    print(f"wrote {found[0]} as a PEFT prompt-tuning adapter ({adapter['num_virtual_tokens']} virtual tokens, "
          f"{num_labels} labels) to {args.export_peft} ({', '.join(peft_adapters.EXPORT_FILES)}); load it with: "
          f"{peft_adapters.peft_load_line(adapter, num_labels, args.export_peft)}")
    return 0


def import_main(args):
    """--import-peft: a PEFT prompt adapter as a run folder (--out) that scoring, --predict and --export-peft take."""
    if args.runs:
        raise UsageError("--import-peft reads an adapter folder, not --runs: leave --runs out")
    if args.out is None:
        raise UsageError("--import-peft needs --out RUN_DIR: the run folder to write")
    source_languages = ()
    if args.source:
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        source_languages = data.resolve_languages(args.source, groups, codes)
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    out = peft_adapters.import_adapter(args.import_peft, args.out, labels=labels, model=args.model,
                                       source=args.source or "imported", source_languages=source_languages,
                                       seed=args.seed)
    print(f"wrote {args.import_peft} as the run {out}; score it with: python evaluate.py --runs {out}")
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
                                               "compare.csv, written as one set (default results); with "
                                               "--import-peft: the run folder to write")
    p.add_argument("--batch-size", type=int, default=256, help="rows per backbone pass, shared by the runs scored "
                                                               "together (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one)")
    p.add_argument("--precision", choices=xpe.PRECISIONS, default="auto",
                   help="of the backbone's passes: auto (bf16 on CUDA and on a CPU with native bf16 (AMX or "
                        "AVX512-BF16), fp32 elsewhere), fp32 or bf16 (default auto)")
    p.add_argument("--baseline", action="store_true",
                   help="Table 2: SIB-200's published figures over the same languages beside ours")
    p.add_argument("--compare", metavar="A,B", action="append",
                   help="paired zero-shot difference A - B per source and target group with a t-interval over "
                        "seeds and a verdict, e.g. xpe,spt or dual:0.7,spt; may be given again; to compare.csv")
    p.add_argument("--margin", metavar="M", action="append",
                   help="with --compare: differences in accuracy points (e.g. 1 or 2,3.1; may be given again) that "
                        "each interval is read against: whether it rules out +M or more and -M or less ('no effect "
                        "of M either way' when it lies inside (-M, +M)), the power its seeds had at M and the seeds "
                        "80 %% power would need at the observed per-seed sd; to margins.csv")
    p.add_argument("--unfinished", action="store_true", help="score runs that have not finished too, marked ‡")
    p.add_argument("--plot", metavar="FILE.png", help="the paper's Figure 2: accuracy per language, seen and unseen "
                                                      "panels; its numbers go to FILE.csv (needs matplotlib)")
    p.add_argument("--plot-sort", metavar="METHOD[@SOURCE]",
                   help="order the figure's languages by this setting, highest first, e.g. dual:0.7 or "
                        "dual:0.7@joshi5, or a series' label (default: the first setting)")
    p.add_argument("--plot-size", default=f"{figure.PLOT_SIZE[0]}x{figure.PLOT_SIZE[1]}",
                   help=f"the figure's size in pixels (default {figure.PLOT_SIZE[0]}x{figure.PLOT_SIZE[1]})")
    p.add_argument("--plot-baselines", help=f"baselines.csv columns drawn in the figure, comma-separated, from "
                                            f"{', '.join(BASELINE_COLUMNS)} (default with --baseline: xlt_eng,gpt4)")
    p.add_argument("--predict", metavar="FILE", help="classify the texts of FILE (one a line; - reads standard input) "
                                                     "with one run: CSV on standard output")
    p.add_argument("--export-peft", metavar="DIR", help="write one run as a PEFT prompt-tuning adapter that "
                                                        "peft.PeftModel.from_pretrained loads")
    p.add_argument("--import-peft", metavar="DIR", help="write a PEFT prompt-tuning or P-tuning adapter (or the "
                                                        "paper's authors' layout) as the run folder --out")
    p.add_argument("--labels", help="with --import-peft: the head's labels in order, comma-separated (default: the "
                                    "adapter's id2label)")
    p.add_argument("--model", help="with --import-peft: the backbone (default: the adapter's base_model_name_or_path)")
    p.add_argument("--source", help="with --import-peft: the languages it was trained on, a spec as train.py takes "
                                    "(default: none, every language is zero-shot)")
    p.add_argument("--seed", type=int, default=0, help="with --import-peft: the seed it was trained with (default 0)")
    return p


def mode_of(args, defaults):
    """predict, export or score; a flag given that belongs to another mode is a UsageError."""
    given = [flag for flag in ("predict", "export_peft", "import_peft") if getattr(args, flag) is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join('--' + g.replace('_', '-') for g in given)} are modes of their own: give one")
    mode = {"predict": "predict", "export_peft": "export", "import_peft": "import"}[given[0]] if given else "score"
    stray = [k for k, v in vars(args).items() if k != "runs" and k not in MODE_FLAGS[mode] and v != defaults[k]]
    if stray:
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UsageError(f"{flags} {'does' if len(stray) == 1 else 'do'} not go with "
                         f"{ {'predict': '--predict', 'export': '--export-peft', 'import': '--import-peft', 'score': 'scoring'}[mode]}: "
                         f"leave {'it' if len(stray) == 1 else 'them'} out")
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
            raise UsageError(f"--compare takes two methods, A,B (e.g. xpe,spt), got {given!r}")
        for m in pair:
            xpe.parse_method(m)  # the grammar now; the pair against the runs' settings in check_rows
    args.out = args.out or "results"
    xpe.check_writable(args.out, "--out")
    if args.plot:
        xpe.check_writable(args.plot, "--plot", "file")
        figure.check_figure(args.plot, figure.parse_size(args.plot_size))
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
        if mode == "export":
            return export_main(args)
        if mode == "import":
            return import_main(args)
        if mode == "predict":
            return predict_texts(args, device)
        check_flags(args)
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        specs = [args.group] if args.group else (args.groups.split(",") if args.groups else
                                                 list(groups) if args.groups_file else TABLE2_GROUPS.split(","))
        group_langs = {spec: data.resolve_languages(spec, groups, codes) for spec in specs}
        if args.scores:
            per_language, found = read_scores(args), None
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
    if pictures:
        note(f"figure written to {args.plot}, its numbers to {Path(args.plot).with_suffix('.csv')}")
    note(f"{len(per_language)} language results{f' from {len(found)} run(s)' if found else ''} in "
         f"{time.time() - start:.1f} s; written to {out}/ ({MANIFEST} lists the set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
