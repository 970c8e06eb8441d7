"""train.py on a tiny random XLM-R and the SIB-200 fixture (one real run on e5-small, in conftest): each method
trains; packed runs equal the runs alone; the run folders (only ours written or removed, one call at a time, a
kill after any write resumes identically); target calls in packs and calls spread over processes.
"""
import argparse
import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import assume, example, given, settings, strategies as st
from safetensors.torch import load_file, save_file

import evaluate
import train
import xpe
from conftest import (FIXTURE_SIB200, ROOT, argparse_refusals, cpu_bf16, inside, outside, refused_in_one_line,
                      require_extra)

SOURCE = "eng_Latn,fra_Latn"


def run(tmp_path, model_dir, *extra, name="run"):
    out = tmp_path / name
    argv = ["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", SOURCE, "--steps", "30",
            "--batch-size", "4", "--eval-every", "10", "--lr", "1e-3", "--out", str(out), "--device", "cpu", *extra]
    return train.main(argv), out


def log_of(out):
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method, frac", [("spt", None), ("xpe", None), ("dual", "0.7"), ("dual", "0.3")])
def test_each_method_trains_and_writes_a_run(tmp_path, tiny_model_dir, method, frac):
    extra = ["--method", method] + (["--xpe-frac", frac] if frac else []) + ["--lr-spt", "2e-3"]
    code, out = run(tmp_path, tiny_model_dir, *extra)
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"config.json", "log.csv", "prompt.safetensors", "best.safetensors",
                                              "state.pt", "xpe-train.lock"}
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["source_languages"] == ["eng_Latn", "fra_Latn"]
    assert config["n_spt"] + config["n_xpe"] == 20 and config["trainable_parameters"] > 0
    assert train.settings_of(config)["xpe_frac"] == {"spt": 0.0, "xpe": 1.0}.get(method, float(frac or 0))
    assert not set(config["settings"]) & set(config), "a setting written twice"
    at_top = {f.name for f in dataclasses.fields(train.TrainConfig)} & set(config)
    assert at_top == set(evaluate.SETTINGS_AT_TOP), "evaluate.py must read every setting train.py keeps at the top"
    rows = log_of(out)
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    # the log's rates are the schedule's scale times each group's own rate: --lr-spt is the SPT part's
    for r in rows:
        assert math.isclose(float(r["lr_spt"]) / 2e-3, float(r["lr_prompt"]) / 5e-3, rel_tol=1e-9)
    model, _ = xpe.load_artifact(out, xpe.load_backbone(str(tiny_model_dir))[0])
    assert model.prompt.prompt.shape == (20, 32)


NORM_PARTS = {"spt": ["spt", "head"], "xpe": ["pseudo", "mlp", "head"], "dual": ["spt", "pseudo", "mlp", "head"]}


@pytest.mark.parametrize("method", ["spt", "xpe", "dual"])
def test_the_log_explains_the_curves_with_the_norms_of_the_parts_a_method_has(tmp_path, tiny_model_dir, method):
    """Each evaluation logs the share of the steps done, the gradient norms of its step and the parameter norms of
    the parts the method has (the others empty) and the static prompt's mean row norm; pandas reads it as it is."""
    import pandas  # in requirements.txt through datasets
    code, out = run(tmp_path, tiny_model_dir, "--method", method)
    assert code == 0
    assert (out / "log.csv").read_text().splitlines()[0].split(",") == train.LOG_FIELDS
    rows, parts = log_of(out), NORM_PARTS[method]
    assert [float(r["budget_used"]) for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=1e-6)
    for r in rows:
        for part in train.PARTS:
            for column in (f"grad_norm_{part}", f"param_norm_{part}"):
                assert (r[column] != "") == (part in parts), (column, r)
                assert r[column] == "" or math.isfinite(float(r[column])) and float(r[column]) > 0, (column, r)
        # the whole gradient norm is the parts' together
        assert float(r["grad_norm"]) == pytest.approx(math.hypot(*(float(r[f"grad_norm_{p}"]) for p in parts)),
                                                      rel=1e-4)
    # the parameter norms are those of the last evaluation's weights (state.pt), the prompt's row norm that of the
    # best evaluation's prompt (prompt.safetensors)
    weights = torch.load(out / "state.pt", weights_only=True)["model"]
    named = {"spt": ["prompt.spt"], "pseudo": ["prompt.xpe.pseudo"],
             "mlp": [k for k in weights if k.startswith("prompt.xpe.mlp.")],
             "head": [k for k in weights if k.startswith("head.")]}
    for part in parts:
        norm = math.sqrt(sum(weights[k].double().pow(2).sum().item() for k in named[part]))
        assert float(rows[-1][f"param_norm_{part}"]) == pytest.approx(norm, rel=1e-5), part
    best = torch.load(out / "state.pt", weights_only=True)["progress"]["best_step"]
    prompt = load_file(str(out / "prompt.safetensors"))["prompt"]
    (at_best,) = [r for r in rows if int(r["step"]) == best]
    assert float(at_best["prompt_row_norm"]) == pytest.approx(prompt.norm(dim=-1).mean().item(), rel=1e-5)
    frame = pandas.read_csv(out / "log.csv")
    assert list(frame.columns) == train.LOG_FIELDS and len(frame) == 3
    assert frame[[f"grad_norm_{p}" for p in train.PARTS if p not in parts]].isna().all().all()


def test_the_logged_gradient_norms_are_taken_before_clipping(tiny_model_dir, tmp_path):
    backbone = xpe.load_backbone(str(tiny_model_dir))[0]
    cfg = train.TrainConfig(method="dual", xpe_frac=0.5, grad_clip=1.0, model=str(tiny_model_dir))
    r = train.start_run(cfg, tmp_path / "run", backbone, ["a", "b"], ["eng_Latn"], torch.device("cpu"))
    for params in r.parts.values():
        for p in params:
            p.grad = torch.full_like(p, 3.0)
    sizes = {part: sum(p.numel() for p in params) for part, params in r.parts.items()}
    train.update(r, torch.tensor(1.0))
    got = {k: v.item() for k, v in r.grad_norms.items()}
    assert got == pytest.approx({"grad_norm": 3 * math.sqrt(sum(sizes.values())),
                                 **{f"grad_norm_{part}": 3 * math.sqrt(n) for part, n in sizes.items()}})


def test_schedule_follows_the_closed_form(tiny_model_dir):
    cfg = train.TrainConfig(method="dual", xpe_frac=0.7, steps=200, warmup=0.1, cycles=2, lr_prompt=5e-3, lr=5e-5)
    model = xpe.build_classifier(xpe.load_backbone(str(tiny_model_dir))[0], xpe.PromptConfig(method="dual", xpe_frac=0.7))
    optimizer = train.make_optimizer(model, cfg)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0, 0.1, 0.0]

    def closed_form(step, base):
        if step < 20:
            return base * step / 20
        progress = (step - 20) / 180
        return base * 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1.0)))

    assert train.lr_scale(0, cfg) == 0.0  # warm-up starts at 0
    seen = {step: [g["lr"] * train.lr_scale(step, cfg) for g in optimizer.param_groups] for step in range(1, 200)}
    for step in (1, 10, 19, 20, 21, 65, 109, 110, 111, 155, 199):
        assert seen[step] == pytest.approx([closed_form(step, 5e-3), closed_form(step, 5e-3), closed_form(step, 5e-5),
                                            closed_form(step, 5e-5)])
    assert seen[110][0] == pytest.approx(5e-3)  # the hard restart
    assert train.early_stopping_start(cfg) == 100  # int(0.5 * steps), as the authors' callback


def test_early_stopping_follows_the_authors_callback(tmp_path, tiny_model_dir):
    """Nothing counts before int(0.5 * steps); the first evaluation from there sets the best loss, later ones
    count against it. Learning rates of 0 keep the dev loss constant, so every later evaluation is bad."""
    code, out = run(tmp_path, tiny_model_dir, "--steps", "60", "--eval-every", "2", "--patience", "3",
                    "--lr", "0", "--lr-prompt", "0", "--warmup", "0.1")
    assert code == 0
    steps = [int(r["step"]) for r in log_of(out)]
    assert train.early_stopping_start(train.TrainConfig(steps=60)) == 30
    assert steps[-1] == 30 + 3 * 2  # 30 sets the best dev loss; 32, 34 and 36 are the three bad evaluations
    progress = torch.load(out / "state.pt", weights_only=True)["progress"]
    assert progress["bad_evals"] == 3 and progress["ended"] == "early"
    assert json.loads((out / "config.json").read_text())["ended"] == {"why": "early", "step": 36}


def test_patience_0_turns_early_stopping_off(tmp_path, tiny_model_dir):
    code, out = run(tmp_path, tiny_model_dir, "--steps", "20", "--eval-every", "2", "--patience", "0",
                    "--lr", "0", "--lr-prompt", "0")
    assert code == 0
    assert [int(r["step"]) for r in log_of(out)] == list(range(2, 21, 2))


KILL_AT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import train
real, calls = train.update, []


def dying(*args, **kwargs):  # SIGKILL in the middle of training, at the n-th optimiser step of any run
    calls.append(1)
    if len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)


train.update = dying
sys.exit(train.main({argv!r}))
"""


def killed(argv, n):
    """Run train.main(argv) in a child process that SIGKILLs itself at the n-th run update."""
    done = subprocess.run([sys.executable, "-c", KILL_AT.format(root=str(ROOT), n=n, argv=argv)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def argv_of(tmp_path, model_dir, *extra, name="run"):
    return ["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", SOURCE, "--steps", "30",
            "--batch-size", "4", "--eval-every", "10", "--lr", "1e-3", "--out", str(tmp_path / name),
            "--device", "cpu", *extra]


def same_files(a, b, names=("prompt.safetensors", "best.safetensors")):
    for name in names:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (a, name, k)
    state_a = torch.load(a / "state.pt", weights_only=True)
    state_b = torch.load(b / "state.pt", weights_only=True)
    for k in state_a["model"]:
        assert torch.equal(state_a["model"][k], state_b["model"][k]), (a, k)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(log_of(a)) == strip(log_of(b))


def test_killed_run_resumes_to_the_same_prompt(tmp_path, tiny_model_dir):
    code, whole = run(tmp_path, tiny_model_dir, "--method", "dual", name="whole")
    assert code == 0
    argv = argv_of(tmp_path, tiny_model_dir, "--method", "dual", name="killed")
    killed(argv, 25)  # between evaluations 20 and 30
    out = tmp_path / "killed"
    assert [int(r["step"]) for r in log_of(out)] == [10, 20]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    seconds_before = float(log_of(out)[-1]["seconds"])
    assert train.main(argv + ["--resume"]) == 0
    same_files(whole, out)  # the norms too: the resumed step's gradients are those of the unbroken run
    assert all(r[f"grad_norm_{part}"] and r[f"param_norm_{part}"] for r in log_of(out) for part in train.PARTS)
    seconds = [float(r["seconds"]) for r in log_of(out)]
    assert seconds == sorted(seconds) and seconds[-1] > seconds_before  # a resumed run keeps counting its time


def events_of(folder):
    """{tag: [(step, value)]} of the scalars in a TensorBoard folder, read by tensorboard's own reader."""
    accumulator = require_extra("tensorboard.backend.event_processing.event_accumulator").EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def logged_scalars(out):
    """log.csv's numbers as TensorBoard holds them: {column: [(step, value as a float32)]}, empty cells left out."""
    rows = log_of(out)
    as_float32 = lambda text: torch.tensor(float(text), dtype=torch.float32).item()  # noqa: E731
    return {k: [(int(r["step"]), as_float32(r[k])) for r in rows if r[k]] for k in train.LOG_FIELDS[1:]
            if any(r[k] for r in rows)}


def test_tensorboard_events_equal_the_log_and_a_resumed_run_writes_no_step_twice(tmp_path, tiny_model_dir):
    require_extra("tensorboard")
    board = tmp_path / "board"
    code, whole = run(tmp_path, tiny_model_dir, "--method", "dual", "--tensorboard", str(board), name="whole")
    assert code == 0
    assert events_of(board / "whole") == logged_scalars(whole)
    assert len(logged_scalars(whole)) == len(train.LOG_FIELDS) - 1  # every column of a DUAL run, the step aside
    argv = argv_of(tmp_path, tiny_model_dir, "--method", "dual", "--tensorboard", str(board), name="killed")
    killed(argv, 25)  # between evaluations 20 and 30: the events of 10 and 20 are written
    assert [step for step, _ in events_of(board / "killed")["dev_loss"]] == [10, 20]
    assert train.main(argv + ["--resume"]) == 0
    events = events_of(board / "killed")
    assert events == logged_scalars(tmp_path / "killed")
    assert [step for step, _ in events["grad_norm_mlp"]] == [10, 20, 30]
    strip = lambda scalars: {k: v for k, v in scalars.items() if k != "seconds"}  # noqa: E731
    assert strip(events) == strip(events_of(board / "whole"))


def test_tensorboard_not_installed_is_one_line_before_training(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as where it is not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    code, out = run(tmp_path, tiny_model_dir, "--tensorboard", str(tmp_path / "board"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "train.py: error: --tensorboard needs the tensorboard package" in err
    assert not out.exists() and not (tmp_path / "board").exists()


def test_tensorboard_folder_holding_another_runs_events_is_refused(tmp_path, tiny_model_dir, capsys):
    require_extra("tensorboard")
    (tmp_path / "board" / "run").mkdir(parents=True)
    (tmp_path / "board" / "run" / "events.out.tfevents.1.host.1.0").write_bytes(b"another run's")
    code, out = run(tmp_path, tiny_model_dir, "--tensorboard", str(tmp_path / "board"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "already holds events: pass --resume" in err
    assert not out.exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_state(tmp_path, tiny_model_dir, capsys):
    # An absurd prompt learning rate overflows the prompt at the first step after warm-up starts from 0.
    code, out = run(tmp_path, tiny_model_dir, "--method", "spt", "--lr-prompt", "1e38",
                    "--eval-every", "1")
    assert code == 1
    err = capsys.readouterr().err
    assert "loss was not finite at step" in err and "--lr-prompt 1e+38" in err
    state = torch.load(out / "state.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    bad_step = int(err.split("not finite at step ")[1].split()[0])
    assert state["progress"]["step"] == bad_step - 1 and bad_step > 1
    assert all(math.isfinite(float(r["dev_loss"])) for r in log_of(out))


def test_sequential_phase_starts_from_the_source_run(tmp_path, tiny_model_dir):
    code, source = run(tmp_path, tiny_model_dir, "--method", "dual", name="source")
    assert code == 0
    # With learning rates of 0 the target phase must keep exactly what it loaded.
    code, target = run(tmp_path, tiny_model_dir, "--target", "nqo_Nkoo", "--init", str(source), "--lr", "0",
                       "--lr-prompt", "0", "--steps", "6", "--eval-every", "3", name="target")
    assert code == 0
    config = json.loads((target / "config.json").read_text())
    assert config["method"] == "dual" and config["target_languages"] == ["nqo_Nkoo"]
    settings = train.settings_of(config)
    assert (settings["warmup"], settings["patience"], settings["encoder_dropout"]) == (0.05, 30, 0.0)
    a, b = load_file(str(source / "best.safetensors")), load_file(str(target / "best.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_target_defaults_without_flags():
    (cfg,) = train.resolve_configs(train.parse_args(["--method", "dual"]))
    assert (cfg.xpe_frac, cfg.steps, cfg.warmup, cfg.patience, cfg.encoder_dropout) == (0.7, 24000, 0.1, 20, 0.1)
    assert (cfg.batch_size, cfg.lr_prompt, cfg.lr, cfg.weight_decay, cfg.max_length) == (32, 5e-3, 5e-5, 0.1, 164)
    assert [str(p) for p in train.run_dirs([cfg], None)] == ["runs/dual0.7-joshi5-s42"]


BAD_INPUT = [  # every flag's refusals but the range of a setting, which SETTING_WALK derives from its declaration
    (["--method", "prefix"], "unknown method 'prefix'"),
    (["--method", "spt,prefix"], "unknown method 'prefix'"),
    (["--method", "spt,dual:1.5"], "write spt, xpe or dual:R with 0 < R < 1"),
    (["--method", "spt,dual"], "unknown method 'dual': write spt, xpe or dual:R"),
    (["--method", "spt,xpe:0.5"], "unknown method 'xpe:0.5'"),
    (["--method", "spt,spt"], "names a run twice"),
    (["--method", "dual:0.7,dual:0.71"], "dual:0.7 and dual:0.71 both split the prompt into 6 SPT + 14 XPE"),
    (["--method", "dual:0.05,dual:0.01"], "both split the prompt into 19 SPT + 1 XPE"),  # clamped to one
    (["--method", "dual:0.3,dual:0.5", "--prompt-len", "2"], "both split the prompt into 1 SPT + 1 XPE"),
    (["--method", "dual", "--xpe-frac", "0"], "dual needs 0 < xpe_frac < 1"),
    (["--method", "spt,xpe", "--xpe-frac", "0.5"], "--xpe-frac goes with a single --method"),
    (["--seed", "5-1"], "runs backwards"),
    (["--seed", "1,x"], "a list 1,2,5 or a range 1-10"),
    (["--seed", "-3"], "a list 1,2,5 or a range 1-10; a seed must be a whole number from 0"),
    (["--seed", "²"], "--seed ²: use a number"),  # str.isdigit takes it; int() does not
    (["--seed", "0-99999999999"], "names more than 10,000 seeds"),
    (["--source", "eng_Latn,xyz_Latn"], "xyz_Latn"),
    (["--source", "joshi6"], "joshi6"),
    (["--target", "fra_Latn"], "--target needs --init"),
    (["--init", "/nonexistent"], "--init needs --target"),
    (["--target", "fra_Latn", "--init", "/nonexistent"], "is not a finished source run"),
    (["--model", "/nonexistent"], "cannot load the backbone '/nonexistent'"),
    (["--data-dir", "/nonexistent"], "data directory /nonexistent does not exist"),
    (["--groups-file", "/nonexistent.json"], "group file /nonexistent.json not found"),
    (["--max-length", "235"], "use --max-length 234 or less"),  # the tiny model has 256 positions, from 2
    (["--prompt-len", "600"], "use --prompt-len 90 or less, which leaves 164 for text"),
    (["--device", "tpu"], "--device tpu: not a device"),
    (["--device", "cuda:7"], "--device cuda:7: no such CUDA device"),
    (["--resume"], "does not exist, so there is nothing to resume"),
    (["--resume", "--overwrite"], "give one of them"),
    (["--pack-seeds", "--method", "spt,spt"], "names a run twice"),
    (["--max-runs", "1" + "0" * 12], "--max-runs must be a whole number from 1 to 100,000"),  # 64 M runs were built
    (["--method", "spt,dual:٠.٥"], "unknown method 'dual:٠.٥'"),  # float() reads it as 0.5
    (["--seed", "1,2", "--max-runs", "1"], "this call plans 2 runs"),  # a switch: only the runs it packs can be wrong
    (["--tensorboard", "/dev/null/board"], "--tensorboard /dev/null/board is below /dev/null, which is a file"),
    (["--template", "{text} and {text}"], "must hold {text} once"),
    (["--template", "text: {text} topic:"], "--template is for a decoder backbone"),  # the tiny model is XLM-R
    (["--chat-template"], "--chat-template is for a decoder backbone"),
]


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys, args, words):
    code, out = run(tmp_path, tiny_model_dir, *args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert words in err and len(err.splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


# flags a refusal may name though the call did not give them: what to add to go on (a --target needs --init; pass
# --resume or --overwrite; allow more with --max-runs; choose another --out)
ADVICE = {"--init", "--target", "--resume", "--overwrite", "--max-runs", "--out"}


@pytest.mark.parametrize("args, words", BAD_INPUT)
def test_a_refusal_names_no_setting_the_call_did_not_give(tmp_path, tiny_model_dir, capsys, args, words):
    code, out = run(tmp_path, tiny_model_dir, *args)
    (line,) = capsys.readouterr().err.strip().splitlines()
    given = {a.split("=")[0] for a in args + ["--model", "--data-dir", "--source", "--steps", "--batch-size",
                                                "--eval-every", "--lr", "--out", "--device"] if a.startswith("--")}
    assert code == 2 and set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)) - given <= ADVICE, line


# each setting's flag (and the call's own number flags, CALL_VALUES) with each value just outside the range declared
# for it (conftest.outside); a text setting's flag with the choice it lacks or a blank, where its grammar (a method
# list, a path, a template) refuses
SETTING_WALK = [(f.name, text) for f in dataclasses.fields(train.TrainConfig)
                for text in outside(f.metadata["values"], as_text=True)] + [
    (name, text) for name, values in train.CALL_VALUES.items() for text in outside(values, as_text=True)]
GRAMMAR = {"method": "unknown method 'nope'", "model": "is an empty name", "template": "must hold {text} once"}


@pytest.mark.parametrize("name, text", SETTING_WALK)
def test_a_setting_outside_its_declared_range_is_refused_by_its_flag(tmp_path, tiny_model_dir, capsys, name, text):
    flag = "--" + name.replace("_", "-")
    extra = ["--method", "dual"] if name == "xpe_frac" else []  # a fraction goes with one method
    try:
        code, out = run(tmp_path, tiny_model_dir, *extra, f"{flag}={text}")
    except SystemExit as e:  # argparse's own refusal (train.Parser): an empty path
        code, out = e.code, tmp_path / "run"
    (line,) = capsys.readouterr().err.strip().splitlines()
    values = train.CALL_VALUES.get(name) or train.values_of(name)
    assert code == 2 and flag in line and GRAMMAR.get(name, values.words()) in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_setting_the_committed_runs_lack_declares_the_value_they_had():
    """A new setting is one field of TrainConfig: the runs recorded before it (the replication's and the sweep's under
    docs/) must still resume and pool with the runs after it, so such a setting declares later=, the value they had
    (train.LATER_SETTINGS); every other setting each of those runs records."""
    configs = sorted((ROOT / "docs").glob("*/runs/*/config.json"))
    assert len(configs) >= 40
    for path in configs:
        recorded = train.settings_of(json.loads(path.read_text()))
        lacking = {f.name for f in dataclasses.fields(train.TrainConfig)} - set(recorded) - set(train.LATER_SETTINGS)
        assert not lacking, (path, lacking)


def test_every_setting_holds_the_values_at_the_edges_of_its_declared_range():
    for f in dataclasses.fields(train.TrainConfig):
        values = f.metadata["values"]
        for value in inside(values):
            assert values.holds(value), (f.name, value)
        for value in outside(values):
            assert not values.holds(value), (f.name, value)


@pytest.mark.parametrize("kind, text", [(int, "٣"), (int, "1_0"), (int, " 4"), (int, "+3"), (int, "4.0"),
                                        (float, "1_0.5"), (float, "٣"), (float, "infinity"), (float, "0x1p3")])
def test_a_number_is_read_as_python_writes_one(kind, text):
    """Values.read, which the flags, a sweep's lists and the CSV readers share: int() and float() take these too."""
    with pytest.raises(ValueError):
        train.Values(kind).read(text)
    assert [train.Values(int).read(t) for t in ("-3", "0", "12")] == [-3, 0, 12]
    assert [train.Values(float).read(t) for t in ("5e-05", "1.", ".5", "1E+3", "-inf", "NaN")][:5] == [
        5e-05, 1.0, 0.5, 1000.0, -math.inf]


def test_a_flag_refuses_a_number_python_would_read_but_never_writes(capsys):
    for argv in (["--steps", "1_000"], ["--lr", "1e-3,٣"], ["--max-length", "٣٣"], ["--pack-size", "٣"],
                 ["--max-runs", " 8"]):
        assert argv[0] in refused_in_one_line(train.main, argv, capsys, "train.py")


def test_bad_input_walks_every_flag():
    walked = {arg.split("=")[0] for args, _ in BAD_INPUT for arg in args if arg.startswith("--")} | {
        "--" + name.replace("_", "-") for name, _ in SETTING_WALK}
    flags = {opt for action in train.build_parser()._actions for opt in action.option_strings if opt.startswith("--")}
    assert flags - walked == {"--help", "--out"}  # --out: the tests below (a file, folders of others, in use)


def test_argparse_refusals_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys):
    """An unknown flag, a missing value, a bad type and an empty --out, --model or --init: one line, exit 2, no usage,
    nothing written (an empty --out trained into runs/)."""
    monkeypatch.chdir(tmp_path)
    cases = argparse_refusals(train.build_parser())
    assert {"--out", "--model", "--init", "--data-dir", "--groups-file", "--steps", "--max-runs", "--pack-size"} <= {
        flag for _, flag in cases}
    for argv, flag in cases:
        assert flag in refused_in_one_line(train.main, argv, capsys, "train.py")
    line = refused_in_one_line(train.main, ["--method", "dual", "--lr-spt", "-1,5e-3"], capsys, "train.py")
    assert "--lr-spt: expected one argument (a value that begins with '-' is written --lr-spt=-1,5e-3)" in line
    assert list(tmp_path.iterdir()) == []


def test_every_flag_that_names_a_file_or_folder_refuses_an_empty_name():
    """The kind of `--out ""` (it trained into runs/): every flag of every command whose value is a path (its metavar
    says FILE or DIR, or it is one of the path settings) takes train.path_text, so the walk above reaches it."""
    import evaluate
    from tools import bench, peft_adapters

    parsers = {"train.py": train.build_parser(), "evaluate.py": evaluate.parser(), "tools.bench": bench.parser(),
               "tools.peft_adapters": peft_adapters.parser()}
    named = {"out", "model", "init", "data_dir", "groups_file", "runs", "scores", "tokenizer", "tensorboard"}
    actions = [(prog, a) for prog, p in parsers.items() for a in p._actions]
    actions += [(f"{prog} {name}", a) for prog, p in parsers.items() for action in p._actions
                if getattr(action, "choices", None) and isinstance(action.choices, dict)
                for name, sub in action.choices.items() for a in sub._actions]  # subcommands
    paths = [(prog, a) for prog, a in actions if a.option_strings and a.nargs != 0 and (
        a.dest in named or any(word in str(a.metavar or "") for word in ("FILE", "DIR")))]
    assert {"--tensorboard", "--out", "--curves"} <= {a.option_strings[-1] for _, a in paths}
    untyped = [f"{prog} {a.option_strings[-1]}" for prog, a in paths if a.type is not train.path_text]
    assert not untyped, untyped


def test_out_that_is_a_file_is_refused(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "run").write_text("mine")
    code, out = run(tmp_path, tiny_model_dir)
    assert code == 2 and "--out" in capsys.readouterr().err
    assert out.read_text() == "mine"


@pytest.mark.parametrize("case, words", [("below a file", "which is a file"), ("a dangling link", "does not exist"),
                                         ("read-only", "is read-only for this process")])
def test_an_out_that_cannot_be_written_is_one_line_and_nothing_is_left(tmp_path, tiny_model_dir, capsys,
                                                                         monkeypatch, case, words):
    """Checked before the backbone loads: no lock-only folder, no traceback (also as root, which os.access
    stands for here: root may write into a read-only folder, so read-only is what os.access says)."""
    argv = ["--model", str(tiny_model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", SOURCE, "--steps", "2",
            "--batch-size", "4"]
    if case == "below a file":
        (tmp_path / "a-file").write_text("mine")
        out = tmp_path / "a-file" / "run"
    elif case == "a dangling link":
        out = tmp_path / "link"
        out.symlink_to(tmp_path / "nowhere")
    else:
        (tmp_path / "locked").mkdir()
        out = tmp_path / "locked" / "run"
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path / "locked"
                            else real(p, mode, **kw))
    assert train.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists() and not (tmp_path / "nowhere").exists()


def test_grad_clip_0_is_off(tmp_path, tiny_model_dir):
    code, off = run(tmp_path, tiny_model_dir, "--steps", "4", "--eval-every", "2", "--grad-clip", "0", name="off")
    code_huge, huge = run(tmp_path, tiny_model_dir, "--steps", "4", "--eval-every", "2", "--grad-clip", "1e30",
                          name="huge")
    assert code == code_huge == 0
    a, b = (torch.load(d / "state.pt", weights_only=True)["model"] for d in (off, huge))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "0: off" in next(action.help for action in train.build_parser()._actions if action.dest == "grad_clip")


@pytest.mark.parametrize("split", ["train", "dev"])
def test_an_empty_split_is_refused_before_anything_is_written(tmp_path, tiny_model_dir, capsys, split):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(FIXTURE_SIB200, data)
    (data / "fra_Latn" / f"{split}.tsv").write_text("index_id\tcategory\ttext\n")
    out = tmp_path / "out"
    code = train.main(["--model", str(tiny_model_dir), "--data-dir", str(data), "--source", SOURCE, "--out", str(out),
                       "--steps", "2", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"the {split} split of fra_Latn has no rows" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_init_from_another_backbone_or_prompt_length_is_refused(tmp_path, tiny_model_dir, capsys):
    code, source = run(tmp_path, tiny_model_dir, "--steps", "10", name="source")
    assert code == 0
    config = json.loads((source / "config.json").read_text())
    config["model"] = "xlm-roberta-base"
    (source / "config.json").write_text(json.dumps(config))
    code, out = run(tmp_path, tiny_model_dir, "--target", "fra_Latn", "--init", str(source), name="t1")
    assert code == 2 and "trained with model 'xlm-roberta-base'" in capsys.readouterr().err
    assert not out.exists()
    config.update(model=str(tiny_model_dir), prompt_len=10, n_spt=0, n_xpe=10)  # an xpe run of 10 vectors
    (source / "config.json").write_text(json.dumps(config))
    code, out = run(tmp_path, tiny_model_dir, "--target", "fra_Latn", "--init", str(source), "--prompt-len", "20",
                    name="t2")
    assert code == 2 and "trained with prompt_len 10" in capsys.readouterr().err
    assert not out.exists()


def test_a_local_backbone_is_recorded_by_its_absolute_path_and_a_target_run_takes_its_source_runs(
        tmp_path, tiny_model_dir, monkeypatch):
    """A run trained with a relative --model is scored from any working folder; a target run without --model
    takes its source run's backbone."""
    monkeypatch.chdir(tiny_model_dir.parent)
    assert train.main(["--model", tiny_model_dir.name, "--data-dir", str(FIXTURE_SIB200), "--source", "eng_Latn",
                       "--steps", "4", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "source")]) == 0
    assert json.loads((tmp_path / "source" / "config.json").read_text())["model"] == str(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    assert train.main(["--data-dir", str(FIXTURE_SIB200), "--target", "fra_Latn", "--init", "source", "--steps", "2",
                       "--batch-size", "4", "--device", "cpu", "--out", "target"]) == 0
    assert json.loads((tmp_path / "target" / "config.json").read_text())["model"] == str(tiny_model_dir)
    assert evaluate.main(["--runs", "source", "target", "--data-dir", str(FIXTURE_SIB200), "--group", "fra_Latn",
                          "--device", "cpu", "--out", "results"]) == 0


def test_a_relative_backbone_path_that_is_no_folder_here_is_one_line(tmp_path, capsys):
    with pytest.raises(xpe.UsageError) as e:
        xpe.load_backbone("./no-such-backbone")
    assert "it is a path" in str(e.value) and "working folder" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("change, words", [
    (lambda config: "not json", "--resume: {out}: config.json cannot be read as JSON"),
    (lambda config: dict(config, settings=dict(config["settings"], lr=-1)),
     "--resume: {out}: config.json's settings.lr is -1: it must be a finite number"),
], ids=["not-json", "lr-out-of-range"])
def test_a_resume_reads_the_runs_config_json_as_every_reader_does(tmp_path, tiny_model_dir, capsys, change, words):
    """--resume compares the run's recorded settings with the call's: read by train.read_run_config, so a config.json
    it cannot take is one line, as for --init and evaluate.py, and nothing changes."""
    code, out = run(tmp_path, tiny_model_dir, "--steps", "10")
    assert code == 0
    changed = change(json.loads((out / "config.json").read_text()))
    (out / "config.json").write_text(changed if isinstance(changed, str) else json.dumps(changed))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code, _ = run(tmp_path, tiny_model_dir, "--steps", "10", "--resume")
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and words.format(out=out) in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_holding_another_run_needs_resume_or_overwrite(tmp_path, tiny_model_dir, capsys):
    code, out = run(tmp_path, tiny_model_dir, "--steps", "10")
    assert code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _ = run(tmp_path, tiny_model_dir, "--steps", "10", "--method", "spt")
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    code, _ = run(tmp_path, tiny_model_dir, "--steps", "10", "--method", "spt", "--resume")
    assert code == 2 and "holds a different run (method 'xpe'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _ = run(tmp_path, tiny_model_dir, "--steps", "10", "--method", "spt", "--overwrite")
    assert code == 0 and json.loads((out / "config.json").read_text())["method"] == "spt"


def test_e5_small_learns_english_topics(e5_run):
    """The issue's check on a real encoder: 300 steps at lr 1e-3 (the paper's 5e-5 needs thousands)."""
    out, seconds = e5_run
    rows = log_of(out)
    assert max(float(r["dev_accuracy"]) for r in rows) > 0.6
    print(f"e5-small try-out, 300 steps: best dev accuracy {max(float(r['dev_accuracy']) for r in rows):.3f}, "
          f"{seconds:.0f} s ({300 / seconds:.2f} steps/s, model load and dev evaluations included)")


def test_a_short_run_reproduces_its_recorded_losses_and_prompt(tmp_path, tiny_model_dir):
    """Recorded on CPU (torch 2.13, transformers 5.24 and 4.46 alike) in float32; no change to the loop, the
    schedule or the packing may move it."""
    code, out = run(tmp_path, tiny_model_dir, "--method", "dual", "--precision", "fp32")
    assert code == 0
    rows = log_of(out)
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([2.120618, 2.019579, 2.089276], abs=2e-5)
    assert [float(r["dev_loss"]) for r in rows] == pytest.approx([2.028272, 2.026696, 2.019567], abs=2e-5)
    prompt = load_file(str(out / "prompt.safetensors"))["prompt"].double()
    assert prompt.sum().item() == pytest.approx(8.083167727803811, rel=1e-4)
    assert prompt.abs().sum().item() == pytest.approx(224.96134573058225, rel=1e-5)


# ---- several runs in one call: packs ----------------------------------------------------------------

PACK = ["--method", "spt,dual:0.7,xpe", "--seed", "1-2"]
QUIET = ["--encoder-dropout", "0", "--head-dropout", "0"]  # with quiet_model_dir: every dropout off
ALONE = {"spt": ["--method", "spt"], "dual0.7": ["--method", "dual", "--xpe-frac", "0.7"], "xpe": ["--method", "xpe"]}


def close_runs(a, b, tol=1e-5):
    """The same run within tol: its dev losses and accuracies, its best and last prompt and head."""
    rows_a, rows_b = log_of(a), log_of(b)
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b], (a, b)
    for x, y in zip(rows_a, rows_b):
        assert float(x["dev_loss"]) == pytest.approx(float(y["dev_loss"]), abs=tol), (a, x, y)
        assert x["dev_accuracy"] == y["dev_accuracy"]
    for tensors_a, tensors_b in [(load_file(str(a / n)), load_file(str(b / n)))
                                 for n in ("prompt.safetensors", "best.safetensors")] + \
            [(torch.load(a / "state.pt", weights_only=True)["model"],
              torch.load(b / "state.pt", weights_only=True)["model"])]:
        assert tensors_a.keys() == tensors_b.keys()
        for k in tensors_a:
            torch.testing.assert_close(tensors_a[k], tensors_b[k], atol=tol, rtol=0)


def test_each_packed_run_trains_as_it_would_alone(tmp_path, quiet_model_dir):
    # patience 1 from the start: runs leave the pack at different evaluations while the others go on
    flags = [*QUIET, "--patience", "1", "--stop-after", "0", "--eval-every", "2"]
    code, pack = run(tmp_path, quiet_model_dir, *PACK, *flags, name="pack")
    assert code == 0
    names = sorted(p.name for p in pack.iterdir())
    assert names == sorted(f"{m}-eng_Latn+fra_Latn-s{s}" for m in ALONE for s in (1, 2))
    ends = {name: int(log_of(pack / name)[-1]["step"]) for name in names}
    assert min(ends.values()) < 30 and len(set(ends.values())) > 1, ends
    code, packed = run(tmp_path, quiet_model_dir, *PACK, *flags, "--pack-seeds", "--pack-size", "6",
                       name="packed-seeds")
    assert code == 0
    for name in names:
        method, seed = name.split("-")[0], name.rsplit("-s", 1)[1]
        code, alone = run(tmp_path, quiet_model_dir, *ALONE[method], "--seed", seed, *flags, name=f"alone-{name}")
        assert code == 0
        close_runs(pack / name, alone)
        close_runs(packed / name, alone)


def test_a_sweep_trains_every_value_in_packs_each_run_as_it_would_alone(tmp_path, quiet_model_dir, capsys):
    flags = [*QUIET, "--method", "xpe", "--patience", "1", "--stop-after", "0"]
    code, sweep = run(tmp_path, quiet_model_dir, *flags, "--lr-prompt", "5e-3,5e-5", "--seed", "1-3", name="sweep")
    assert code == 0
    assert "train.py: 6 runs in 3 packs of at most 2 (swept: lr_prompt 0.005 5e-05)" in capsys.readouterr().out
    names = {(v, s): f"xpe-lr_prompt{v}-eng_Latn+fra_Latn-s{s}" for v in ("0.005", "5e-05") for s in (1, 2, 3)}
    assert sorted(p.name for p in sweep.iterdir()) == sorted(names.values())
    for (value, seed), name in names.items():
        assert json.loads((sweep / name / "config.json").read_text())["settings"]["lr_prompt"] == float(value)
        code, alone = run(tmp_path, quiet_model_dir, *flags, "--lr-prompt", value, "--seed", str(seed),
                          name=f"alone-{name}")
        assert code == 0
        close_runs(sweep / name, alone)


@pytest.mark.parametrize("args, words", [
    (["--steps", "10,20"], "takes one value, not the list 10,20: it shapes the batch or the sequence"),
    (["--batch-size", "4,8"], "takes one value"),
    (["--lr", "1e-3,x"], "--lr 1e-3,x: use a number or a list of numbers"),
    (["--lr", "1e-3,1e-3"], "names a value twice"),
    (["--encoder-hidden", "64,1.5"], "(whole numbers)"),
    (["--head-dropout", "0.1,1.5"], f"--head-dropout must be {train.PROBABILITY.words()}, got 1.5"),
    (["--lr", "1e-3,1e-4,1e-5", "--seed", "1-30"], "this call plans 90 runs"),
    (["--max-runs", "0"], f"--max-runs must be {train.CALL_VALUES['max_runs'].words()}"),
])
def test_bad_sweeps_are_refused_in_one_line_before_anything_is_written(tmp_path, tiny_model_dir, capsys, args, words):
    try:
        code, out = run(tmp_path, tiny_model_dir, *args)
    except SystemExit as e:  # argparse's own refusal: exit 2, usage and one line
        code, out = e.code, tmp_path / "run"
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert not out.exists()


def test_a_sweep_is_counted_before_it_is_built(tmp_path):
    """400 values in each of three lists are 64 M runs: refused in one line from the product of the lists' lengths,
    in a process that has 1 GiB of memory to spare (building the combinations took a MemoryError, or the machine's)."""
    values = ",".join(f"{i}e-6" for i in range(1, 401))
    code = ("import resource, sys, train\n"
            "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            "resource.setrlimit(resource.RLIMIT_AS, (used + 2 ** 30, resource.RLIM_INFINITY))\n"
            "sys.exit(train.main(sys.argv[1:]))\n")
    argv = ["--lr", values, "--lr-prompt", values, "--weight-decay", values, "--out", str(tmp_path / "runs")]
    for most, words in ((None, "this call plans 64,000,000 runs (1 methods x 64,000,000 combinations"),
                        ("100000000", "--max-runs must be a whole number from 1 to 100,000")):  # one allowing them
        more = ["--max-runs", most] if most else []
        done = subprocess.run([sys.executable, "-c", code, *argv, *more], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and words in err[0], done.stderr[-2000:]
        assert list(tmp_path.iterdir()) == []


UNREAD = [  # (method, flags, the swept flag, words): a list over a setting that the method never reads
    ("xpe", ["--lr-spt", "1e-3,1e-4"], "--lr-spt", "xpe never reads lr_spt (it has no SPT part)"),
    ("spt", ["--encoder-hidden", "64,128"], "--encoder-hidden",
     "spt never reads encoder_hidden (it has no prompt encoder)"),
    ("spt", ["--encoder-dropout", "0,0.1"], "--encoder-dropout",
     "spt never reads encoder_dropout (it has no prompt encoder)"),
    ("spt", ["--lr-spt", "1e-3", "--lr-prompt", "1e-3,1e-4"], "--lr-prompt",
     "spt never reads lr_prompt (its prompt learns at --lr-spt alone)"),
    ("spt,xpe", ["--encoder-hidden", "64,128"], "--encoder-hidden", "spt never reads encoder_hidden"),  # xpe's differ
    ("xpe,dual:0.5", ["--lr-spt=-1,1e-3", "--seed", "1-2"], "--lr-spt", "xpe never reads lr_spt"),
]


@pytest.mark.parametrize("method, flags, flag, words", UNREAD)
def test_a_list_over_a_setting_the_method_never_reads_is_refused(tmp_path, capsys, method, flags, flag, words):
    """Each method with each swept setting it never reads: one line before anything, naming the list and never a
    flag the call did not give; a method that reads it sweeps it."""
    argv = ["--method", method, *flags, "--out", str(tmp_path / "runs")]
    code = train.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert err[0].startswith(f"train.py: error: {flag} ") and list(tmp_path.iterdir()) == []
    assert set(re.findall(r"--[a-z-]+", err[0])) <= {a.split("=")[0] for a in argv if a.startswith("--")}, err
    reads = "dual:0.5" if "spt" in method else "spt" if "lr_spt" in words else "xpe"
    cfgs = train.resolve_configs(train.parse_args(["--method", reads, *flags]))
    assert len({json.dumps(dataclasses.asdict(c), sort_keys=True) for c in cfgs}) == len(cfgs) > 1


def test_every_method_and_setting_it_never_reads_is_walked():
    walked = {(m, flag.strip("-").replace("-", "_")) for methods, _, flag, words in UNREAD
              for m in methods.split(",") if f"{m} never reads" in words}
    unread = {(m, k) for m, frac in (("spt", 0.0), ("xpe", 1.0), ("dual", 0.5))
              for k in train.unread_settings(m, frac, 20)}
    assert unread == walked and train.unread_settings("dual", 0.5, 20) == set()


@pytest.mark.parametrize("method, flags, flag, words", UNREAD[:4])
def test_one_value_of_a_setting_the_method_never_reads_is_said_before_training(method, flags, flag, words):
    """One value (no list) is taken, and the call says that the method never reads it; a method that reads every
    setting given, nothing."""
    one = [a.split(",")[0] for a in flags]
    args = train.parse_args(["--method", method, *one])
    notes = train.unread_notes(args, train.resolve_configs(args))
    assert any(f"{method} never reads {flag}:" in line for line in notes), notes
    for reads in (["--method", "dual", *one], ["--method", "spt", "--lr-prompt", "1e-3"]):  # spt's follows it
        args = train.parse_args(reads)
        assert train.unread_notes(args, train.resolve_configs(args)) == []


def test_lr_spt_below_0_and_the_prompt_rate_are_one_run_and_said_so(tmp_path, capsys):
    """--lr-spt=-1,5e-3 with the default --lr-prompt 5e-3: one line about what -1 means, not about --init."""
    code = train.main(["--method", "dual", "--lr-spt=-1,5e-3", "--out", str(tmp_path / "runs")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "a value below 0 stands for the prompt learning rate, 0.005, so -1 and 0.005 are one run" \
        in line and "--init" not in line and "--lr-prompt" not in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_target_call_takes_one_value_a_setting(tmp_path, tiny_model_dir, capsys):
    code, source = run(tmp_path, tiny_model_dir, "--steps", "4", name="source")
    assert code == 0
    capsys.readouterr()
    code, out = run(tmp_path, tiny_model_dir, "--target", "fra_Latn", "--init", str(source), "--lr", "1e-3,1e-4",
                    name="target")
    err = capsys.readouterr().err
    assert code == 2 and "--lr takes one value with --target" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_run_whose_loss_overflows_leaves_the_pack_and_the_others_go_on(tmp_path, quiet_model_dir, capsys):
    # the warm-up's first update has a learning rate of 0, the second overflows the SPT part
    flags = [*QUIET, "--lr-spt", "1e38", "--eval-every", "1"]
    code, pack = run(tmp_path, quiet_model_dir, "--method", "spt,xpe", *flags, name="pack")
    assert code == 1
    err = capsys.readouterr().err
    assert "spt-eng_Latn+fra_Latn-s42: stopped: the loss was not finite at step 2" in err, err
    assert "the last good state, from step 1, is kept" in err
    assert "xpe-eng_Latn+fra_Latn-s42: stopped" not in err
    spt = pack / "spt-eng_Latn+fra_Latn-s42"
    assert all(torch.isfinite(v).all() for v in torch.load(spt / "state.pt", weights_only=True)["model"].values())
    assert int(log_of(spt)[-1]["step"]) < 30
    code, alone = run(tmp_path, quiet_model_dir, "--method", "xpe", *flags, name="alone")
    assert code == 0
    close_runs(pack / "xpe-eng_Latn+fra_Latn-s42", alone)
    # a resumed call skips the stopped run instead of training it into the same overflow again
    assert train.main(argv_of(tmp_path, quiet_model_dir, "--method", "spt,xpe", *flags, "--resume", name="pack")) == 1
    assert int(log_of(spt)[-1]["step"]) < 30


@pytest.mark.parametrize("mode, kill_at", [
    ([], 3 * 30 + 3 * 24 + 1),  # seed 1's pack done; in step 25 of seed 2's, after one of its three runs took it
    (["--pack-seeds", "--pack-size", "6"], 6 * 24 + 3),  # in step 25, after three of the six runs took it
], ids=["seeds-in-turn", "seeds-packed"])
def test_killed_pack_resumes_to_the_same_prompts(tmp_path, tiny_model_dir, mode, kill_at):
    """Dropout on (the backbone's and ours): the resumed pack continues the same random stream."""
    code, whole = run(tmp_path, tiny_model_dir, *PACK, *mode, name="whole")
    assert code == 0
    argv = argv_of(tmp_path, tiny_model_dir, *PACK, *mode, name="killed")
    killed(argv, kill_at)
    assert train.main(argv + ["--resume"]) == 0
    for run_dir in whole.iterdir():
        same_files(run_dir, tmp_path / "killed" / run_dir.name)


def test_lr_spt_applies_to_the_spt_part_only(tiny_model_dir):
    backbone = xpe.load_backbone(str(tiny_model_dir))[0]
    argv = ["--method", "spt,dual:0.7,xpe", "--lr-spt", "1e-4", "--lr-prompt", "5e-3", "--lr", "5e-5"]
    for cfg in train.resolve_configs(train.parse_args(argv)):
        model = xpe.build_classifier(backbone, train.prompt_config(cfg))
        optimizer = train.make_optimizer(model, cfg)
        rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        if cfg.method != "xpe":
            assert rate[id(model.prompt.spt)] == 1e-4
        if cfg.method != "spt":
            assert rate[id(model.prompt.xpe.pseudo)] == 5e-3
            assert rate[id(model.prompt.xpe.mlp[0].weight)] == 5e-5
        assert rate[id(model.head.dense.weight)] == 5e-5
    (cfg,) = train.resolve_configs(train.parse_args(["--method", "dual", "--lr-prompt", "2e-3"]))
    assert cfg.lr_spt == 2e-3  # by default the SPT part trains at --lr-prompt, as the paper says


def test_target_run_inherits_its_source_runs_seed(tmp_path, tiny_model_dir):
    code, source = run(tmp_path, tiny_model_dir, "--seed", "7", "--steps", "4", name="source")
    assert code == 0
    base = ["--target", "nqo_Nkoo", "--init", str(source), "--model", str(tiny_model_dir)]
    (cfg,) = train.resolve_configs(train.parse_args(base))
    assert cfg.seed == 7
    (cfg,) = train.resolve_configs(train.parse_args(base + ["--seed", "3"]))
    assert cfg.seed == 3


def test_every_flag_says_what_it_sets_and_its_default():
    for action in train.build_parser()._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert not text.startswith("default") and len(text.split()) >= 5, (action.dest, text)
        if not isinstance(action, argparse._StoreTrueAction):
            assert "(default" in text, (action.dest, text)


@pytest.mark.parametrize("native, given, recorded", [(False, "auto", "fp32"), (True, "auto", "fp32"),
                                                     (False, "bf16", "bf16"), (True, "fp32", "fp32")])
def test_the_run_records_the_precision_it_trained_in(tmp_path, tiny_model_dir, monkeypatch, native, given, recorded):
    """--precision auto is float32 on a CPU, native bf16 or not; config.json records the resolved one."""
    cpu_bf16(monkeypatch, native, native)
    code, out = run(tmp_path, tiny_model_dir, "--precision", given, "--steps", "4", "--eval-every", "4")
    assert code == 0
    assert json.loads((out / "config.json").read_text())["settings"]["precision"] == recorded


def test_an_unknown_precision_is_one_line(tmp_path, tiny_model_dir, capsys):
    code, out = run(tmp_path, tiny_model_dir, "--precision", "fp16")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "auto, fp32, bf16" in err[0], err
    assert not out.exists()



# ---- run folders: only ours written to or removed, one call a folder, a kill after any write resumes identically ------

TWO_BY_TWO = ["--method", "spt,xpe", "--seed", "1-2"]


def four_steps_argv(model_dir, out, *extra):
    return ["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", "eng_Latn,fra_Latn",
            "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--lr", "1e-3", "--out", str(out),
            "--device", "cpu", *extra]


@pytest.fixture
def one_backbone(monkeypatch):
    """Every call of a test on one loaded backbone (it is frozen), in one thread: many short calls of a tiny
    model, which on a shared CPU run several times faster so."""
    real, loaded, threads = xpe.load_backbone, {}, torch.get_num_threads()

    def load(name, device="cpu", precision="fp32"):
        if (name, precision) not in loaded:
            loaded[name, precision] = real(name, device, precision)
        return loaded[name, precision]
    monkeypatch.setattr(xpe, "load_backbone", load)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_folder(path):
    """A copy of a Hugging Face model folder, as a user might keep one."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta", "hidden_size": 32}))
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (path / name).write_text("{}")
    return {p.name: p.read_bytes() for p in path.iterdir()}


# ---- whose folder ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_folder_train_py_did_not_write_is_left_as_it_is(tmp_path, tiny_model_dir, capsys, flag):
    before = model_folder(tmp_path / "model")
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "model", *flag)) == 2
    err = capsys.readouterr().err
    assert "holds files that train.py did not write (model.safetensors, special_tokens_map.json" in err, err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before


def test_a_config_json_of_someone_else_is_refused(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"name": "my project"}')
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "project", "--overwrite")) == 2
    assert "holds a config.json that train.py did not write" in capsys.readouterr().err
    assert (tmp_path / "project" / "config.json").read_text() == '{"name": "my project"}'


def test_no_file_train_py_writes_replaces_one_of_the_users(tmp_path, tiny_model_dir, one_backbone, capsys):
    """Walked over every name train.py writes into a run folder (OUTPUTS; its lock, MARK, it never writes over): a
    folder that train.py did not make, holding the user's own file of that name, is refused in one line with or
    without --overwrite, the file as it was. A user's log.csv, state.pt or best.safetensors was trained over, exit 0."""
    for name in train.OUTPUTS:
        for flag in ([], ["--overwrite"], ["--resume"]):
            out = tmp_path / f"{name}{''.join(flag)}"
            out.mkdir()
            (out / name).write_bytes(b"the user's own " + name.encode())
            capsys.readouterr()
            code = train.main(four_steps_argv(tiny_model_dir, out, *flag))
            err = capsys.readouterr().err.strip()
            assert {p.name: p.read_bytes() for p in out.iterdir()} == {name: b"the user's own " + name.encode()}, \
                (name, flag)
            assert code == 2 and len(err.splitlines()) == 1 and f"a {name} that train.py did not write" in err, err


def test_a_run_is_never_written_into_a_folder_the_call_reads(tmp_path, tiny_model_dir, one_backbone, capsys):
    """--target ... --init SRC --out SRC --overwrite cleared the source run it starts from, then ended in a traceback;
    a run into --data-dir made a language folder of the data. Each is one line, nothing changed."""
    source = tmp_path / "source"
    assert train.main(four_steps_argv(tiny_model_dir, source)) == 0
    data_dir = shutil.copytree(FIXTURE_SIB200, tmp_path / "data")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    for argv in (["--model", str(tiny_model_dir), *BASE, "--target", "fra_Latn", "--init", str(source), "--steps",
                  "2", "--eval-every", "2", "--out", str(out), *flag]
                 for out in (source, source / "to-fra") for flag in ([], ["--overwrite"])):
        capsys.readouterr()
        assert train.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "the --init folder of this call" in err, err
    for out in (data_dir, data_dir / "run"):
        argv = four_steps_argv(tiny_model_dir, out)
        argv[argv.index(str(FIXTURE_SIB200))] = str(data_dir)
        assert train.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "the --data-dir folder of this call" in err, err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before
    assert not (source / "to-fra").exists() and not (data_dir / "run").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_every_file_of_a_run_has_the_mode_of_a_plain_open(tmp_path, tiny_model_dir, one_backbone, umask):
    """mkstemp's 0600 made config.json and the other run files unreadable to a group's shared folder (umask 022),
    and the lock was 0644 under a group's umask 002."""
    import os
    import stat
    old = os.umask(umask)
    try:
        assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "run")) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "log.csv", "prompt.safetensors", "state.pt", "best.safetensors", train.MARK} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_overwrite_removes_only_train_pys_files(tmp_path, tiny_model_dir, one_backbone, capsys):
    out = tmp_path / "run"
    assert train.main(four_steps_argv(tiny_model_dir, out)) == 0
    (out / "notes.txt").write_text("mine")
    assert train.main(four_steps_argv(tiny_model_dir, out, "--overwrite")) == 2
    assert "(notes.txt)" in capsys.readouterr().err and (out / "notes.txt").is_file()
    (out / "notes.txt").unlink()
    train.clear(out)
    assert sorted(p.name for p in out.iterdir()) == [train.MARK]


def test_a_run_from_before_the_marker_is_still_train_pys(tmp_path, tiny_model_dir, one_backbone):
    out = tmp_path / "run"
    assert train.main(four_steps_argv(tiny_model_dir, out)) == 0
    (out / train.MARK).unlink()
    assert train.is_own(out)
    assert train.main(four_steps_argv(tiny_model_dir, out, "--overwrite", "--method", "spt")) == 0
    assert json.loads((out / "config.json").read_text())["method"] == "spt"


def test_a_folder_in_use_is_refused_at_once(tmp_path, tiny_model_dir, one_backbone, capsys):
    out = tmp_path / "run"
    assert train.main(four_steps_argv(tiny_model_dir, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fd = os.open(out / train.MARK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a call training into it holds it
    try:
        for flag in ("--overwrite", "--resume"):
            assert train.main(four_steps_argv(tiny_model_dir, out, flag, "--steps", "6")) == 2
            err = capsys.readouterr().err
            assert f"{out} is in use: another train.py call is training into it" in err, err
    finally:
        os.close(fd)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert train.main(four_steps_argv(tiny_model_dir, out, "--resume")) == 0  # the lock went with its holder


def test_claiming_a_folder_in_use_undoes_what_the_call_made(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    fd = os.open(busy / train.MARK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(train.UsageError, match="is in use"):
            train.claim([tmp_path / "new", busy])
    finally:
        os.close(fd)
    assert not (tmp_path / "new").exists()
    fds = train.claim([tmp_path / "new", busy])  # the lock is gone with its holder
    train.release(fds)


# ---- a kill after every write resumes to the same runs ---------------------------------------------

def killed_states(monkeypatch, argv, root, code=0):
    """Train argv whole, copying its --out after each file it writes (and after it claims its folders): what a
    kill at that moment leaves on disk. [(copy, what was just written)]"""
    out = argv[argv.index("--out") + 1]
    real_replace, real_claim, shots = os.replace, train.claim, []

    def shoot(what):
        shots.append((root / f"kill{len(shots):03d}", what))
        shutil.copytree(out, shots[-1][0])

    def replace(src, dst):
        real_replace(src, dst)
        shoot(os.path.relpath(dst, out))

    def claim(outs):
        fds = real_claim(outs)
        shoot("the lock files")
        return fds
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(train, "claim", claim)
    assert train.main(argv) == code
    monkeypatch.setattr(os, "replace", real_replace)
    monkeypatch.setattr(train, "claim", real_claim)
    return shots


def same_run(a, b):
    """The same files with the same tensors, log.csv rows, progress and config.json (the seconds aside)."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir()), (a, b)
    for name in ("prompt.safetensors", "best.safetensors"):
        if (a / name).is_file():
            x, y = load_file(str(a / name)), load_file(str(b / name))
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), (a, name)
    if (a / "state.pt").is_file():
        x, y = train.load(a / "state.pt"), train.load(b / "state.pt")
        assert all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"]), a
        timeless = [{k: v for k, v in s["progress"].items() if k not in ("seconds", "log", "rng_cpu")} for s in (x, y)]
        assert timeless[0] == timeless[1], a
        strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
        assert strip(log_of(a)) == strip(log_of(b))
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


@pytest.mark.parametrize("pack, code", [
    (TWO_BY_TWO, 0),
    (["--method", "xpe", "--seed", "1-2", "--pack-seeds"], 0),
    (["--method", "xpe", "--lr-prompt", "5e-3,5e-5", "--head-dropout", "0.1,0.3"], 0),
    # the SPT part overflows in step 2 (the warm-up's first rate is 0): found by the dev loss at step 2, or with
    # evaluations every 3 steps by the training loss of step 3; that run leaves the pack while the other saves
    (["--method", "spt,xpe", "--lr-spt", "1e38", "--steps", "3", "--warmup", "0.34"], 1),
    (["--method", "spt,xpe", "--lr-spt", "1e38", "--steps", "4", "--warmup", "0.25", "--eval-every", "3"], 1),
], ids=["seeds-in-turn", "seeds-packed", "sweep", "dev-loss-overflows", "training-loss-overflows"])
def test_a_kill_after_any_write_resumes_to_the_same_runs(tmp_path, tiny_model_dir, one_backbone, monkeypatch,
                                                         capsys, pack, code):
    """Dropout on: the resumed pack must continue the same random stream, with the same runs in it. Two
    evaluations: the first makes the best model, the second saves over the first."""
    whole = tmp_path / "whole"
    short = ["--steps", "2", "--eval-every", "1", *pack]
    argv = four_steps_argv(tiny_model_dir, whole, *short)
    shots = killed_states(monkeypatch, argv, tmp_path, code)
    runs = sorted(p.name for p in whole.iterdir())
    assert len(shots) > 5 * len(runs), len(shots)
    for shot, what in shots:
        resumed = four_steps_argv(tiny_model_dir, shot, *short)
        got = train.main(resumed + ["--resume"])
        if got == 2 and "nothing to resume" in capsys.readouterr().err:  # killed before any run's first save
            got = train.main(resumed + ["--overwrite"])
        assert got == code, what
        for name in runs:
            same_run(whole / name, shot / name)
        shutil.rmtree(shot)


# ---- what a resume continues -----------------------------------------------------------------------

def test_a_resume_in_another_pack_is_refused(tmp_path, tiny_model_dir, one_backbone, capsys):
    argv = four_steps_argv(tiny_model_dir, tmp_path / "runs", *TWO_BY_TWO, "--pack-seeds", "--steps", "2")
    assert train.main(argv) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*")  if p.is_file()}
    for other, changed in ((["--method", "spt,xpe", "--seed", "1-2"], "resume with --pack-seeds, as the first call"),
                           (["--method", "spt", "--seed", "1-2", "--pack-seeds"], "with the first call's --method "
                                                                                  "spt,xpe\n")):
        code = train.main(four_steps_argv(tiny_model_dir, tmp_path / "runs", *other, "--steps", "2", "--resume"))
        err = capsys.readouterr().err
        assert code == 2 and "was trained in a pack of" in err and changed in err, err
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before
    assert train.main(argv + ["--resume"]) == 0  # the same pack: nothing left to do, and accepted


def test_resume_of_one_run_of_a_call_of_several_names_the_run_folder(tmp_path, tiny_model_dir, one_backbone, capsys):
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "runs", *TWO_BY_TWO, "--steps", "2")) == 0
    capsys.readouterr()
    code = train.main(four_steps_argv(tiny_model_dir, tmp_path / "runs", "--method", "spt", "--seed", "1", "--steps",
                                      "2", "--resume"))
    err = capsys.readouterr().err
    assert code == 2 and "holds the run folders of a call of several runs" in err and len(err.splitlines()) == 1
    assert f"give --out {tmp_path / 'runs'}/" in err and "did not write" not in err


def flags_in(line):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))


def files_under(root):
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_run_folder_and_a_folder_of_runs_never_take_the_other(tmp_path, tiny_model_dir, one_backbone, capsys):
    """A sweep given a single run's folder as --out (it trained inside it; with --resume it said the folder "does not
    exist") and a single run given a sweep's: both refused in one line naming the folder, nothing written, and no
    flag named that the call did not give."""
    single, sweep = tmp_path / "single", tmp_path / "sweep"
    assert train.main(four_steps_argv(tiny_model_dir, single, "--steps", "2")) == 0
    assert train.main(four_steps_argv(tiny_model_dir, sweep, "--steps", "2", "--lr", "1e-3,1e-4")) == 0
    capsys.readouterr()
    before = files_under(tmp_path)
    calls = [(single, ["--lr", "1e-3,1e-4"], f"{single} is the folder of one run"),
             (single, ["--lr", "1e-3,1e-4", "--resume"], f"{single} is the folder of one run"),
             (single, ["--seed", "1-2", "--overwrite"], f"{single} is the folder of one run"),
             (sweep, [], f"{sweep} holds the run folders of a call of several runs"),
             (sweep, ["--resume"], f"{sweep} holds the run folders of a call of several runs"),
             (sweep, ["--lr", "1e-3", "--overwrite"], f"{sweep} holds the run folders of a call of several runs")]
    for out, extra, words in calls:
        argv = four_steps_argv(tiny_model_dir, out, "--steps", "2", *extra)
        code = train.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (extra, err)
        assert flags_in(err[0]) <= {a for a in argv if a.startswith("--")}, (extra, err)
    assert files_under(tmp_path) == before


def test_a_resume_reads_a_pack_mates_config_json_as_every_reader_does(tmp_path, tiny_model_dir, one_backbone,
                                                                       capsys):
    """What a changed pack differs in is read from the other runs' config.json (pack_change), as check_folders reads
    the run's own: one that cannot be read is one line (it was a traceback), and nothing changes."""
    out = tmp_path / "runs"
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", "--lr", "1e-3,1e-4,1e-5")) == 0
    (mate,) = [p for p in out.iterdir() if "lr1e-05" in p.name]  # in the first call's pack, not in this call
    (mate / "config.json").write_text("not json")
    capsys.readouterr()
    before = files_under(tmp_path)
    code = train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", "--lr", "1e-3,1e-4", "--resume"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--resume: {mate}: config.json cannot be read as JSON" in err[0], err
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("first, then, named", [
    (["--lr", "1e-3,1e-4"], ["--lr", "1e-3,1e-4,1e-5"], "--lr"),  # a value added
    (["--lr", "1e-3,1e-4"], ["--lr", "1e-3,1e-5"], "--lr"),  # another list
    (["--lr", "1e-3,1e-4", "--method", "spt,xpe"], ["--lr", "1e-3,1e-4", "--method", "xpe"], "--method"),
    (["--lr", "1e-3,1e-4", "--seed", "1-2", "--pack-seeds"], ["--lr", "1e-3,1e-4", "--seed", "1-2"], "--pack-seeds"),
])
def test_a_resume_with_other_lists_names_what_changed(tmp_path, tiny_model_dir, one_backbone, capsys, first, then,
                                                     named):
    """The message names the flag whose list changed (it asked for --method, --seed and the pack flags, whatever
    changed), and never a flag that neither call gave."""
    out = tmp_path / "runs"
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", *first)) == 0
    capsys.readouterr()
    before = files_under(tmp_path)
    argv = four_steps_argv(tiny_model_dir, out, "--steps", "2", *then, "--resume")
    code = train.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "was trained in a pack of" in err[0], err
    assert named in flags_in(err[0]) and flags_in(err[0]) - {"--resume"} <= {named}, err
    assert files_under(tmp_path) == before


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path, tiny_model_dir, capsys):
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "nowhere", "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'} does not exist, so there is nothing to resume" in err, err
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()  # it says what is wrong: --resume, not the want of --overwrite
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "empty", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no run, so there is nothing to resume: leave --resume out" in err[0], err
    assert list((tmp_path / "empty").iterdir()) == []
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "empty", "--seed", "1-2", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()  # it exists: it holds none of the call's folders
    assert len(err) == 1 and f"{tmp_path / 'empty'} holds none of this call's 2 run folders" in err[0], err
    assert list((tmp_path / "empty").iterdir()) == []


# ---- the run end marker and --init -----------------------------------------------------------------

def test_config_json_says_whether_and_how_a_run_ended(tmp_path, tiny_model_dir, one_backbone, monkeypatch):
    out = tmp_path / "run"
    seen = []
    real = train.fit

    def fit(runs, *args, **kwargs):
        seen.append(json.loads((out / "config.json").read_text())["ended"])
        return real(runs, *args, **kwargs)
    monkeypatch.setattr(train, "fit", fit)
    assert train.main(four_steps_argv(tiny_model_dir, out)) == 0
    assert seen == [None]
    assert json.loads((out / "config.json").read_text())["ended"] == {"why": "steps", "step": 4}


def test_init_refuses_an_unfinished_source_run(tmp_path, tiny_model_dir, one_backbone, capsys):
    source = tmp_path / "source"
    assert train.main(four_steps_argv(tiny_model_dir, source, "--method", "dual")) == 0
    target = ["--target", "nqo_Nkoo", "--init", str(source), "--steps", "2"]
    config = json.loads((source / "config.json").read_text())
    for ended, words in ((None, "not a finished source run (its config.json says it has not ended)"),
                         ({"why": "not finite", "step": 3}, "stopped at step 3 on a loss that was not finite")):
        (source / "config.json").write_text(json.dumps(config | {"ended": ended}))
        assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "target", *target)) == 2
        assert words in capsys.readouterr().err
        assert not (tmp_path / "target").exists()
    (source / "config.json").write_text(json.dumps(config))
    assert train.main(four_steps_argv(tiny_model_dir, tmp_path / "target", *target)) == 0


def test_progress_is_saved_and_restored_by_name(tmp_path):
    p = train.Progress(step=7, log=[{"step": 7}], ended=train.Ended.EARLY, ended_step=7, left_at=7,
                       rng_cpu=torch.get_rng_state())
    saved = p.saved()
    assert set(saved) == {f.name for f in train.fields(train.Progress)} and saved["ended"] == "early"
    torch.save({"progress": saved}, tmp_path / "state.pt")
    again = train.Progress.restored(train.load(tmp_path / "state.pt")["progress"])  # weights_only: no class of ours
    assert again.ended is train.Ended.EARLY and again.step == 7 and torch.equal(again.rng_cpu, p.rng_cpu)
    assert train.ending(train.TrainConfig(steps=7), train.Progress(step=7)) is train.Ended.STEPS
    assert train.ending(train.TrainConfig(steps=9, patience=2), train.Progress(step=7, bad_evals=2)) is \
        train.Ended.EARLY
    assert train.ending(train.TrainConfig(steps=9, patience=0), train.Progress(step=7, bad_evals=2)) is None


def test_a_state_pt_of_an_older_train_py_is_refused_on_resume(tmp_path, tiny_model_dir, one_backbone, capsys):
    out = tmp_path / "run"
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2")) == 0
    torch.save({"step": 2, "stopped": "", "log": []}, out / "state.pt")  # the layout before Progress
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", "--resume")) == 2
    assert "was written by an older train.py" in capsys.readouterr().err
    for torn in (b"torn", None):  # bytes that are no state at all, and a state that is no dict
        (out / "state.pt").write_bytes(torn) if torn else torch.save(torch.zeros(2), out / "state.pt")
        assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", "--resume")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("cannot be read" if torn else "older train.py") in err[0], err


def test_half_written_files_of_a_killed_call_go_when_a_call_claims_the_folder(tmp_path, tiny_model_dir, one_backbone):
    out = tmp_path / "run"
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2")) == 0
    (out / ".state.pt.k3j2.tmp").write_bytes(b"torn")  # what xpe.atomic_write leaves when killed mid-write
    assert train.foreign_files(out) == []
    assert train.main(four_steps_argv(tiny_model_dir, out, "--steps", "2", "--resume")) == 0
    assert not (out / ".state.pt.k3j2.tmp").exists()



# ---- target calls in packs, and calls spread over processes (torchrun, srun) ------------------------------------------

BASE = ["--data-dir", str(FIXTURE_SIB200), "--batch-size", "4", "--lr", "1e-3", "--device", "cpu"]
TARGETS = "fra_Latn,nqo_Nkoo"
NAMES = [f"dual0.7-eng_Latn-s{s}-to-{lang}" for s in (1, 2) for lang in TARGETS.split(",")]


def source_runs(root, model_dir):
    """Two source runs, seeds 1 and 2, as targets start from them."""
    assert train.main(["--model", str(model_dir), *BASE, "--source", "eng_Latn", "--method", "dual", "--seed", "1-2",
                       "--steps", "4", "--eval-every", "4", "--out", str(root)]) == 0
    return [str(root / f"dual0.7-eng_Latn-s{s}") for s in (1, 2)]


def target_argv(model_dir, inits, out, *extra, target=TARGETS):
    return ["--model", str(model_dir), *BASE, "--target", target, "--init", *inits, "--steps", "6",
            "--eval-every", "2", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def quiet_sources(tmp_path_factory, quiet_model_dir):
    return source_runs(tmp_path_factory.mktemp("quiet-sources"), quiet_model_dir)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, tiny_model_dir):
    """Dropout on: two source runs and one target call over two languages from both, in packs of two."""
    root = tmp_path_factory.mktemp("noisy")
    inits = source_runs(root / "sources", tiny_model_dir)
    assert train.main(target_argv(tiny_model_dir, inits, root / "targets", "--pack-size", "2")) == 0
    return inits, root / "targets"


CONFIG_BAD = [  # every key of a run's config.json that --init and evaluate.py read but the settings (CONFIG_WALK)
    ("labels", "travel", "config.json's labels is"), ("labels", ["travel", "travel"], "config.json's labels is"),
    ("labels", 7, "config.json's labels is 7"),
    ("method", "spt", "method spt is xpe_frac 0"), ("prompt_len", "MISSING", "config.json lacks prompt_len"),
    ("num_labels", 3, "config.json's num_labels is 3: it must be the number of labels"),
    ("n_spt", 5, "config.json's n_spt, n_xpe is"), ("n_xpe", 0, "config.json's n_spt, n_xpe is"),
    ("source", "eng_Latn,", "config.json: empty item in the language spec"),
    ("seed", "MISSING", "config.json lacks seed"),
    ("source_languages", "eng_Latn", "config.json's source_languages is"),
    ("settings", ["steps"], "config.json's settings is"),
    ("ended", {"why": "done", "step": 4}, "config.json's ended is"), ("ended", {"why": "steps"}, "config.json's ended is"),
    ("settings.steps", 0, "config.json's settings.steps is 0: it must be a whole number from 1"),  # 0: imported only
    ("settings.code", 5, "config.json's settings.code is 5"),
    ("settings.backbone_weights", None, "config.json's settings.backbone_weights is null"),
    ("settings.init_settings", 5, "config.json's settings.init_settings is 5"),
    ("settings.init_settings", {"lr": -1, "code": 5}, "config.json's settings.init_settings.lr is -1: it must be a "
                                                      "finite number, 0 or more"),  # read as the settings are
    ("settings.template", "{x}", "config.json's settings.template is \"{x}\": it must be a text (empty, or holding"),
]
# each setting, at the top of config.json and under "settings", with each value just outside its declared range
CONFIG_WALK = [(prefix + f.name, value) for f in dataclasses.fields(train.TrainConfig) for prefix in ("", "settings.")
               for value in outside(f.metadata["values"])]


@pytest.mark.parametrize("key, value, words", CONFIG_BAD)
def test_a_config_field_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, noisy, capsys, key,
                                                                     value, words):
    init = tmp_path / "init"
    shutil.copytree(noisy[0][0], init)
    config = json.loads((init / "config.json").read_text())
    where, name = (config["settings"], key.split(".")[1]) if key.startswith("settings.") else (config, key)
    if value == "MISSING":
        del where[name]
    else:
        where[name] = value
    (init / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert train.main(target_argv(tiny_model_dir, [str(init)], tmp_path / "out", target="fra_Latn")) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and f"--init {init}" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_recorded_setting_outside_its_declared_range_is_refused(tmp_path_factory, noisy):
    """CONFIG_WALK, read straight by train.read_run_config: one line naming the key and the range its Values say."""
    config = json.loads((Path(noisy[0][0]) / "config.json").read_text())
    run_dir = tmp_path_factory.mktemp("walk")
    for key, value in CONFIG_WALK:
        changed = json.loads(json.dumps(config))
        where, name = (changed["settings"], key.split(".")[1]) if key.startswith("settings.") else (changed, key)
        where[name] = value
        (run_dir / "config.json").write_text(json.dumps(changed))
        with pytest.raises(xpe.UsageError) as e:
            train.read_run_config(run_dir, "walked")
        wanted = f"walked: config.json's {key} is {json.dumps(value)}: it must be {train.values_of(name).words()}"
        assert str(e.value) == wanted, (key, value)


@pytest.mark.parametrize("imported", [False, True])
def test_only_an_imported_run_records_no_steps_and_no_encoder(tmp_path, noisy, imported):
    config = json.loads((Path(noisy[0][0]) / "config.json").read_text())
    config["settings"]["steps"], config["encoder_hidden"] = 0, 0
    config["ended"] = {"why": "imported" if imported else "steps", "step": 0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    if imported:
        assert train.read_run_config(tmp_path, "imported")["encoder_hidden"] == 0
    else:
        with pytest.raises(xpe.UsageError, match="config.json's encoder_hidden is 0"):
            train.read_run_config(tmp_path, "trained")


def test_every_config_field_that_is_read_is_walked(noisy):
    walked = {key for key, _, _ in CONFIG_BAD} | {key for key, _ in CONFIG_WALK}
    for run in (Path(noisy[0][0]), noisy[1] / NAMES[0]):  # a source run and a target run
        config = json.loads((run / "config.json").read_text())
        assert set(config) - set(train.RECORD_ONLY) <= walked
        assert {f"settings.{k}" for k in config["settings"]} <= walked


def test_each_packed_target_run_trains_as_it_would_alone(tmp_path, quiet_model_dir, quiet_sources):
    # patience 1 from the start: runs leave the pack at different evaluations while the others go on
    flags = [*QUIET, "--patience", "1", "--stop-after", "0"]
    assert train.main(target_argv(quiet_model_dir, quiet_sources, tmp_path / "pack", *flags)) == 0
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == NAMES
    config = json.loads((tmp_path / "pack" / NAMES[0] / "config.json").read_text())
    assert config["pack"] == NAMES  # the CPU's default pack size takes the four
    assert train.main(target_argv(quiet_model_dir, quiet_sources, tmp_path / "ones", *flags, "--pack-size", "1")) == 0
    for name in NAMES:
        init, lang = name.split("-to-")
        alone = tmp_path / f"alone-{name}"
        assert train.main(target_argv(quiet_model_dir, [quiet_sources[int(init[-1]) - 1]], alone, *flags,
                                      target=lang)) == 0
        config = json.loads((alone / "config.json").read_text())
        assert config["target"] == lang and config["target_languages"] == [lang] and config["seed"] == int(init[-1])
        close_runs(tmp_path / "pack" / name, alone)
        same_files(tmp_path / "ones" / name, alone)  # a pack of one is the run alone, tensor for tensor
    ends = {name: int(log_of(tmp_path / "pack" / name)[-1]["step"]) for name in NAMES}
    dev = {name: [r["dev_loss"] for r in log_of(tmp_path / "pack" / name)] for name in NAMES}
    assert len(set(ends.values())) > 1, ends  # patience 1: the runs left the pack at different steps
    assert dev[NAMES[0]] != dev[NAMES[1]]  # each language on its own dev split


def test_killed_packed_target_call_resumes_to_the_same_prompts(tmp_path, tiny_model_dir, noisy):
    """Dropout on: the resumed pack continues the same random stream, every run its own batches."""
    inits, whole = noisy
    argv = target_argv(tiny_model_dir, inits, tmp_path / "killed", "--pack-size", "2")
    killed(argv, 2 * 6 + 2 * 4 + 1)  # the first pack done; in step 5 of the second, after one of its runs took it
    assert [int(log_of(tmp_path / "killed" / name)[-1]["step"]) for name in NAMES] == [6, 6, 4, 4]
    assert train.main(argv + ["--resume"]) == 0
    for name in NAMES:
        same_files(whole / name, tmp_path / "killed" / name)


def test_a_kill_after_any_write_of_a_packed_target_call_resumes_to_the_same_runs(tmp_path, tiny_model_dir, noisy,
                                                                                    one_backbone, monkeypatch, capsys):
    """The kill after every single write (test_a_kill_after_any_write_resumes_to_the_same_runs), for a target call in two packs of two."""
    inits, _ = noisy
    whole, short = tmp_path / "whole", ["--pack-size", "2", "--steps", "2", "--eval-every", "1"]
    shots = killed_states(monkeypatch, target_argv(tiny_model_dir, inits, whole, *short), tmp_path)
    assert len(shots) > 10 * len(NAMES), len(shots)
    for shot, what in shots:
        resumed = target_argv(tiny_model_dir, inits, shot, *short)
        got = train.main(resumed + ["--resume"])
        if got == 2 and "nothing to resume" in capsys.readouterr().err:  # killed before any run's first save
            got = train.main(resumed + ["--overwrite"])
        assert got == 0, what
        for name in NAMES:
            same_run(whole / name, shot / name)


def test_table3_from_one_target_call(tmp_path, noisy, capsys):
    _, targets = noisy
    groups_file = tmp_path / "groups.json"
    groups_file.write_text(json.dumps({"groups": {"supervised-seen": {"languages": ["fra_Latn"]},
                                                  "supervised-unseen": {"languages": ["nqo_Nkoo"]}}}))
    out = tmp_path / "results"
    assert evaluate.main(["--data-dir", str(FIXTURE_SIB200), "--out", str(out), "--device", "cpu", "--runs",
                          str(targets), "--groups-file", str(groups_file)]) == 0
    with open(out / "per_language.csv") as f:
        per_language = list(csv.DictReader(f))
    # each target run scored on its own language only, each language with the two source seeds
    assert sorted((r["run"].rsplit("/", 1)[1], r["language"]) for r in per_language) == \
        sorted((name, name.split("-to-")[1]) for name in NAMES)
    accuracy = {(r["language"], int(r["seed"])): float(r["accuracy"]) for r in per_language}
    assert sorted(accuracy) == [(lang, s) for lang in TARGETS.split(",") for s in (1, 2)]
    with open(out / "table3.csv") as f:
        table3 = {r["target"]: r for r in csv.DictReader(f) if r["kind"] == "ours"}
    for group, lang in (("supervised-seen", "fra_Latn"), ("supervised-unseen", "nqo_Nkoo")):
        assert table3[group]["seeds"] == "2" and table3[group]["column"] == "dual:0.7 from eng_Latn"
        assert float(table3[group]["mean"]) == pytest.approx(statistics.fmean(accuracy[lang, s] for s in (1, 2)))
    both = [statistics.fmean(accuracy[lang, s] for lang in TARGETS.split(",")) for s in (1, 2)]
    assert float(table3["supervised"]["mean"]) == pytest.approx(statistics.fmean(both))
    assert "Table 3" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_call_spread_over_torchrun_processes_writes_the_runs_of_one_process(tmp_path, tiny_model_dir, precision):
    """Each pack as one process with as many threads trains it: torchrun gives each process one thread."""
    argv = ["--model", str(tiny_model_dir), *BASE, "--source", "eng_Latn", "--method", "spt", "--seed", "1-3",
            "--steps", "4", "--eval-every", "2", "--precision", precision]
    env = dict(os.environ, TQDM_DISABLE="1")
    env.pop("OMP_NUM_THREADS", None)  # torchrun's default: a thread a process
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "train.py"), *argv, "--out", str(tmp_path / "spread")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(": done (") == 3, done.stdout  # each run trained once, by one of the two
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process: the same kernels, the same sums
    try:
        assert train.main(argv + ["--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == [f"spt-eng_Latn-s{s}" for s in (1, 2, 3)]
    assert sorted(p.name for p in (tmp_path / "spread").iterdir()) == names
    for name in names:
        same_files(tmp_path / "one" / name, tmp_path / "spread" / name)
        assert json.loads((tmp_path / "spread" / name / "config.json").read_text())["threads"] == 1


def test_target_call_in_two_processes_writes_the_runs_of_one(tmp_path, tiny_model_dir, noisy, monkeypatch):
    """Each process of an srun step trains its own packs of the call (here one after the other), and only those."""
    inits, one = noisy
    argv = target_argv(tiny_model_dir, inits, tmp_path / "spread", "--pack-size", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    for rank in (1, 0):
        monkeypatch.setenv("SLURM_PROCID", str(rank))
        assert train.main(argv) == 0
        assert len(list((tmp_path / "spread").iterdir())) == (2 if rank else 4)
    assert sorted(p.name for p in (tmp_path / "spread").glob("*-s2-*")) == NAMES[2:]  # rank 1: the second pack
    for name in NAMES:
        same_files(one / name, tmp_path / "spread" / name)


def test_rank_and_world_come_from_torchrun_or_an_srun_step():
    assert train.rank_world({}) == (0, 1, 0)
    assert train.rank_world({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (5, 8, 1)
    assert train.rank_world({"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == (1, 2, 1)
    assert train.rank_world({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1"}) == (3, 4, 1)
    # a batch script has SLURM_PROCID 0 and SLURM_NTASKS: a train.py started there is the only process
    assert train.rank_world({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) == (0, 1, 0)
    plan = [[0, 1], [2, 3], [4]]
    assert train.share(plan, 0, 2) + train.share(plan, 1, 2) == [[0, 1], [4], [2, 3]]


def test_packs_keep_seeds_apart_cut_to_size_and_keep_rows_of_one_length_together():
    cfgs = [train.TrainConfig(method=m, seed=s) for s in (1, 2) for m in ("spt", "xpe", "dual")]
    assert train.packs_of(cfgs, False, 2) == [[0, 1], [2], [3, 4], [5]]
    assert train.packs_of(cfgs, True, 4) == [[0, 1, 2, 3], [4, 5]]
    targets = [train.TrainConfig(target=t, init=f"r{s}", seed=s) for s in (1, 2) for t in ("a", "b")]
    assert train.packs_of(targets, False, 8) == [[0, 1, 2, 3]]
    assert train.packs_of(targets, False, 8, rows=[10, 12, 10, 12]) == [[0, 2], [1, 3]]


@pytest.mark.parametrize("extra, words", [
    (["--pack-size", "0"], f"--pack-size must be {train.CALL_VALUES['pack_size'].words()}"),
    (["--init-twice"], "would share the folder"),
    (["--target-spec", "fra_Latn,xyz_Latn"], "xyz_Latn"),
])
def test_bad_target_calls_exit_2_with_one_line_and_write_nothing(tmp_path, quiet_model_dir, quiet_sources, capsys,
                                                                  extra, words):
    inits, target = quiet_sources, TARGETS
    if extra == ["--init-twice"]:
        inits, extra = [inits[0], inits[0]], []
    if extra[:1] == ["--target-spec"]:
        target, extra = extra[1], []
    code = train.main(target_argv(quiet_model_dir, inits, tmp_path / "out", *extra, target=target))
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


# ---- flag values and folder names, generated ---------------------------------------------------------

NUMBER_TEXTS = st.one_of(st.floats().map(repr), st.integers(-10, 10 ** 6).map(str), st.integers(-2 ** 70, 10 ** 450)
                         .map(str), st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "-0.0", "0x10", "1_0", " 3", "", " ", "5e-3", "²", "1,", "٣"]))
NUMBER_FLAGS = [f.name for f in dataclasses.fields(train.TrainConfig) if f.type in ("int", "float", int, float)]


def resolved_or_refused(argv):
    """(configs, None) or (None, the one line of the refusal): argparse's or a UsageError's; anything else raises."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return train.resolve_configs(train.parse_args(argv)), None
    except SystemExit as e:
        lines = err.getvalue().strip().splitlines()
        assert e.code == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: argument --"), lines
        return None, lines[0]
    except train.UsageError as e:
        assert "\n" not in str(e)
        return None, str(e)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NUMBER_FLAGS), st.lists(NUMBER_TEXTS, min_size=1, max_size=4),
       st.sampled_from(["xpe", "spt", "dual"]))
@example("lr_spt", ["-1", "5e-3"], "xpe")
@example("lr_spt", ["-1", "5e-3"], "dual")
@example("lr", ["0.005", "0.0050000001"], "xpe")
@example("prompt_len", ["1" + "0" * 400], "dual")
def test_a_number_flag_reads_back_as_the_values_it_names_or_is_one_line(name, items, method):
    """Every number flag (one value or a list, parse_values and one_value) given any text: each value the runs take is
    the value its text means, or the call is refused in one line (argparse's own or a UsageError), never a
    traceback."""
    flag, text = "--" + name.replace("_", "-"), ",".join(items)
    cfgs, refusal = resolved_or_refused(["--method", method, f"{flag}={text}"])
    if cfgs is None:
        return
    kind = type(getattr(train.TrainConfig(), name))
    meant = [kind(item) for item in items]
    if name == "lr_spt":  # below 0: the prompt learning rate
        meant = [train.TrainConfig.lr_prompt if v < 0 else v for v in meant]
    assert sorted({getattr(c, name) for c in cfgs}) == sorted(set(meant)) and len(cfgs) == len(items)
    assert all(math.isfinite(getattr(c, name)) for c in cfgs)
    assert len({json.dumps(dataclasses.asdict(c), sort_keys=True) for c in cfgs}) == len(cfgs)  # each another run


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 200))
def test_max_runs_refuses_exactly_the_calls_that_plan_more(values, seeds, most):
    lrs = ",".join(f"{i}e-4" for i in range(1, values + 1))
    cfgs, refusal = resolved_or_refused(["--lr", lrs, "--seed", f"1-{seeds}", "--max-runs", str(most)])
    if values * seeds <= most:
        assert refusal is None and len(cfgs) == values * seeds
    else:
        assert f"this call plans {values * seeds:,} runs" in refusal and f"--max-runs {most}" in refusal


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1, exclude_min=True, exclude_max=True))
@example(0.005, 0.0050000001, 0.7)
@example(5e-05, 0.005, 0.70000001)
def test_distinct_values_name_distinct_folders_that_read_back(a, b, frac):
    """Two values of a list never name one folder (%g printed 0.005 and 0.0050000001 alike), and the value in a
    folder's name reads back as the run's; so does dual's fraction."""
    assume(a != b)
    cfgs = train.resolve_configs(train.parse_args(["--method", f"dual:{frac!r}", "--lr", f"{a!r},{b!r}"]))
    names = train.run_names(cfgs)
    assert len(set(names)) == 2
    for cfg, name in zip(cfgs, names):
        got_frac, got_lr = re.fullmatch(r"dual(.+)-lr(.+)-joshi5-s42", name).groups()
        assert (float(got_frac), float(got_lr)) == (cfg.xpe_frac, cfg.lr), name
        assert xpe.parse_method(xpe.method_name(cfg.method, cfg.xpe_frac)) == ("dual", cfg.xpe_frac)


# ---- issue 42: every input counted once, generated input reads back or is one line ------------------------------

@pytest.mark.parametrize("args, words", [
    (["--source", "eng_Latn,"], "empty item in the language spec 'eng_Latn,'"),
    (["--source", ",eng_Latn"], "empty item"),
    (["--source", "eng_Latn,,fra_Latn"], "empty item"),
    (["--source", "joshi5-"], "empty term in 'joshi5-'"),
    (["--source", "eng_Latn, eng_Latn"], "names 'eng_Latn' twice"),
    (["--seed", "1-3,2"], "names a seed twice"),
    (["--method", "xpe,spt,xpe"], "names a run twice"),
])
def test_a_flag_that_names_a_thing_twice_or_nothing_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys,
                                                                                     args, words):
    test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys, args, words)


def configs_of(*argv):
    return train.resolve_configs(train.parse_args(["--data-dir", str(FIXTURE_SIB200), *argv]))


def test_equal_sources_are_recorded_in_one_spelling():
    """--source "eng_Latn," trained as a source apart from eng_Latn; equal specs now make the same runs."""
    spellings = ["eng_Latn,fra_Latn", "fra_Latn,eng_Latn", " fra_Latn , eng_Latn "]
    sources = {cfg.source for spec in spellings for cfg in configs_of("--source", spec)}
    assert sources == {"eng_Latn,fra_Latn"}
    names = {tuple(train.run_names(configs_of("--source", spec, "--seed", "1-2"))) for spec in spellings}
    assert len(names) == 1


def test_a_repeated_training_row_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE_SIB200, data_dir)
    train_tsv = data_dir / "fra_Latn" / "train.tsv"
    lines = train_tsv.read_text(encoding="utf-8").splitlines()
    train_tsv.write_text("\n".join(lines + [lines[4]]) + "\n", encoding="utf-8")
    code = train.main(["--model", str(tiny_model_dir), "--data-dir", str(data_dir), "--source", SOURCE, "--steps", "2",
                       "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{train_tsv}, line {len(lines) + 1}: index_id" in err and "first on line 5" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_category_with_a_space_after_it_is_no_label_of_its_own(tmp_path, tiny_model_dir):
    """Without labels.txt the labels come from the training rows: "travel " was an eighth label."""
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE_SIB200, data_dir)
    for lang in ("eng_Latn", "fra_Latn"):
        (data_dir / lang / "labels.txt").unlink()
        path = data_dir / lang / "train.tsv"
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(lines[:1] + [line.replace("\t", " \t", 2) for line in lines[1:]]) + "\n",
                        encoding="utf-8")
    code = train.main(["--model", str(tiny_model_dir), "--data-dir", str(data_dir), "--source", SOURCE, "--steps", "2",
                       "--batch-size", "4", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["labels"] == sorted(data.LABELS)


@pytest.mark.parametrize("key, value, words", [
    ("labels", ["travel ", "sports"], "config.json's labels is"),
    ("labels", ["travel", " travel"], "config.json's labels is"),
    ("source", "eng_Latn,", "empty item in the language spec 'eng_Latn,'"),
    ("source", "eng_Latn,eng_Latn", "names 'eng_Latn' twice"),
])
def test_a_config_field_that_names_a_thing_twice_or_with_spaces_is_one_line(tmp_path, tiny_model_dir, noisy, capsys,
                                                                            key, value, words):
    test_a_config_field_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, noisy, capsys, key,
                                                                     value, words)


def test_an_init_source_in_another_spelling_is_read_in_the_one_spelling(tmp_path, noisy):
    init = tmp_path / "init"
    shutil.copytree(noisy[0][0], init)
    config = json.loads((init / "config.json").read_text())
    (init / "config.json").write_text(json.dumps({**config, "source": "fra_Latn , eng_Latn"}))
    assert train.read_run_config(init, "--init")["source"] == "eng_Latn,fra_Latn"


# ---- generated input (Hypothesis) -----------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

import data  # noqa: E402

GENERATED = settings(max_examples=60, deadline=None)


@st.composite
def seeds_and_spec(draw):
    """A --seed text of numbers and ranges, with stray spaces, and the seeds it means."""
    items, seeds = [], []
    for _ in range(draw(st.integers(1, 5))):
        low = draw(st.integers(0, 2**64 - 1))
        high = draw(st.one_of(st.none(), st.integers(low, min(low + 20, 2**64 - 1))))
        items.append(f"{draw(st.sampled_from(['', ' ']))}{low}{'' if high is None else f'-{high}'}")
        seeds += range(low, (low if high is None else high) + 1)
    return ",".join(items), seeds


@GENERATED
@given(seeds_and_spec())
def test_generated_seed_specs_read_back_to_their_seeds_or_say_a_seed_is_twice(case):
    text, seeds = case
    try:
        assert train.parse_seeds(text) == seeds
    except xpe.UsageError as e:
        assert "names a seed twice" in str(e) and len(set(seeds)) < len(seeds) and "\n" not in str(e)


@GENERATED
@given(st.lists(st.sampled_from(list("0123456789,- ") + ["²", "１", "18446744073709551616", "1e3", "\n", "+1"]),
                max_size=16).map("".join))
def test_any_seed_text_is_seeds_or_one_line(text):
    try:
        seeds = train.parse_seeds(text)
    except xpe.UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert seeds and len(set(seeds)) == len(seeds) and all(0 <= s <= train.MAX_SEED for s in seeds)


def valid_config(method="xpe", frac=1.0, prompt_len=20, **extra):
    n_spt, n_xpe = xpe.split_prompt(method, frac, prompt_len)
    return {"model": "tiny", "labels": ["travel", "sports"], "max_length": 164, "method": method, "xpe_frac": frac,
            "prompt_len": prompt_len, "n_spt": n_spt, "n_xpe": n_xpe, "source": "eng_Latn", "seed": 1, **extra}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)
CONFIG_KEYS = sorted({key for key, _, _ in CONFIG_BAD} | {key for key, _ in CONFIG_WALK})


@GENERATED
@given(st.sampled_from(CONFIG_KEYS), json_values)
def test_any_config_field_value_is_read_or_one_line(tmp_path_factory, key, value):
    run_dir = tmp_path_factory.mktemp("run")
    config = valid_config(settings={"steps": 10, "lr": 1e-3}, ended={"why": "steps", "step": 10})
    where, name = (config["settings"], key.split(".")[1]) if key.startswith("settings.") else (config, key)
    where[name] = value
    (run_dir / "config.json").write_text(json.dumps(config))  # json writes nan and inf as NaN and Infinity
    try:
        read = train.read_run_config(run_dir, "generated")
    except xpe.UsageError as e:
        assert str(e).startswith("generated: config.json") and "\n" not in str(e), e
        return
    assert read == {**config, "source": data.canonical_spec(config["source"])}


@GENERATED
@given(st.sampled_from([("spt", 0.0), ("xpe", 1.0), ("dual", 0.7), ("dual", 0.3)]), st.integers(1, 100),
       st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=10),
                min_size=1, max_size=8, unique=True),
       st.lists(st.sampled_from(["joshi5", "eng_Latn", "fra_Latn", "all-lowperf"]), min_size=1, max_size=3,
                unique=True), st.integers(0, train.MAX_SEED))
def test_generated_configs_read_back_as_written(tmp_path_factory, method, prompt_len, labels, source, seed):
    try:
        config = valid_config(*method, prompt_len, labels=labels, source=", ".join(source), seed=seed)
    except xpe.UsageError:  # a prompt too short for the method's two parts
        return
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / "config.json").write_text(json.dumps(config))
    assert train.read_run_config(run_dir, "generated") == {**config, "source": ",".join(sorted(source))}


def test_an_init_config_json_with_a_key_twice_is_one_line(tmp_path, tiny_model_dir, noisy, capsys):
    init = tmp_path / "init"
    shutil.copytree(noisy[0][0], init)
    text = (init / "config.json").read_text()
    (init / "config.json").write_text(text.replace('"method":', '"method": "spt", "method":', 1))
    assert train.main(target_argv(tiny_model_dir, [str(init)], tmp_path / "out", target="fra_Latn")) == 2
    err = capsys.readouterr().err.strip()
    assert "the key 'method' is given twice" in err and f"--init {init}" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


# ---- decoders: the same call, packs, resume and scoring over a causal LM ------------------------------------

from conftest import DECODER_FAMILIES  # noqa: E402


def decoder_argv(tmp_path, model_dir, *extra, name="runs"):
    return ["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", SOURCE, "--steps", "4",
            "--batch-size", "4", "--eval-every", "2", "--method", "spt,dual:0.5", "--prompt-len", "4",
            "--max-length", "100", "--out", str(tmp_path / name), "--device", "cpu", *extra]


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_a_decoder_trains_resumes_identical_after_a_kill_and_scores(tmp_path, tiny_decoder_dirs, family, capsys):
    """Each family: a pack of two methods trains 4 steps, a SIGKILL after its first evaluation resumes to the very
    same files, the run records its template and label token ids, and evaluate.py scores it per language."""
    argv = decoder_argv(tmp_path, tiny_decoder_dirs[family], name="whole")
    assert train.main(argv) == 0
    killed_argv = decoder_argv(tmp_path, tiny_decoder_dirs[family], name="killed")
    killed(killed_argv, 5)  # two runs a step: the fifth update is step 3, after the evaluation at step 2
    assert train.main(killed_argv + ["--resume"]) == 0
    names = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert names == ["dual0.5-eng_Latn+fra_Latn-s42", "spt-eng_Latn+fra_Latn-s42"]
    for name in names:
        same_files(tmp_path / "whole" / name, tmp_path / "killed" / name)
        config = json.loads((tmp_path / "whole" / name / "config.json").read_text())
        assert config["readout"] == xpe.READOUT and "{text}" in config["text_template"]
        settings = evaluate.run_settings(config)  # runs of other templates are other settings in the tables
        assert (settings["text_template"], settings["chat_template"]) == (config["text_template"], False)
        assert len(config["label_token_ids"]) == len(config["labels"]) == 7
        assert "template" not in config["settings"] and config["trainable_parameters"] == sum(
            t.numel() for t in load_file(str(tmp_path / "whole" / name / "best.safetensors")).values())
    out = tmp_path / "scores"
    assert evaluate.main(["--runs", str(tmp_path / "whole"), "--data-dir", str(FIXTURE_SIB200), "--group",
                          "nqo_Nkoo", "--out", str(out), "--device", "cpu"]) == 0
    rows = [r for r in csv.DictReader(open(out / "per_language.csv")) if r["language"] == "nqo_Nkoo"]
    assert len(rows) == 2 and all(int(r["n"]) > 0 for r in rows)
    (tmp_path / "texts.txt").write_text("the football match was long\nthe minister spoke of health\n")
    capsys.readouterr()
    assert evaluate.main(["--runs", str(tmp_path / "whole" / names[0]), "--predict", str(tmp_path / "texts.txt"),
                          "--device", "cpu"]) == 0
    predicted = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["text"] for r in predicted] == ["the football match was long", "the minister spoke of health"]
    labels = json.loads((tmp_path / "whole" / names[0] / "config.json").read_text())["labels"]
    assert [predicted[0][k] for k in labels] != [predicted[1][k] for k in labels]  # the text reaches the read-out


def test_a_decoder_run_takes_a_template_and_a_chat_template_and_an_encoder_refuses_them(tmp_path, tiny_decoder_dirs,
                                                                                      tiny_model_dir, capsys):
    model_dir = tmp_path / "chat-llama"
    shutil.copytree(tiny_decoder_dirs["llama"], model_dir)
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}<s> user: {{ m['content'] }} model: {% endfor %}"
    config_path.write_text(json.dumps(config))
    template = "text: {text} topic ({labels}):"
    assert train.main(decoder_argv(tmp_path, model_dir, "--template", template, "--chat-template", "--steps", "2",
                                   "--method", "spt", name="chat")) == 0
    run_config = json.loads((tmp_path / "chat" / "config.json").read_text())
    assert run_config["text_template"] == template.replace("{labels}", ", ".join(run_config["labels"]))
    assert run_config["chat_template"] is True and run_config["settings"]["template"] == template
    # the label token is the first of the answer after the chat turn, whose template ends in a space
    backbone, tokenizer = xpe.load_backbone(str(model_dir))
    assert run_config["label_token_ids"] == [tokenizer.convert_tokens_to_ids(label) for label in run_config["labels"]]
    capsys.readouterr()  # resuming it without its template would read its rows otherwise: another run
    assert train.main(decoder_argv(tmp_path, model_dir, "--steps", "2", "--method", "spt", "--resume", name="chat")) == 2
    assert "holds a different run (template 'text: {text} topic ({labels}):', chat_template True)" in \
        capsys.readouterr().err
    assert train.main(decoder_argv(tmp_path, tiny_model_dir, "--template", template, name="encoder")) == 2
    assert "--template is for a decoder backbone" in capsys.readouterr().err
    assert train.main(decoder_argv(tmp_path, model_dir, "--template", "no text here", name="bad")) == 2
    assert "must hold {text} once" in capsys.readouterr().err
    assert not (tmp_path / "encoder").exists() and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("family, positions", [("gpt2", 128), ("opt", 128), ("llama", None), ("bloom", None)])
def test_a_decoders_max_length_fits_its_position_table(tmp_path, tiny_decoder_dirs, family, positions, capsys):
    """GPT-2 and OPT (an offset of 2) have an absolute position table: the prompt and the whole templated row must fit,
    as for XLM-R; RoPE (Llama) and ALiBi (BLOOM) have none to fit."""
    backbone, _ = xpe.load_backbone(str(tiny_decoder_dirs[family]))
    assert xpe.max_text_length(backbone, 4) == (positions and positions - 4)
    if positions:
        assert train.main(decoder_argv(tmp_path, tiny_decoder_dirs[family], "--max-length", "125")) == 2
        assert f"use --max-length {positions - 4} or less" in capsys.readouterr().err


def test_a_decoder_target_run_starts_from_its_source_run_and_keeps_its_template(tmp_path, tiny_decoder_dirs):
    model_dir = tiny_decoder_dirs["llama"]
    template = "text: {text} topic:"
    assert train.main(decoder_argv(tmp_path, model_dir, "--method", "dual:0.5", "--template", template,
                                   name="source")) == 0
    source = tmp_path / "source"
    assert train.main(["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--target", "nqo_Nkoo",
                       "--init", str(source), "--lr", "0", "--lr-prompt", "0", "--steps", "2", "--eval-every", "2",
                       "--batch-size", "4", "--max-length", "100", "--out", str(tmp_path / "target"),
                       "--device", "cpu"]) == 0
    a, b = load_file(str(source / "best.safetensors")), load_file(str(tmp_path / "target" / "best.safetensors"))
    assert a.keys() == b.keys() and all(k.startswith("prompt.") and torch.equal(a[k], b[k]) for k in a)
    mine, theirs = (json.loads((p / "config.json").read_text()) for p in (tmp_path / "target", source))
    assert mine["text_template"] == theirs["text_template"] == template
    assert mine["label_token_ids"] == theirs["label_token_ids"]


def test_a_decoder_trains_and_scores_with_bf16_weights_on_a_cpu(tmp_path, tiny_decoder_dirs):
    """--precision bf16 loads a decoder's frozen weights in bf16 (what lets a 7-8B model fit); the prompt trains in
    float32 and the run scores."""
    assert train.main(decoder_argv(tmp_path, tiny_decoder_dirs["gemma2"], "--precision", "bf16", "--method",
                                   "dual:0.5", name="bf16")) == 0
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["settings"]["precision"] == "bf16"
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all()
               for t in load_file(str(tmp_path / "bf16" / "best.safetensors")).values())
    assert all(math.isfinite(float(r["dev_loss"])) for r in log_of(tmp_path / "bf16"))
    assert evaluate.main(["--runs", str(tmp_path / "bf16"), "--data-dir", str(FIXTURE_SIB200), "--group", "nqo_Nkoo",
                          "--out", str(tmp_path / "scores"), "--device", "cpu", "--precision", "bf16"]) == 0


def test_an_encoder_run_records_no_decoder_keys(tmp_path, tiny_model_dir):
    code, out = run(tmp_path, tiny_model_dir, "--method", "spt", "--steps", "2", "--eval-every", "2")
    config = json.loads((out / "config.json").read_text())
    assert code == 0 and not {"readout", "text_template", "chat_template", "label_token_ids"} & set(config)
    assert not {"template", "chat_template"} & set(config["settings"])
    assert set(load_file(str(out / "prompt.safetensors"))) == {"prompt", "head.dense.weight", "head.dense.bias",
                                                               "head.out_proj.weight", "head.out_proj.bias"}


@pytest.mark.parametrize("extra, words", [
    (["--method", "xpe", "--head-dropout", "0.1,0.3"], "--head-dropout 0.1,0.3: "),
    (["--method", "spt", "--lr", "1e-3,1e-4"], "--lr 0.0001,0.001: "),
    (["--method", "spt", "--weight-decay", "0,0.1"], "--weight-decay 0,0.1: "),
])
def test_a_decoder_refuses_a_list_over_a_setting_it_never_reads(tmp_path, tiny_decoder_dirs, capsys, extra, words):
    """No head trains on a decoder (its read-out is the frozen LM head's label rows), and spt has no prompt encoder:
    such a list would train one run twice. Refused once the backbone is known, before any folder is made."""
    argv = decoder_argv(tmp_path, tiny_decoder_dirs["gpt2"], *extra)
    capsys.readouterr()  # the fixture's own progress, where this test is the first to build the tiny GPT-2
    line = refused_in_one_line(train.main, argv, capsys, "train.py")
    assert words in line and "is a decoder, where" in line and "never reads" in line, line
    assert not (tmp_path / "runs").exists()
    assert train.main(decoder_argv(tmp_path, tiny_decoder_dirs["gpt2"], "--method", "xpe", "--lr", "1e-3,1e-4",
                                   "--steps", "2", "--eval-every", "2")) == 0  # xpe's MLP reads --lr
