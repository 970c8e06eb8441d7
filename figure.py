"""Why this file: the paper's Figure 2, its numbers (one series per setting and baseline) apart from the drawing.

figure_numbers gives the series, panels and the rows of the figure's CSV; draw_png draws them with
matplotlib (an optional extra) into PNG bytes; plot_languages writes both, each whole or not at all.
"""
import io
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path

import xpe
from xpe import UsageError
from tables import by_setting, csv_text, name_of, provenance, setting_labels, \
    setting_of

# ---- Figure 2 ----------------------------------------------------------------------------------

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    width, height = size
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
        f"{caption} · each point: the mean over a setting's seeds", max(40, int(width / 9))),
        fontsize=11)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 8), fontsize=10, frameon=False)

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=PLOT_DPI)
    return png.getvalue()
