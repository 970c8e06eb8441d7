"""Tables and figures from per-language results: verdicts.compare and figure.plot_languages.

per_language rows are built by hand here (no training, no model): fast.
"""
import csv
import json
import statistics
import random
import sys
import time

import pytest

import data
import evaluate
import figure
import tables
import verdicts
import xpe

SEEN, UNSEEN = ["afr_Latn", "deu_Latn", "hin_Deva"], ["kab_Latn", "nqo_Nkoo", "tum_Latn"]
GROUPS = {"seen": SEEN, "unseen": UNSEEN}


def results(method, accuracies, seeds=(1, 2, 3), source="joshi5", xpe_frac=None, mode="zero-shot",
            backbone="xlm-roberta-large", steps=2000, n=204):
    """per_language rows as evaluate.main builds them. accuracies: {language: accuracy} or f(seed, language)."""
    frac = {"spt": 0.0, "xpe": 1.0}.get(method, xpe_frac)
    rows = []
    for seed in seeds:
        for lang in (accuracies if isinstance(accuracies, dict) else accuracies.languages):
            accuracy = accuracies[lang] if isinstance(accuracies, dict) else accuracies(seed, lang)
            rows.append(dict(run=f"runs/{method}{'' if method != 'dual' else frac}-{source}-s{seed}", mode=mode,
                             method=method, xpe_frac=frac, source=source, seed=seed, backbone=backbone, steps=steps,
                             language=lang, n=n, accuracy=accuracy))
    return rows


def noisy(languages, base=0.6, bonus=0.0, rng_seed=0):
    """f(seed, language): a fixed pseudo-random accuracy per (seed, language), plus bonus."""
    rng = random.Random(rng_seed)
    table = {(s, lang): min(1.0, max(0.0, base + rng.uniform(-0.3, 0.3))) for s in range(20) for lang in languages}

    def f(seed, lang):
        return table[seed, lang] + bonus
    f.languages = list(languages)
    return f


def one_line_usage_error(excinfo):
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# compare ------------------------------------------------------------------------------------------------------------

def t_975(df):
    """Student's t 0.975 quantile in closed form (df 1, 2 and 4), independent of verdicts.t_quantile."""
    import math
    p = 0.975
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if df == 4:
        alpha = 4 * p * (1 - p)
        q = math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha)
        return 2 * math.sqrt(q - 1)
    raise ValueError(df)


def per_seed_differences(rows, a, b, langs):
    by = {}
    for r in rows:
        by[r["method"], r["xpe_frac"], r["seed"], r["language"]] = r["accuracy"]
    (ma, fa), (mb, fb) = xpe.parse_method(a), xpe.parse_method(b)
    seeds = sorted({r["seed"] for r in rows})
    return [statistics.fmean(by[ma, fa, s, lang] - by[mb, fb, s, lang] for lang in langs) for s in seeds]


def test_t_quantile_matches_closed_forms_and_the_normal_limit():
    for df in (1, 2, 4):
        assert verdicts.t_quantile(0.975, df) == pytest.approx(t_975(df), rel=1e-9)
    assert verdicts.t_quantile(0.975, 100000) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), rel=1e-4)
    assert verdicts.t_cdf(verdicts.t_quantile(0.9, 7), 7) == pytest.approx(0.9, abs=1e-12)


def test_compare_a_method_with_itself_is_refused():
    rows = results("xpe", noisy(SEEN)) + results("spt", noisy(SEEN))
    with pytest.raises(xpe.UsageError) as excinfo:
        verdicts.compare(rows, "xpe", "xpe", {"all": SEEN})
    assert "with itself" in one_line_usage_error(excinfo)


def test_two_seeds_are_too_few_seeds_and_give_no_interval():
    langs = SEEN + UNSEEN
    rows = results("xpe", noisy(langs, bonus=0.05), seeds=(1, 2)) + results("spt", noisy(langs), seeds=(1, 2))
    (row,) = verdicts.compare(rows, "xpe", "spt", {"all": langs})
    assert row["verdict"] == "too few seeds" and row["ci_low"] is None and row["ci_high"] is None
    assert row["n_seeds"] == 2 and row["mean_diff"] == pytest.approx(0.05, abs=1e-9)
    d = per_seed_differences(rows, "xpe", "spt", langs)
    assert row["sd"] == pytest.approx(statistics.stdev(d), abs=1e-6)


@pytest.mark.parametrize("seeds", [(1, 2, 3), (1, 2, 3, 4, 5)])
def test_three_or_more_seeds_give_the_t_interval_of_the_per_seed_differences(seeds):
    langs = SEEN + UNSEEN
    rows = (results("dual", noisy(langs, bonus=0.01, rng_seed=4), seeds=seeds, xpe_frac=0.7)
            + results("spt", noisy(langs, rng_seed=5), seeds=seeds))
    (row,) = verdicts.compare(rows, "dual:0.7", "spt", {"all": langs})
    d = per_seed_differences(rows, "dual:0.7", "spt", langs)
    n, mean, sd = len(d), statistics.fmean(d), statistics.stdev(d)
    half = t_975(n - 1) * sd / n ** 0.5
    assert (row["n_seeds"], row["seeds"]) == (n, " ".join(map(str, seeds)))
    assert row["mean_diff"] == pytest.approx(mean, abs=1e-6) and row["sd"] == pytest.approx(sd, abs=1e-6)
    assert row["ci_low"] == pytest.approx(mean - half, abs=1e-6)
    assert row["ci_high"] == pytest.approx(mean + half, abs=1e-6)
    expected = "holds" if mean - half > 0 else "fails" if mean + half < 0 else "undecided"
    assert row["verdict"] == expected


def test_verdicts_hold_fail_and_stay_undecided():
    flat = results("spt", {lang: 0.5 for lang in SEEN}, seeds=(1, 2, 3))
    for shift, verdict in (({1: 0.02, 2: 0.03, 3: 0.025}, "holds"), ({1: -0.02, 2: -0.03, 3: -0.025}, "fails"),
                           ({1: 0.05, 2: -0.04, 3: 0.0}, "undecided")):
        xpe_rows = results("xpe", _lambda_langs(lambda s, lang, shift=shift: 0.5 + shift[s], SEEN), seeds=(1, 2, 3))
        (row,) = verdicts.compare(xpe_rows + flat, "xpe", "spt", {"all": SEEN})
        assert row["verdict"] == verdict, (shift, row)
    assert row["ci_low"] < 0 < row["ci_high"]


def _lambda_langs(f, langs):
    f.languages = langs
    return f


def test_the_interval_covers_the_true_difference_in_a_simulation_with_seed_and_language_effects():
    """Accuracy = language effect + method effect + seed effect (per method) + seed x language noise, with
    variance components near the replication's (per-seed difference sd ~0.6 pp, language spread ~15 pp,
    per-language noise ~3 pp): the 95 % interval over 5 seeds covers the true difference >= 90 % of 200 draws."""
    rng = random.Random(18)
    langs = [f"l{i:02d}_Test" for i in range(40)]
    truth, covered = 0.01, 0
    start = time.perf_counter()
    for _ in range(200):
        effect = {lang: rng.gauss(0.6, 0.15) for lang in langs}
        table = {}
        for method, delta in (("xpe", truth), ("spt", 0.0)):
            for s in range(1, 6):
                seed_effect = rng.gauss(0, 0.004)
                for lang in langs:
                    table[method, s, lang] = effect[lang] + delta + seed_effect + rng.gauss(0, 0.03)
        rows = []
        for method in ("xpe", "spt"):
            rows += results(method, _lambda_langs(lambda s, lang, m=method: table[m, s, lang], langs),
                            seeds=range(1, 6))
        (row,) = verdicts.compare(rows, "xpe", "spt", {"all": langs})
        covered += row["ci_low"] <= truth <= row["ci_high"]
    assert covered >= 180, f"the 95 % interval covered the truth in {covered} of 200 draws"
    assert time.perf_counter() - start < 20


def test_compare_a_shifted_by_five_points_is_five_points_with_no_spread():
    langs = SEEN + UNSEEN
    rows = results("dual", noisy(langs, bonus=0.05), xpe_frac=0.7) + results("spt", noisy(langs))
    (row,) = verdicts.compare(rows, "dual:0.7", "spt", {"all": langs})
    assert row["a"] == "dual:0.7"
    assert row["mean_diff"] == pytest.approx(0.05, abs=1e-9)
    assert row["ci_low"] == pytest.approx(0.05, abs=1e-9) and row["ci_high"] == pytest.approx(0.05, abs=1e-9)
    assert (row["wins"], row["ties"], row["losses"]) == (6, 0, 0) and row["verdict"] == "holds"


def test_compare_counts_wins_ties_and_losses_by_the_mean_over_seeds():
    a = {(1, "afr_Latn"): 0.9, (2, "afr_Latn"): 0.8,    # wins on both seeds
         (1, "deu_Latn"): 0.5, (2, "deu_Latn"): 0.5,    # tie
         (1, "hin_Deva"): 0.4, (2, "hin_Deva"): 0.4,    # loses on both
         (1, "kab_Latn"): 0.7, (2, "kab_Latn"): 0.5,    # +0.1 then -0.1: a tie on the mean
         (1, "tum_Latn"): 0.6, (2, "tum_Latn"): 0.6}    # not evaluated for B: the unseen row's seeds are partial
    b = {(1, "afr_Latn"): 0.7, (2, "afr_Latn"): 0.7, (1, "deu_Latn"): 0.5, (2, "deu_Latn"): 0.5,
         (1, "hin_Deva"): 0.5, (2, "hin_Deva"): 0.5, (1, "kab_Latn"): 0.6, (2, "kab_Latn"): 0.6}

    def f(table, langs):
        def get(seed, lang):
            return table[seed, lang]
        get.languages = langs
        return get
    rows = (results("xpe", f(a, SEEN + ["kab_Latn", "tum_Latn"]), seeds=(1, 2), n=10)
            + results("spt", f(b, SEEN + ["kab_Latn"]), seeds=(1, 2), n=10))
    out = verdicts.compare(rows, "xpe", "spt", {"seen": SEEN, "unseen": UNSEEN, "nqo": ["nqo_Nkoo"]})
    seen, unseen, nqo = out
    assert (seen["wins"], seen["ties"], seen["losses"], seen["languages"], seen["n_seeds"]) == (1, 1, 1, 3, 2)
    assert seen["mean_diff"] == pytest.approx((0.2 + 0.1 + 0 + 0 - 0.1 - 0.1) / 6, abs=1e-6)
    # unseen: kab and tum were scored, but spt lacks tum on both seeds: no seed is whole, both are named
    assert unseen["languages"] == 2 and unseen["mean_diff"] is None and unseen["left_out"] == "1 2"
    assert nqo["languages"] == 0 and nqo["mean_diff"] is None  # no pair in the group: a row without figures
    assert list(seen) == verdicts.COMPARE_FIELDS


def test_ties_are_counted_from_the_rows_right_not_from_rounded_accuracies():
    """Scoring rounds accuracies to 6 decimals: 1/3 on three seeds against 0, 0 and 1 differ by -3.3e-7 in the
    rounded figures, but by nothing in rows right (1 + 1 + 1 against 0 + 0 + 3 of 3): a tie, not a loss."""
    a = {(s, lang): round(1 / 3, 6) for s in (1, 2, 3) for lang in SEEN}
    b = {(s, lang): float(s == 3) for s in (1, 2, 3) for lang in SEEN}

    def f(table, langs):
        def get(seed, lang):
            return table[seed, lang]
        get.languages = langs
        return get
    rows = results("xpe", f(a, SEEN), n=3) + results("spt", f(b, SEEN), n=3)
    (row,) = verdicts.compare(rows, "xpe", "spt", {"seen": SEEN})
    assert (row["wins"], row["ties"], row["losses"]) == (0, len(SEEN), 0)


def test_a_seed_scored_on_part_of_a_group_is_left_out_of_the_comparison_and_named():
    langs = SEEN + UNSEEN
    rows = results("xpe", noisy(langs, bonus=0.02), seeds=(1, 2, 3)) + results("spt", noisy(langs), seeds=(1, 2, 3))
    rows += results("xpe", {lang: 0.9 for lang in SEEN}, seeds=(4,)) + results("spt", {lang: 0.1 for lang in SEEN},
                                                                                seeds=(4,))
    (row,) = verdicts.compare(rows, "xpe", "spt", {"all": langs})
    assert row["n_seeds"] == 3 and row["left_out"] == "4" and row["mean_diff"] == pytest.approx(0.02, abs=1e-9)
    assert "seed 4 left out" in verdicts.compare_notes([row])[0]


def test_compare_pairs_by_seed_and_goes_per_source():
    langs = SEEN + UNSEEN
    rows = (results("xpe", noisy(langs, bonus=0.1), seeds=(1, 2, 3)) + results("spt", noisy(langs), seeds=(2, 3, 4))
            + results("xpe", noisy(langs, bonus=-0.02), seeds=(7,), source="seen")
            + results("spt", noisy(langs), seeds=(7,), source="seen")
            + results("xpe", noisy(langs), seeds=(1,), source="enarzho"))  # no spt from enarzho: left out
    out = verdicts.compare(rows, "xpe", "spt", {"all": langs})
    assert [(r["source"], r["n_seeds"]) for r in out] == [("joshi5", 2), ("seen", 1)]
    assert out[0]["mean_diff"] == pytest.approx(0.1, abs=1e-9)  # seeds 2 and 3 only, paired
    assert out[1]["mean_diff"] == pytest.approx(-0.02, abs=1e-9) and out[1]["sd"] is None


def with_settings(rows, **settings):
    text = tables.settings_text({"lr": 1e-3, "steps": 2000, **settings})
    return [dict(r, settings=text, run=r["run"] + "".join(f"-{k}{v}" for k, v in settings.items())) for r in rows]


def test_settings_that_differ_in_lr_are_two_columns_and_compare_pairs_only_the_same_settings():
    langs = SEEN
    rows = (with_settings(results("xpe", noisy(langs, bonus=0.03)), lr=1e-3)
            + with_settings(results("xpe", noisy(langs, bonus=-0.2)), lr=5e-5)
            + with_settings(results("spt", noisy(langs)), lr=1e-3))
    groups = tables.summarise(rows, {"seen": langs})
    assert sorted(r["setting"] for r in groups) == ["spt", "xpe lr 0.001", "xpe lr 5e-05"]
    (row,) = verdicts.compare(rows, "xpe", "spt", {"seen": langs})
    assert row["a"] == "xpe lr 0.001" and row["mean_diff"] == pytest.approx(0.03, abs=1e-9)
    lone = with_settings(results("xpe", noisy(langs)), lr=5e-5) + with_settings(results("spt", noisy(langs)), lr=1e-3)
    with pytest.raises(xpe.UsageError) as excinfo:
        verdicts.compare(lone, "xpe", "spt", {"seen": langs})
    message = one_line_usage_error(excinfo)
    assert "only in method" in message and "xpe lr 5e-05" in message and "spt lr 0.001" in message


def test_compare_text_aligns_its_columns(capsys):
    langs = SEEN + UNSEEN
    rows = results("xpe", noisy(langs, bonus=0.05)) + results("spt", noisy(langs))
    verdicts.print_compare(verdicts.compare(rows, "xpe", "spt", {"seen": SEEN, "lowperf": ["nqo_Nkoo", "kab_Latn"],
                                                                 "none": ["eng_Latn"]}))
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["source", "group", "A", "-"]
    assert len(lines) == 3 and all(line.startswith("joshi5  ") for line in lines)
    assert "+5.00" in lines[0] and lines[2].split()[4:8] == ["spt", "-", "-", "-"]  # no pair for eng_Latn
    assert len({line.index("xpe - spt") for line in lines}) == 1


@pytest.mark.parametrize("a, b, rows, expected", [
    ("dual", "spt", None, "dual:R"),
    ("xpe,spt", "spt", None, "unknown method"),
    ("dual:1", "spt", None, "0 < R < 1"),
    ("dual:x", "spt", None, "unknown method"),
    ("dual:0.3", "spt", None, "no zero-shot runs of dual:0.3"),
    ("xpe", "spt", "unpaired", "unpaired"),
    ("xpe", "spt", "other-source", "no source in common"),
    ("xpe", "spt", "twice", "one would hide the other"),
    ("xpe", "spt", "supervised", "no zero-shot runs of spt"),
])
def test_compare_bad_input_is_a_usage_error(a, b, rows, expected):
    langs = SEEN + UNSEEN
    made = results("xpe", noisy(langs), seeds=(1, 2))
    made += {None: results("spt", noisy(langs), seeds=(1,)),
             "unpaired": results("spt", noisy(langs), seeds=(3, 4)),
             "other-source": results("spt", noisy(langs), source="seen"),
             "twice": [dict(r, run="runs/again") for r in results("xpe", noisy(langs), seeds=(1,))],
             "supervised": results("spt", {"kab_Latn": 0.5}, mode="supervised")}[rows]
    with pytest.raises(xpe.UsageError) as excinfo:
        verdicts.compare(made, a, b, {"all": langs})
    assert expected in one_line_usage_error(excinfo)


# cells: a seed over fewer languages is left out ---------------------------------------------------------------------

def test_a_seed_scored_on_part_of_a_group_is_left_out_of_its_cell_and_named():
    langs = SEEN + UNSEEN
    rows = results("spt", noisy(langs), seeds=(1, 2)) + results("spt", {lang: 0.0 for lang in UNSEEN}, seeds=(3,))
    (all_row, unseen_row) = tables.summarise(rows, {"all": langs, "unseen": UNSEEN})
    f = noisy(langs)
    assert (all_row["seeds"], all_row["languages"], all_row["left_out"]) == (2, 6, "3")
    assert all_row["mean"] == pytest.approx(statistics.fmean(statistics.fmean(f(s, x) for x in langs)
                                                             for s in (1, 2)), abs=1e-6)
    assert (unseen_row["seeds"], unseen_row["left_out"]) == (3, "")
    (note,) = tables.left_out_notes([all_row, unseen_row])
    assert "seed 3 left out" in note and "all from joshi5" in note
    table = tables.finish_table(tables.zero_shot_table(rows, {"all": langs}, False), "T", rows)
    assert any("seed 3 left out" in line for line in table["notes"])
    only_part = results("xpe", {lang: 0.5 for lang in SEEN}, seeds=(1,))
    table = tables.zero_shot_table(rows + only_part, {"all": langs}, False)
    (line,) = table["rows"]
    assert line["cells"]["xpe"]["mean"] is None and tables.cell_text(line["cells"]["xpe"], True) == "-"
    assert line["cells"]["spt"]["best"] is False  # the only full cell in the row: nothing to be best of


def test_the_best_mark_ranks_only_the_cells_with_the_rows_most_seeds():
    langs = SEEN + UNSEEN
    rows = (results("spt", {lang: 0.60 for lang in langs}, seeds=range(1, 11))
            + results("xpe", {lang: 0.62 for lang in langs}, seeds=range(1, 11))
            + results("dual", {lang: 0.70 for lang in langs}, seeds=(1, 2), xpe_frac=0.3))
    table = tables.finish_table(tables.zero_shot_table(rows, {"all": langs}, False), "T", rows)
    (line,) = table["rows"]
    best = {column: cell["best"] for column, cell in line["cells"].items()}
    assert best == {"spt": False, "xpe": True, "dual:0.3": False}  # 70 % over 2 seeds is not ranked beside 10
    assert "*: the best of our methods in the row, of those with the row's most seeds" in table["notes"]
    alike = results("spt", {lang: 0.60 for lang in langs}) + results("xpe", {lang: 0.62 for lang in langs})
    table = tables.finish_table(tables.zero_shot_table(alike, {"all": langs}, False), "T", alike)
    assert table["rows"][0]["cells"]["xpe"]["best"] and "*: the best of our methods in the row" in table["notes"]


def test_table2_averages_ours_over_the_languages_the_baselines_have():
    langs = ["kab_Latn", "nqo_Nkoo", "tum_Latn"]  # Table 7 lacks nqo_Nkoo
    rows = results("spt", {"kab_Latn": 0.5, "nqo_Nkoo": 0.1, "tum_Latn": 0.7})
    table = tables.zero_shot_table(rows, {"g": langs}, True)
    (line,) = table["rows"]
    assert line["keys"][2] == "2 of 3" and line["cells"]["spt"]["mean"] == pytest.approx(0.6)
    assert any("lacks nqo_Nkoo" in n for n in table["notes"])
    assert tables.zero_shot_table(rows, {"g": langs}, False)["rows"][0]["cells"]["spt"]["mean"] == \
        pytest.approx((0.5 + 0.1 + 0.7) / 3)


# plot_languages -----------------------------------------------------------------------------------------------------

def small_results():
    langs = SEEN + UNSEEN + ["xyz_Latn"]  # in neither group: a third panel
    return (results("dual", noisy(langs, bonus=0.05), xpe_frac=0.7) + results("spt", noisy(langs))
            + results("spt", noisy(langs), source="enarzho"))


def needs_matplotlib(module="matplotlib"):
    """matplotlib is an optional extra: its tests skip without it, but fail under CI, which installs it."""
    import importlib
    import os
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("matplotlib is not installed; CI must install requirements-plot.txt")
        pytest.skip("the figure needs matplotlib (pip install -r requirements-plot.txt)")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_plot_has_the_size_asked_and_its_numbers_beside_it(tmp_path):
    image = needs_matplotlib("matplotlib.image")
    rows = small_results()
    baselines = {"XLM-R full FT": {"afr_Latn": 0.9, "kab_Latn": 0.6, "tum_Latn": 0.5}}  # the others are gaps
    path = tmp_path / "figs" / "languages.png"
    figure.plot_languages(rows, GROUPS, path, (901, 457), "dual:0.7", baselines)
    assert image.imread(path).shape[:2] == (457, 901)

    table = read_csv(path.with_suffix(".csv"))
    assert list(table[0]) == figure.PLOT_FIELDS
    series = ["spt (enarzho)", "spt (joshi5)", "dual:0.7 (joshi5)", "XLM-R full FT"]
    assert len(table) == 7 * len(series)
    assert {(r["language"], r["series"]) for r in table} == {(lang, s) for lang in SEEN + UNSEEN + ["xyz_Latn"]
                                                             for s in series}
    assert {r["panel"] for r in table if r["language"] in SEEN} == {"seen"}
    assert {r["panel"] for r in table if r["language"] == "xyz_Latn"} == {"other"}
    key = {r["language"]: float(r["accuracy"]) for r in table if r["series"] == "dual:0.7 (joshi5)"}
    for panel in ("seen", "unseen"):
        order = sorted({(int(r["position"]), r["language"]) for r in table if r["panel"] == panel})
        assert [key[lang] for _, lang in order] == sorted((key[lang] for _, lang in order), reverse=True)
    f = noisy(SEEN + UNSEEN + ["xyz_Latn"], bonus=0.05)
    assert key["afr_Latn"] == pytest.approx(sum(f(s, "afr_Latn") for s in (1, 2, 3)) / 3, abs=1e-6)
    assert {r["seeds"] for r in table if r["series"] != "XLM-R full FT"} == {"3"}
    gaps = {r["language"] for r in table if r["series"] == "XLM-R full FT" and r["accuracy"] == ""}
    assert gaps == {"deu_Latn", "hin_Deva", "nqo_Nkoo", "xyz_Latn"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["languages.csv", "languages.png"]  # no temp files


def test_plot_without_seen_and_unseen_is_one_panel_sorted_by_a_baseline(tmp_path):
    needs_matplotlib()
    path = tmp_path / "one.png"
    baselines = {"GPT-4": {lang: i / 10 for i, lang in enumerate(SEEN + UNSEEN)}}
    figure.plot_languages(small_results(), {"joshi5": ["deu_Latn"]}, path, (640, 480), "GPT-4", baselines)
    table = read_csv(path.with_suffix(".csv"))
    assert {r["panel"] for r in table} == {"all"}
    order = [r["language"] for r in table if r["series"] == "GPT-4"]
    assert order == list(reversed(SEEN + UNSEEN)) + ["xyz_Latn"]  # a language the baseline lacks goes last


@pytest.mark.parametrize("sort_by, expected", [
    ("dual:0.3", "name one of spt@enarzho, spt@joshi5, dual:0.7@joshi5"),
    ("spt", "sort by spt@enarzho or spt@joshi5"),
    ("xpe@joshi5", "nothing to sort by named 'xpe@joshi5'"),
    ("magic", "or a baseline (XLM-R)"),
])
def test_plot_bad_sort_by_is_a_usage_error(tmp_path, sort_by, expected):
    needs_matplotlib()
    with pytest.raises(xpe.UsageError) as excinfo:
        figure.plot_languages(small_results(), GROUPS, tmp_path / "f.png", (800, 600), sort_by, {"XLM-R": {}})
    assert expected in one_line_usage_error(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_plot_sorts_by_a_method_and_its_source(tmp_path):
    needs_matplotlib()
    rows = small_results() + results("spt", {"afr_Latn": 0.99}, mode="supervised")  # spt@joshi5 twice: zero-shot wins
    table = figure.plot_languages(rows, GROUPS, tmp_path / "f.png", (800, 600), "spt@joshi5")
    first = [r["language"] for r in table if r["series"] == "spt (joshi5)" and r["position"] == 1]
    f = noisy(SEEN + UNSEEN + ["xyz_Latn"])
    mean = {lang: sum(f(s, lang) for s in (1, 2, 3)) / 3 for lang in SEEN}
    assert first[0] == max(mean, key=mean.get)
    assert {r["series"] for r in table} >= {"spt (joshi5, supervised)"}


@pytest.mark.parametrize("path, size, rows, expected", [
    ("f.pdf", (800, 600), None, "ending in .png"),
    ("f.png", (300, 200), None, "too small"),
    ("f.png", "big", None, "(width, height) in pixels"),
    ("f.png", (800, 600), "none", "no per-language results"),
    ("f.png", (800, 600), "two backbones", "plot them one at a time"),
])
def test_plot_bad_input_is_a_usage_error(tmp_path, path, size, rows, expected):
    needs_matplotlib()
    made = {None: small_results(), "none": [],
            "two backbones": small_results() + results("xpe", noisy(SEEN), backbone="e5")}[rows]
    with pytest.raises(xpe.UsageError) as excinfo:
        figure.plot_languages(made, GROUPS, tmp_path / path, size, None)
    assert expected in one_line_usage_error(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(xpe.UsageError) as excinfo:
        figure.plot_languages(small_results(), GROUPS, tmp_path / "f.png", (800, 600), None)
    message = one_line_usage_error(excinfo)
    assert "pip install matplotlib" in message and "requirements-plot.txt" in message
    assert list(tmp_path.iterdir()) == []


def test_plot_that_fails_leaves_the_old_files_whole(tmp_path, monkeypatch):
    needs_matplotlib()
    from matplotlib.figure import Figure

    path = tmp_path / "f.png"
    figure.plot_languages(small_results(), GROUPS, path, (800, 600), None)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError):
        figure.plot_languages(small_results() + results("xpe", noisy(SEEN)), GROUPS, path, (800, 600), None)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_plot_of_all_205_languages_at_the_default_size(tmp_path):
    """The figure as the paper draws it: 4 methods from joshi5, 3 seeds, two baselines, every SIB-200 language."""
    image = needs_matplotlib("matplotlib.image")
    groups = data.load_groups()
    targets = [lang for lang in groups["all"] if lang not in groups["joshi5"]]
    rows = []
    for i, (method, frac) in enumerate((("spt", None), ("xpe", None), ("dual", 0.3), ("dual", 0.7))):
        rows += results(method, noisy(targets, bonus=0.01 * i, rng_seed=i), xpe_frac=frac, steps=24000)
    baselines = {name: {code: row[column] / 100 for code, row in tables.load_baselines().items() if column in row}
                 for column, name in (("xlt_eng", "XLT eng"), ("gpt4", "GPT-4"))}
    path = tmp_path / "languages.png"
    start = time.perf_counter()
    table = figure.plot_languages(rows, groups, path, figure.PLOT_SIZE, "dual:0.7", baselines)
    assert time.perf_counter() - start < 20
    assert image.imread(path).shape[:2] == tuple(reversed(figure.PLOT_SIZE))
    assert len(table) == len(targets) * 6 == len(read_csv(path.with_suffix(".csv")))
    assert {r["panel"] for r in table} == {"seen", "unseen"}


def test_parse_size():
    assert figure.parse_size("2400x1400") == (2400, 1400)
    assert figure.parse_size("800X600") == (800, 600)
    for bad in ("2400", "x", "24.5x10", "-3x4"):
        with pytest.raises(xpe.UsageError):
            figure.parse_size(bad)


# ---- the tables, end to end on runs of the tiny model --------------------------------------------------

from conftest import FIXTURE_SIB200  # noqa: E402
import train  # noqa: E402

TINY = ["--data-dir", str(FIXTURE_SIB200), "--steps", "8", "--batch-size", "4", "--eval-every", "4", "--lr", "1e-2",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_model_dir):
    """Two methods x two seeds x two sources, each source's four runs one packed call."""
    root = tmp_path_factory.mktemp("grid")
    for source in ("eng_Latn", "fra_Latn"):
        assert train.main(["--model", str(tiny_model_dir), *TINY, "--source", source, "--method", "spt,xpe",
                           "--seed", "1-2", "--out", str(root / source)]) == 0
    return root


def run_evaluate(tmp_path, *args):
    out = tmp_path / "results"
    return evaluate.main(["--data-dir", str(FIXTURE_SIB200), "--out", str(out), "--device", "cpu", "--batch-size", "5",
                          *args]), out


def test_table1_cells_are_the_means_and_stds_of_per_language(tmp_path, grid, capsys):
    code, out = run_evaluate(tmp_path, "--runs", str(grid), "--groups", "nqo_Nkoo,eng_Latn,fra_Latn",
                             "--compare", "xpe,spt", "--compare", "spt,xpe")
    assert code == 0
    per_language = read_csv(out / "per_language.csv")
    assert len({r["run"] for r in per_language}) == 8
    table = read_csv(out / "table1.csv")
    groups = {"nqo_Nkoo": ["nqo_Nkoo"], "eng_Latn": ["eng_Latn"], "fra_Latn": ["fra_Latn"]}
    checked = 0
    for row in table:
        by_seed = {}
        for r in per_language:
            if (r["source"], xpe.method_name(r["method"], r["xpe_frac"])) == (row["source"], row["column"]) \
                    and r["language"] in groups[row["target"]]:
                by_seed.setdefault(r["seed"], []).append(float(r["accuracy"]))
        means = [statistics.fmean(v) for v in by_seed.values()]
        assert int(row["seeds"]) == len(means) == 2
        assert float(row["mean"]) == pytest.approx(statistics.fmean(means), abs=1e-6)
        assert float(row["std"]) == pytest.approx(statistics.stdev(means), abs=1e-6)
        checked += 1
    # every source is scored on the languages it was not trained on: nqo from both, eng from fra, fra from eng
    assert checked == 2 * 4
    assert {(r["target"], r["source"]) for r in table} == {("nqo_Nkoo", "eng_Latn"), ("nqo_Nkoo", "fra_Latn"),
                                                           ("eng_Latn", "fra_Latn"), ("fra_Latn", "eng_Latn")}
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "seeds 1, 2" in printed and "steps 8" in printed
    assert (out / "table1.md").read_text().startswith("Table 1")
    assert "| nqo_Nkoo | eng_Latn | 1 |" in (out / "table1.md").read_text()  # the languages the row averages
    compared = read_csv(out / "compare.csv")
    pairs = {(s, "nqo_Nkoo") for s in ("eng_Latn", "fra_Latn")} | {("eng_Latn", "fra_Latn"), ("fra_Latn", "eng_Latn")}
    assert {(r["source"], r["group"]) for r in compared if (r["a"], r["b"]) == ("xpe", "spt")} == pairs
    forth = {(r["source"], r["group"]): float(r["mean_diff"]) for r in compared if r["a"] == "xpe"}
    back = {(r["source"], r["group"]): float(r["mean_diff"]) for r in compared if r["a"] == "spt"}
    assert forth.keys() == back.keys() and all(forth[k] == pytest.approx(-back[k]) for k in forth)


def test_tables_and_figure_again_from_the_scores_without_scoring(tmp_path, grid):
    needs_matplotlib()
    code, first = run_evaluate(tmp_path, "--runs", str(grid), "--groups", "nqo_Nkoo")
    assert code == 0
    again = tmp_path / "again"
    code = evaluate.main(["--scores", str(first / "per_language.csv"), "--groups", "nqo_Nkoo", "--out", str(again),
                          "--data-dir", str(FIXTURE_SIB200), "--plot", str(again / "figure.png"), "--plot-size",
                          "800x600"])
    assert code == 0
    assert read_csv(again / "table1.csv") == read_csv(first / "table1.csv")
    from matplotlib import image
    assert image.imread(again / "figure.png").shape[:2] == (600, 800)
    assert len(read_csv(again / "figure.csv")) == 4  # one language, four settings (two methods, two sources)


def test_one_seed_is_shown_as_n_1_not_as_a_zero_std(tmp_path, grid, capsys):
    code, out = run_evaluate(tmp_path, "--runs", str(grid / "eng_Latn" / "xpe-eng_Latn-s1"), "--group", "nqo_Nkoo")
    assert code == 0
    printed = capsys.readouterr().out
    assert "(n = 1)" in printed and "± 0.0" not in printed
    (row,) = read_csv(out / "per_group.csv")
    assert row["seeds"] == "1" and row["std"] == ""


def test_packed_scoring_gives_each_runs_own_accuracies(tmp_path, grid):
    code, together = run_evaluate(tmp_path / "together", "--runs", str(grid / "eng_Latn"), "--group", "nqo_Nkoo,fra_Latn")
    assert code == 0
    scored = {(r["run"], r["language"]): r["accuracy"] for r in read_csv(together / "per_language.csv")}
    for run_dir in (grid / "eng_Latn").iterdir():
        code, alone = run_evaluate(tmp_path / run_dir.name, "--runs", str(run_dir), "--group", "nqo_Nkoo,fra_Latn")
        assert code == 0
        for r in read_csv(alone / "per_language.csv"):
            assert scored[r["run"], r["language"]] == r["accuracy"]


def test_two_runs_of_one_setting_and_seed_are_refused_naming_both(tmp_path, grid, capsys):
    import shutil
    twin = tmp_path / "twin"
    shutil.copytree(grid / "eng_Latn" / "xpe-eng_Latn-s1", twin)
    code, out = run_evaluate(tmp_path, "--runs", str(grid / "eng_Latn"), str(twin), "--group", "nqo_Nkoo")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(grid / "eng_Latn" / "xpe-eng_Latn-s1") in err and str(twin) in err
    assert not out.exists()


def test_baselines_average_the_languages_ours_average(tmp_path, grid):
    """Runs trained on eng_Latn leave it out of their figures; the baselines leave it out too."""
    code, out = run_evaluate(tmp_path, "--runs", str(grid / "eng_Latn"), "--group", "eng_Latn,fra_Latn", "--baseline")
    assert code == 0
    table = tables.load_baselines()
    for row in read_csv(out / "per_group.csv"):
        assert row["languages"] == "1" and row["baseline_languages"] == "1"
        assert float(row["xlt_eng"]) == pytest.approx(table["fra_Latn"]["xlt_eng"] / 100)
    table2 = read_csv(out / "table2.csv")
    assert {r["column"] for r in table2 if r["kind"] == "baseline"} == set(tables.BASELINE_COLUMNS)


@pytest.mark.parametrize("args, words", [
    (["--compare", "xpe,prefix"], "unknown method 'prefix'"),
    (["--compare", "xpe,dual:0.7"], "no zero-shot runs of dual:0.7"),
    (["--plot", "figure.png", "--plot-sort", "dual:0.3"], "nothing to sort by named 'dual:0.3'"),
    (["--plot", "figure.jpg"], "ending in .png"),
    (["--plot-baselines", "gpt5"], "unknown column 'gpt5'"),
])
def test_bad_table_flags_exit_2_with_one_line(tmp_path, grid, capsys, args, words):
    if "--plot" in args and args[1].endswith(".png"):
        needs_matplotlib()
    code, _ = run_evaluate(tmp_path, "--runs", str(grid / "eng_Latn"), "--group", "nqo_Nkoo",
                           *[str(tmp_path / a) if a.startswith("figure") else a for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err


def test_plot_without_matplotlib_exits_2_before_scoring(tmp_path, grid, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out = run_evaluate(tmp_path, "--runs", str(grid / "eng_Latn"), "--group", "nqo_Nkoo", "--plot",
                             str(tmp_path / "figure.png"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install -r requirements-plot.txt" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_six_target_runs_from_six_seeded_source_runs_are_six_seeds(tmp_path, tiny_model_dir, capsys):
    """Issue 9: a target run inherits its source's seed, so six of them are six seeds, and Table 3 says so."""
    sources = tmp_path / "sources"
    assert train.main(["--model", str(tiny_model_dir), *TINY, "--source", "eng_Latn", "--method", "dual",
                       "--seed", "1-6", "--out", str(sources)]) == 0
    targets = tmp_path / "targets"
    for k in range(1, 7):
        for lang in ("nqo_Nkoo",) + (("fra_Latn",) if k <= 2 else ()):
            assert train.main(["--model", str(tiny_model_dir), *TINY, "--steps", "4", "--target", lang, "--init",
                               str(sources / f"dual0.7-eng_Latn-s{k}"), "--out", str(targets / f"{lang}-{k}")]) == 0
    groups_file = tmp_path / "groups.json"
    groups_file.write_text(json.dumps({"groups": {"supervised-seen": {"languages": ["fra_Latn"]},
                                                  "supervised-unseen": {"languages": ["nqo_Nkoo"]}}}))
    code, out = run_evaluate(tmp_path, "--runs", str(targets), "--groups-file", str(groups_file))
    assert code == 0
    per_language = read_csv(out / "per_language.csv")
    nqo = {int(r["seed"]): float(r["accuracy"]) for r in per_language if r["language"] == "nqo_Nkoo"}
    assert sorted(nqo) == [1, 2, 3, 4, 5, 6]
    (row,) = [r for r in read_csv(out / "per_group.csv") if r["group"] == "supervised-unseen"]
    assert row["seeds"] == "6"
    assert float(row["mean"]) == pytest.approx(statistics.fmean(nqo.values()), abs=1e-6)
    assert float(row["std"]) == pytest.approx(statistics.stdev(nqo.values()), abs=1e-6)
    fra = {int(r["seed"]): float(r["accuracy"]) for r in per_language if r["language"] == "fra_Latn"}
    both = [statistics.fmean([nqo[k], fra[k]]) for k in (1, 2)]  # seeds 3-6 lack fra_Latn: not in that cell
    table3 = {r["target"]: r for r in read_csv(out / "table3.csv") if r["kind"] == "ours"}
    assert float(table3["supervised-unseen"]["mean"]) == pytest.approx(statistics.fmean(nqo.values()), abs=1e-6)
    assert float(table3["supervised-seen"]["mean"]) == pytest.approx(statistics.fmean(fra.values()), abs=1e-6)
    assert float(table3["supervised"]["mean"]) == pytest.approx(statistics.fmean(both), abs=1e-6)
    assert table3["supervised"]["seeds"] == "2"
    assert "supervised from eng_Latn, dual:0.7: seeds 3, 4, 5, 6 left out" in \
        (out / "table3.md").read_text()
    printed = capsys.readouterr().out
    assert "Table 3" in printed and "seeds 3, 4, 5, 6 left out" in printed


def test_papers_baseline_rows_from_table7():
    """Table 2's baseline columns over the paper's target groups give its baseline rows (SPEC §6), within 0.5."""
    paper = {"xlt_eng": (33.5, 54.0, 86.2, 67.8), "xlt_ara": (33.3, 54.7, 86.5, 68.3),
             "xlt_zho": (33.3, 54.3, 86.5, 68.1), "gpt4": (22.9, 39.2, 68.1, 51.7), "gpt35": (22.9, 35.7, 55.7, 44.3)}
    table, groups = tables.load_baselines(), data.load_groups()
    for i, group in enumerate(("lowperf", "unseen", "seen-wo-j5", "all-wo-j5")):
        means, known = tables.baseline_means(groups[group], table)
        assert known == len(groups[group]) - ("nqo_Nkoo" in groups[group])  # Table 7 lacks nqo_Nkoo
        for column, figures in paper.items():
            assert 100 * means[column] == pytest.approx(figures[i], abs=0.5), (column, group)
