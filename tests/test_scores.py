"""evaluate.py on per-language scores alone (--scores): settings kept apart, rows that cannot be true refused,
refusals before anything is written, and one set of outputs a call. No model: fast."""
import csv
import json

import pytest

import evaluate
import tables
from conftest import ROOT

LANGS = ["afr_Latn", "deu_Latn", "kab_Latn"]
REPLICATION = ROOT / "docs" / "replication"


def rows_of(method, seeds=(1, 2, 3), frac=None, settings=None, langs=LANGS, base=0.5, run=None, **extra):
    frac = {"spt": 0.0, "xpe": 1.0}.get(method, frac)
    text = tables.settings_text(settings if settings is not None else {"lr": 1e-3, "steps": 100})
    return [dict(run=run or f"runs/{method}-{text.__hash__() % 1000}-s{seed}", mode="zero-shot", method=method,
                 xpe_frac=frac, source="joshi5", seed=seed, backbone="e5", steps=100, language=lang, n=204,
                 accuracy=round(base + 0.01 * seed + 0.001 * i, 6), settings=text, ended="steps", **extra)
            for seed in seeds for i, lang in enumerate(langs)]


def write_scores(path, rows, fields=tables.LANGUAGE_FIELDS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scores_main(tmp_path, rows, *args, out=None):
    scores = write_scores(tmp_path / "scores.csv", rows)
    out = out or tmp_path / "results"
    return evaluate.main(["--scores", str(scores), "--group", ",".join(LANGS), "--out", str(out), *args]), out


def test_runs_that_differ_in_lr_are_two_settings_in_per_group_and_the_tables(tmp_path, capsys):
    rows = rows_of("xpe", settings={"lr": 1e-3}) + rows_of("xpe", settings={"lr": 5e-5}, base=0.3) + \
        rows_of("spt", settings={"lr": 1e-3})
    code, out = scores_main(tmp_path, rows, "--compare", "xpe,spt")
    assert code == 0
    groups = read(out / "per_group.csv")
    assert sorted(g["setting"] for g in groups) == ["spt", "xpe lr 0.001", "xpe lr 5e-05"]
    assert all(g["seeds"] == "3" for g in groups)
    assert {r["column"] for r in read(out / "table1.csv")} == {"spt", "xpe lr 0.001", "xpe lr 5e-05"}
    (compared,) = read(out / "compare.csv")
    assert compared["a"] == "xpe lr 0.001" and float(compared["mean_diff"]) == pytest.approx(0, abs=1e-9)
    assert compared["verdict"] and compared["n_seeds"] == "3" and compared["sd"] != ""
    again = evaluate.main(["--scores", str(out / "per_language.csv"), "--group", ",".join(LANGS), "--out",
                           str(tmp_path / "again")])  # --scores keeps the settings apart as scoring did
    assert again == 0 and read(tmp_path / "again" / "per_group.csv") == groups


def test_two_seeds_write_too_few_seeds_and_empty_interval_columns(tmp_path, capsys):
    code, out = scores_main(tmp_path, rows_of("xpe", seeds=(1, 2), base=0.6) + rows_of("spt", seeds=(1, 2)),
                            "--compare", "xpe,spt")
    assert code == 0
    (row,) = read(out / "compare.csv")
    assert (row["verdict"], row["ci_low"], row["ci_high"], row["n_seeds"]) == ("too few seeds", "", "", "2")
    assert "too few seeds" in capsys.readouterr().out


def test_the_replications_scores_give_the_same_files_from_any_working_folder(tmp_path, monkeypatch):
    """--scores reads the files alone, never the run folders their rows name (relative to where scoring ran)."""
    parts = [str(path) for path in sorted(REPLICATION.glob("part*/per_language.csv"))]
    outputs = {}
    for where in (ROOT, tmp_path):
        monkeypatch.chdir(where)
        out = tmp_path / f"from-{where.name}"
        assert evaluate.main(["--scores", *parts, "--compare", "xpe,spt", "--out", str(out)]) == 0
        outputs[where] = {name: (out / name).read_bytes() for name in ("per_group.csv", "table1.md", "compare.csv")}
    assert outputs[ROOT] == outputs[tmp_path]


def test_a_per_language_file_without_settings_and_ended_is_refused_in_one_line(tmp_path, capsys):
    """Files from before settings and ended were recorded are not read (the replication's were re-saved)."""
    old = [{k: v for k, v in r.items() if k not in ("settings", "ended")} for r in rows_of("xpe") + rows_of("spt")]
    write_scores(tmp_path / "old.csv", old, [f for f in tables.LANGUAGE_FIELDS if f not in ("settings", "ended")])
    assert evaluate.main(["--scores", str(tmp_path / "old.csv"), "--group", ",".join(LANGS), "--out",
                          str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks settings, ended" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change, words", [
    (dict(accuracy="13.48"), "not in [0, 1]"),
    (dict(accuracy="nan"), "not in [0, 1]"),
    (dict(n="0"), "at least one test row"),
    (dict(seed="x"), "must be numbers"),
    (dict(method="dual", xpe_frac="1.5"), "unknown method"),
    ("twice", "twice"),
    ("no column", "lacks accuracy"),
])
def test_rows_that_cannot_be_true_are_refused_and_nothing_is_written(tmp_path, capsys, change, words):
    rows = rows_of("xpe")
    fields = tables.LANGUAGE_FIELDS
    if change == "twice":
        rows.append(dict(rows[0]))
    elif change == "no column":
        fields = [f for f in fields if f != "accuracy"]
    else:
        rows[1].update(change)
    scores = write_scores(tmp_path / "scores.csv", rows, fields)
    code = evaluate.main(["--scores", str(scores), "--group", ",".join(LANGS), "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


def test_an_unfinished_run_is_refused_unless_asked_for_and_then_marked(tmp_path, capsys):
    rows = rows_of("xpe") + [dict(r, ended="unfinished: log.csv ends at step 20 of 100") for r in rows_of("spt")]
    code, out = scores_main(tmp_path, rows)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "runs/spt" in err and "step 20 of 100" in err and not out.exists()
    code, out = scores_main(tmp_path, rows, "--unfinished")
    assert code == 0
    assert "‡" in (out / "table1.md").read_text() and "step 20 of 100" in (out / "table1.md").read_text()
    assert {r["unfinished"] for r in read(out / "table1.csv") if r["column"] == "spt"} == {"1"}


@pytest.mark.parametrize("args, words", [
    (["--resamples", "0"], ""),  # the bootstrap is gone: argparse refuses the flag
    (["--plot", "{tmp}/f.png", "--plot-size", "100x100"], "too small"),
    (["--plot", "{tmp}/f.png", "--plot-size", "1000000x1000000"], "larger than 20000x20000"),
    (["--compare", "xpe,dual:0.3"], "no zero-shot runs of dual:0.3"),
    (["--compare", "xpe,xpe"], "with itself"),
    (["--plot", "{tmp}/f.png", "--plot-sort", "dual:0.3"], "nothing to sort by"),
    (["--out", "{tmp}/a-file"], "is a file"),
    (["--out", "{tmp}/a-file/below"], "which is a file"),
    (["--plot", "{tmp}/a-file/f.png"], "which is a file"),
    (["--group", ""], "--group is empty"),
    (["--batch-size", "4", "--predict", "x.txt"], ""),
    (["--export-peft", "{tmp}/peft"], "do not go with --export-peft"),
])
def test_bad_flags_are_refused_in_seconds_and_write_nothing(tmp_path, capsys, args, words):
    (tmp_path / "a-file").write_text("mine")
    scores = write_scores(tmp_path / "scores.csv", rows_of("xpe") + rows_of("spt"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--plot-sort" in args:
        try:
            import matplotlib.figure  # noqa: F401
        except ImportError:
            # matplotlib is an optional extra: without it --plot is refused with the flags, before the scores
            # that --plot-sort is checked against are read, and that refusal is the one a user should see first
            words = "the figure needs matplotlib"
    group = [] if "--group" in args else ["--group", ",".join(LANGS)]
    out = [] if "--out" in args else ["--out", str(tmp_path / "results")]
    try:
        code = evaluate.main(["--scores", str(scores), *group, *out, *args])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "scores.csv"]
    assert (tmp_path / "a-file").read_text() == "mine"


def test_a_later_call_leaves_no_file_of_an_earlier_one_and_nothing_it_did_not_write(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rows = rows_of("xpe") + rows_of("spt")
    code, _ = scores_main(tmp_path, rows, "--compare", "xpe,spt", "--baseline", "--plot", str(out / "fig.png"),
                          "--plot-size", "640x480", out=out)
    assert code == 0
    first = sorted(p.name for p in out.iterdir())
    assert {"compare.csv", "table2.md", "fig.png", "fig.csv", "outputs.json", "notes.txt"} <= set(first)
    code, _ = scores_main(tmp_path, rows_of("xpe"), out=out)
    assert code == 0
    left = sorted(p.name for p in out.iterdir())
    assert left == ["notes.txt", "outputs.json", "per_group.csv", "per_language.csv", "table1.csv", "table1.md"]
    manifest = json.loads((out / "outputs.json").read_text())
    assert sorted(manifest["files"]) == [n for n in left if n not in ("notes.txt", "outputs.json")]
    assert (out / "notes.txt").read_text() == "mine"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_a_second_call_replaces_its_own_figure(tmp_path, capsys):
    """--plot into a file an earlier call wrote: the file is replaced (its folder is what must be writable)."""
    pytest.importorskip("matplotlib")
    rows = rows_of("xpe") + rows_of("spt")
    for _ in range(2):
        code, out = scores_main(tmp_path, rows, "--plot", str(tmp_path / "fig.png"), "--plot-size", "640x480")
        assert code == 0, capsys.readouterr().err
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_files_of_the_output_names_that_no_manifest_lists_are_never_removed(tmp_path, capsys):
    """Without an outputs.json, a user's compare.csv and table2.md in --out are theirs: a call that writes
    neither leaves both."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "compare.csv").write_text("my comparison")
    (out / "table2.md").write_text("my table")
    code, _ = scores_main(tmp_path, rows_of("xpe") + rows_of("spt"), out=out)
    assert code == 0
    assert (out / "compare.csv").read_text() == "my comparison" and (out / "table2.md").read_text() == "my table"


def test_a_relative_out_keeps_the_files_it_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = rows_of("xpe") + rows_of("spt")
    for _ in range(2):  # the second call replaces the first's set
        write_scores(tmp_path / "scores.csv", rows)
        assert evaluate.main(["--scores", "scores.csv", "--group", ",".join(LANGS), "--out", "rel"]) == 0
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["outputs.json", "per_group.csv",
                                                                     "per_language.csv", "table1.csv", "table1.md"]


def test_a_kill_while_writing_leaves_the_earlier_set_or_no_manifest(tmp_path, monkeypatch, capsys):
    rows = rows_of("xpe") + rows_of("spt")
    code, out = scores_main(tmp_path, rows, "--compare", "xpe,spt")
    assert code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import os
    real = os.replace
    calls = []

    def dies_on_the_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(src, dst)
    monkeypatch.setattr(os, "replace", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        scores_main(tmp_path, rows_of("xpe", base=0.2) + rows_of("spt"), "--compare", "xpe,spt", out=out)
    monkeypatch.setattr(os, "replace", real)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "outputs.json" not in after  # the folder no longer claims a whole set
    assert set(after) == set(before) - {"outputs.json"} and not any(n.endswith(".tmp") for n in after)


def test_export_peft_below_a_file_is_refused_before_anything(tmp_path, capsys):
    (tmp_path / "a-file").write_text("mine")
    code = evaluate.main(["--runs", str(REPLICATION / "runs" / "spt-joshi5-s1"), "--export-peft",
                          str(tmp_path / "a-file" / "peft")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "which is a file" in err and len(err.splitlines()) == 1
    assert (tmp_path / "a-file").read_text() == "mine"


def test_one_grammar_of_method_names():
    import xpe
    for name in ("spt", "xpe", "dual:0.7", "dual:0.3"):
        assert xpe.method_name(*xpe.parse_method(name)) == name
    assert xpe.parse_method(" dual:0.70 ") == ("dual", 0.7) and xpe.method_name("dual", 0.7) == "dual:0.7"
    for bad in ("dual", "dual:1", "dual:nan", "xpe:0.5", "prefix", ""):
        with pytest.raises(ValueError):
            xpe.parse_method(bad)


def test_two_backbones_in_one_table_are_columns_that_say_so(tmp_path, capsys):
    rows = rows_of("xpe") + [dict(r, backbone="xlm-roberta-large", run=r["run"] + "-large") for r in rows_of("xpe")]
    code, out = scores_main(tmp_path, rows)
    assert code == 0
    assert {r["column"] for r in read(out / "table1.csv")} == {"xpe backbone e5", "xpe backbone xlm-roberta-large"}
    assert "backbones e5, xlm-roberta-large" in (out / "table1.md").read_text()


def test_margins_on_the_replication_say_what_its_intervals_rule_out_and_the_seeds_a_decision_needs(tmp_path):
    """XPE - SPT on lowperf rules out the paper's +3.1 and the re-run's +2.0; DUAL70 - SPT on seen-wo-j5 does
    not rule out the paper's +1.0, and says how many seeds would decide it."""
    parts = sorted(REPLICATION.glob("part*/per_language.csv")) + sorted(REPLICATION.glob("seed*/scores/per_language.csv"))
    out = tmp_path / "r"
    assert evaluate.main(["--scores", *map(str, parts), "--compare", "xpe,spt", "--compare", "dual:0.7,spt",
                          "--margin", "2,3.1", "--margin", "1", "--out", str(out)]) == 0
    rows = {(r["a"], r["group"], float(r["margin"])): r for r in read(out / "margins.csv")}
    for margin in (0.02, 0.031):
        row = rows["xpe", "lowperf", margin]
        assert (row["rules_out_plus"], row["decision"], row["n_seeds"]) == ("yes", "within", "10"), row
    row = rows["dual:0.7", "seen-wo-j5", 0.01]
    assert (row["rules_out_plus"], row["rules_out_minus"], row["decision"]) == ("no", "yes", "above"), row
    assert int(row["seeds_for_power"]) > 10 and 0.5 < float(row["power"]) < 0.7, row


def test_power_and_the_seeds_it_needs_agree_and_reach_the_normal_limit():
    import math
    import statistics

    import verdicts
    for margin, sd in ((0.01, 0.013), (0.02, 0.015), (0.005, 0.02)):
        n = verdicts.seeds_for_power(margin, sd)
        assert verdicts.power_at(margin, sd, n) >= 0.8 > verdicts.power_at(margin, sd, n - 1)
    normal = statistics.NormalDist()
    for n in (500, 2000):  # many seeds: the t-test's power is the z-test's
        z = 1 - normal.cdf(normal.inv_cdf(0.975) - 0.01 * math.sqrt(n) / 0.1)
        assert verdicts.power_at(0.01, 0.1, n) == pytest.approx(z, abs=2e-3)
    assert [verdicts.margin_decision(low, high, 0.02)[2] for low, high in
            ((-0.01, 0.01), (-0.03, 0.01), (-0.01, 0.03), (-0.03, 0.03))] == ["within", "below", "above", "neither"]


@pytest.mark.parametrize("args, words", [
    (["--margin", "2"], "give --compare A,B too"),
    (["--compare", "xpe,spt", "--margin", "two"], "--margin two: give accuracy points"),
    (["--compare", "xpe,spt", "--margin", "0"], "above 0 and below 100"),
    (["--compare", "xpe,spt", "--margin", "nan"], "above 0 and below 100"),
])
def test_a_bad_margin_is_one_line_and_writes_nothing(tmp_path, capsys, args, words):
    code, out = scores_main(tmp_path, rows_of("xpe") + rows_of("spt"), *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()
