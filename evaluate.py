"""Zero-shot and supervised accuracy per language from run artifacts; group means over seeds; CSVs.

    python evaluate.py --group unseen                         # the newest run under runs/
    python evaluate.py --runs runs/ --groups lowperf,unseen,seen-wo-j5,all-wo-j5 --baseline

Only the inference artifact of each run is used (static prompt + head on the backbone): no prompt
encoder. The test split of every target language is tokenised once and run longest first in large
batches; the backbone loads once for all runs. A source run is scored zero-shot on the target
languages it was not trained on; a target run (train.py --target) is scored on its own language.
Per group: the plain mean over its languages for each run, then mean and standard deviation over
the seeds of one setting (method, fraction, source, backbone, mode).
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
BASELINES_PATH = Path(__file__).with_name("baselines.csv")
BASELINE_COLUMNS = {"xlmr_large": "XLM-R full FT", "xlt_eng": "XLM-R eng zero-shot"}
LANGUAGE_FIELDS = ["run", "mode", "method", "xpe_frac", "source", "seed", "backbone", "steps", "language", "n",
                   "accuracy"]
GROUP_FIELDS = ["method", "xpe_frac", "source", "backbone", "mode", "group", "languages", "seeds", "mean", "std"]


class UsageError(Exception):
    """Bad input from the user: one line, exit status 2."""


def method_name(method, xpe_frac):
    """A method as train.py --method writes it: spt, xpe, dual:0.7."""
    return f"dual:{float(xpe_frac):g}" if method == "dual" else method


@torch.inference_mode()
def predict(model, ids, pad_id, batch_size, device, progress=None):
    """Logits (float32, on the CPU) for token-id rows, in their original order.

    Rows are run longest first in large batches, so that padding stays small. progress: a bar title.
    """
    model.eval()
    order, chunks = [], []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    batches = data.eval_batches([len(x) for x in ids], batch_size)
    for indices in tqdm(batches, desc=progress, disable=progress is None, leave=False, dynamic_ncols=True):
        input_ids, mask = data.to_device(data.collate(ids, indices, pad_id), device)
        with autocast:
            chunks.append(model(input_ids, mask).float())
        order.extend(indices)
    logits = torch.cat(chunks).cpu()  # one copy back at the end: no sync per batch
    return logits[torch.argsort(torch.tensor(order))]


def find_runs(paths, runs_root=Path("runs")):
    """Run directories (with an artifact) named, or found one level under a named parent."""
    if not paths:
        candidates = sorted(runs_root.glob(f"*/{xpe.ARTIFACT_WEIGHTS}"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UsageError(f"no runs under {runs_root}/ to evaluate: train one (python train.py) or pass --runs DIR")
        print(f"evaluating the newest run: {candidates[-1].parent}")
        return [candidates[-1].parent]
    runs = []
    for path in map(Path, paths):
        if (path / xpe.ARTIFACT_CONFIG).is_file() and (path / xpe.ARTIFACT_WEIGHTS).is_file():
            runs.append(path)
        elif path.is_dir() and not (path / xpe.ARTIFACT_CONFIG).is_file():
            found = sorted(p.parent for p in path.glob(f"*/{xpe.ARTIFACT_WEIGHTS}"))
            if not found:
                raise UsageError(f"{path} is neither a run directory nor a folder of runs (no {xpe.ARTIFACT_WEIGHTS} "
                                 f"in it or one level below)")
            runs += found
        elif path.is_dir():
            raise UsageError(f"{path} holds no inference artifact ({xpe.ARTIFACT_WEIGHTS} is missing): "
                             f"the run has not reached its first evaluation")
        else:
            raise UsageError(f"{path} does not exist: pass run directories or a folder of runs to --runs")
    return list(dict.fromkeys(runs))


def read_run(run_dir):
    config = json.loads((run_dir / xpe.ARTIFACT_CONFIG).read_text())
    missing = [k for k in ("model", "method", "xpe_frac", "max_length", "source", "seed") if k not in config]
    if missing:
        raise UsageError(f"{run_dir}/config.json lacks {', '.join(missing)}: not written by train.py")
    target = config.get("target") or ""
    return dict(dir=run_dir, config=config, mode="supervised" if target else "zero-shot",
                trained=set(config.get("source_languages", [])) if not target else set(),
                only=target)


def load_baselines(path=BASELINES_PATH):
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {r["code"]: {k: float(r[k]) for k in BASELINE_COLUMNS if r[k]} for r in rows}


def summarise(per_language, group_langs):
    """Per-group rows: the mean over languages per run, then mean and std over the seeds of a setting."""
    by_setting = defaultdict(lambda: defaultdict(dict))  # setting -> seed -> language -> accuracy
    for r in per_language:
        setting = (r["method"], r["xpe_frac"], r["source"], r["backbone"], r["mode"])
        by_setting[setting][r["seed"]][r["language"]] = r["accuracy"]
    rows = []
    for setting, seeds in by_setting.items():
        for group, langs in group_langs.items():
            means, counts = [], set()
            for accuracies in seeds.values():
                values = [accuracies[lang] for lang in langs if lang in accuracies]
                if values:
                    means.append(statistics.fmean(values))
                    counts.add(len(values))
            if not means:
                continue
            std = statistics.stdev(means) if len(means) > 1 else 0.0
            rows.append(dict(zip(GROUP_FIELDS, (*setting[:4], setting[4], group,
                                                "-".join(map(str, sorted(counts))), len(means),
                                                round(statistics.fmean(means), 6), round(std, 6)))))
    return rows


def write_csv(path, fields, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def print_table(group_rows, groups, baselines=None):
    """Rows: target groups; columns: settings, as in the paper's Table 2 (accuracy %)."""
    settings = list(dict.fromkeys((r["method"], r["xpe_frac"], r["source"], r["mode"]) for r in group_rows))
    names = [f"{m}{'' if m != 'dual' else f'{float(x):g}'} {s}{' sup.' if mode == 'supervised' else ''}"
             for m, x, s, mode in settings]
    cells = {(r["group"], (r["method"], r["xpe_frac"], r["source"], r["mode"])):
             f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} ({r['seeds']})" for r in group_rows}
    header = ["group"] + names + (list(BASELINE_COLUMNS.values()) if baselines else [])
    lines = []
    for group in groups:
        line = [group] + [cells.get((group, s), "-") for s in settings]
        if baselines:
            line += [f"{100 * baselines[group][k]:.1f}" if k in baselines[group] else "-" for k in BASELINE_COLUMNS]
        lines.append(line)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    for row in [header] + lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


COMPARE_FIELDS = ["source", "backbone", "group", "a", "b", "seeds", "languages", "mean_diff", "ci_low", "ci_high",
                  "wins", "ties", "losses"]
TIE = 1e-9  # a per-language difference smaller than this is a tie


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


def by_setting(per_language):
    """{setting: {seed: {language: accuracy}}}; two runs of one seed in a setting are a UsageError."""
    table, runs = defaultdict(lambda: defaultdict(dict)), {}
    for r in per_language:
        setting = (r["method"], float(r["xpe_frac"]), r["source"], r["backbone"], r["mode"])
        key = (setting, r["seed"], r["language"])
        if runs.setdefault(key, r["run"]) != r["run"]:
            raise UsageError(f"{runs[key]} and {r['run']} are both {method_name(*setting[:2])} from {setting[2]} with "
                             f"seed {r['seed']}: pass only one of them to --runs")
        table[setting][r["seed"]][r["language"]] = float(r["accuracy"])
    return table


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


def plot_caption(per_language, series):
    """Which backbone, sources, seeds and steps the figure came from, in one line."""
    settings = [s["setting"] for s in series if s["setting"]]
    seeds, steps = defaultdict(set), set()
    for r in per_language:
        seeds[(r["method"], float(r["xpe_frac"]), r["source"], r["backbone"], r["mode"])].add(r["seed"])
        if r["steps"] not in ("", None):
            steps.add(r["steps"])
    sources = sorted({s[2] for s in settings})
    if len({frozenset(seeds[s]) for s in settings}) == 1:
        seed_text = f"seeds {seed_list(seeds[settings[0]])}"
    else:  # per source where its settings share their seeds, else per setting
        parts = []
        for source in sources:
            mine = [s for s in settings if s[2] == source]
            if len({frozenset(seeds[s]) for s in mine}) == 1:
                parts.append(f"{seed_list(seeds[mine[0]])} ({source})")
            else:
                parts += [f"{seed_list(seeds[s])} ({method_name(*s[:2])}, {source})" for s in mine]
        seed_text = "seeds " + "; ".join(parts)
    return " · ".join([f"backbone {settings[0][3]}", f"source{'s' if len(sources) > 1 else ''} {', '.join(sources)}",
                       seed_text, f"steps {', '.join(map(str, sorted(steps, key=float)))}" if steps else
                       "steps not recorded", "each point: the mean over a setting's seeds"])


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
        plot_caption(per_language, series), max(40, int(width / 9))), fontsize=11)
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


# Flags for the functions above, to wire into parse_args and main (their help texts):
#   --plot FILE.png      "the per-language figure (the paper's Figure 2): languages seen and unseen by XLM-R in two
#                         panels, one series per setting (mean over its seeds); the plotted numbers go to FILE.csv.
#                         Needs matplotlib: pip install -r requirements-plot.txt"
#   --plot-size WxH      f"the figure's size in pixels (default {PLOT_SIZE[0]}x{PLOT_SIZE[1]})"  -> parse_size
#   --plot-sort M[@SRC]  "order the languages by this setting's accuracy, highest first: spt, xpe or dual:0.7, with
#                         @SOURCE where several sources are plotted (dual:0.7@joshi5), or a baseline's name
#                         (default: the first setting)"
#   --compare A,B        "paired zero-shot difference A - B per source and target group, e.g. xpe,spt or dual:0.7,spt:
#                         mean over the (seed, language) pairs both have, 95 % bootstrap interval over seeds and
#                         languages, and the languages A wins, ties and loses"  -> compare, print_compare, COMPARE_FIELDS
#   --resamples N        "bootstrap resamples of --compare (default 10000)"
# --baseline with --plot: the columns of baselines.csv (percent, by code) as plot_languages takes them:
#   {name: {code: row[column] / 100 for code, row in load_baselines().items() if column in row}
#    for column, name in BASELINE_COLUMNS.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="*", default=[], help="run directories or folders of runs (default: newest in runs/)")
    p.add_argument("--group", help="one target set: a group, codes, or a mix (see data.py)")
    p.add_argument("--groups", help=f"several target groups, comma-separated (default {TABLE2_GROUPS})")
    p.add_argument("--data-dir", help="local SIB-200 copy (default: the hub)")
    p.add_argument("--out", default="results", help="folder for per_language.csv and per_group.csv")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--baseline", action="store_true", help="add SIB-200's published XLM-R large figures per group")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        if args.group and args.groups:
            raise UsageError("give --group or --groups, not both")
        specs = [args.group] if args.group else (args.groups or TABLE2_GROUPS).split(",")
        group_langs = {spec: data.resolve_languages(spec) for spec in specs}
        runs = [read_run(d) for d in find_runs(args.runs)]
        backbones = sorted({r["config"]["model"] for r in runs})
        if len(backbones) > 1:
            raise UsageError(f"runs from different backbones ({', '.join(backbones)}): evaluate them in separate calls")
        if args.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
        languages = sorted(set().union(*group_langs.values()))
        rows = data.load_split(languages, "test", args.data_dir)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        backbone, tokenizer = xpe.load_backbone(backbones[0], device)
        models = [xpe.load_artifact(r["dir"], backbone)[0] for r in runs]
    except (UsageError, ValueError) as e:  # data.DataError and xpe's errors are ValueErrors
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2

    labels = torch.tensor([r.label for r in rows])
    row_langs = [r.lang for r in rows]
    encoded = {}  # max_length -> token ids: tokenised once per distinct setting
    per_language = []
    for run, model in zip(runs, models):
        cfg = run["config"]
        keep = [lang for lang in languages if lang not in run["trained"] and (not run["only"] or lang == run["only"])]
        left_out = sorted(set(languages) & run["trained"])
        if left_out:
            print(f"{run['dir']}: left out of its zero-shot figures, trained on: {', '.join(left_out)}")
        if not keep:
            print(f"{run['dir']}: no target language of it in {', '.join(specs)}")
            continue
        if cfg["max_length"] not in encoded:
            encoded[cfg["max_length"]] = data.encode(rows, tokenizer, cfg["max_length"])
        wanted = set(keep)
        index = [i for i, lang in enumerate(row_langs) if lang in wanted]
        ids = [encoded[cfg["max_length"]][i] for i in index]
        logits = predict(model, ids, tokenizer.pad_token_id, args.batch_size, device, progress=run["dir"].name)
        correct = logits.argmax(-1) == labels[index]
        totals = defaultdict(lambda: [0, 0])
        for i, ok in zip(index, correct.tolist()):
            totals[row_langs[i]][0] += ok
            totals[row_langs[i]][1] += 1
        for lang in keep:
            right, n = totals[lang]
            per_language.append(dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"],
                                     xpe_frac=cfg["xpe_frac"], source=cfg["source"], seed=cfg["seed"],
                                     backbone=cfg["model"], steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=round(right / n, 6)))

    group_rows, group_fields, baselines = summarise(per_language, group_langs), GROUP_FIELDS, None
    if args.baseline:
        table = load_baselines()
        baselines = {g: {k: statistics.fmean(v) / 100 for k in BASELINE_COLUMNS
                         if (v := [table[lang][k] for lang in langs if k in table.get(lang, {})])}
                     for g, langs in group_langs.items()}
        group_fields = GROUP_FIELDS + list(BASELINE_COLUMNS)
        for row in group_rows:
            row.update({k: round(baselines[row["group"]].get(k, float("nan")), 6) for k in BASELINE_COLUMNS})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "per_language.csv", LANGUAGE_FIELDS, per_language)
    write_csv(out / "per_group.csv", group_fields, group_rows)
    print_table(group_rows, specs, baselines)
    print(f"{len(per_language)} language results from {len(runs)} run(s) in {time.time() - start:.1f} s; "
          f"written to {out}/per_language.csv and {out}/per_group.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
