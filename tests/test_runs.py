"""train.py's run folders: only its own are written to or removed, one call at a time; kills after any write resume
identically; a resume continues the same pack; --init takes finished runs only."""
import fcntl
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import train
import xpe
from conftest import FIXTURE_SIB200
from test_train import log_of

PACK = ["--method", "spt,xpe", "--seed", "1-2"]


def argv_of(model_dir, out, *extra):
    return ["--model", str(model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", "eng_Latn,fra_Latn",
            "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--lr", "1e-3", "--out", str(out),
            "--device", "cpu", *extra]


@pytest.fixture
def one_backbone(monkeypatch):
    """Every call of a test on one loaded backbone (it is frozen), in one thread: many short calls of a tiny
    model, which on a shared CPU run several times faster so."""
    real, loaded, threads = xpe.load_backbone, {}, torch.get_num_threads()

    def load(name, device="cpu"):
        if name not in loaded:
            loaded[name] = real(name, device)
        return loaded[name]
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
    assert train.main(argv_of(tiny_model_dir, tmp_path / "model", *flag)) == 2
    err = capsys.readouterr().err
    assert "holds files that train.py did not write (model.safetensors, special_tokens_map.json" in err, err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before


def test_a_config_json_of_someone_else_is_refused(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"name": "my project"}')
    assert train.main(argv_of(tiny_model_dir, tmp_path / "project", "--overwrite")) == 2
    assert "holds a config.json that train.py did not write" in capsys.readouterr().err
    assert (tmp_path / "project" / "config.json").read_text() == '{"name": "my project"}'


def test_overwrite_removes_only_train_pys_files(tmp_path, tiny_model_dir, one_backbone, capsys):
    out = tmp_path / "run"
    assert train.main(argv_of(tiny_model_dir, out)) == 0
    (out / "notes.txt").write_text("mine")
    assert train.main(argv_of(tiny_model_dir, out, "--overwrite")) == 2
    assert "(notes.txt)" in capsys.readouterr().err and (out / "notes.txt").is_file()
    (out / "notes.txt").unlink()
    train.clear(out)
    assert sorted(p.name for p in out.iterdir()) == [train.MARK]


def test_a_run_from_before_the_marker_is_still_train_pys(tmp_path, tiny_model_dir, one_backbone):
    out = tmp_path / "run"
    assert train.main(argv_of(tiny_model_dir, out)) == 0
    (out / train.MARK).unlink()
    assert train.is_own(out)
    assert train.main(argv_of(tiny_model_dir, out, "--overwrite", "--method", "spt")) == 0
    assert json.loads((out / "config.json").read_text())["method"] == "spt"


def test_a_folder_in_use_is_refused_at_once(tmp_path, tiny_model_dir, one_backbone, capsys):
    out = tmp_path / "run"
    assert train.main(argv_of(tiny_model_dir, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fd = os.open(out / train.MARK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a call training into it holds it
    try:
        for flag in ("--overwrite", "--resume"):
            assert train.main(argv_of(tiny_model_dir, out, flag, "--steps", "6")) == 2
            err = capsys.readouterr().err
            assert f"{out} is in use: another train.py call is training into it" in err, err
    finally:
        os.close(fd)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert train.main(argv_of(tiny_model_dir, out, "--resume")) == 0  # the lock went with its holder


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
    (PACK, 0),
    (["--method", "xpe", "--seed", "1-2", "--pack-seeds"], 0),
    # the SPT part overflows in step 2 (the warm-up's first rate is 0): found by the dev loss at step 2, or with
    # evaluations every 3 steps by the training loss of step 3; that run leaves the pack while the other saves
    (["--method", "spt,xpe", "--lr-spt", "1e38", "--steps", "3", "--warmup", "0.34"], 1),
    (["--method", "spt,xpe", "--lr-spt", "1e38", "--steps", "4", "--warmup", "0.25", "--eval-every", "3"], 1),
], ids=["seeds-in-turn", "seeds-packed", "dev-loss-overflows", "training-loss-overflows"])
def test_a_kill_after_any_write_resumes_to_the_same_runs(tmp_path, tiny_model_dir, one_backbone, monkeypatch,
                                                         capsys, pack, code):
    """Dropout on: the resumed pack must continue the same random stream, with the same runs in it. Two
    evaluations: the first makes the best model, the second saves over the first."""
    whole = tmp_path / "whole"
    short = ["--steps", "2", "--eval-every", "1", *pack]
    argv = argv_of(tiny_model_dir, whole, *short)
    shots = killed_states(monkeypatch, argv, tmp_path, code)
    runs = sorted(p.name for p in whole.iterdir())
    assert len(shots) > 5 * len(runs), len(shots)
    for shot, what in shots:
        resumed = argv_of(tiny_model_dir, shot, *short)
        got = train.main(resumed + ["--resume"])
        if got == 2 and "nothing to resume" in capsys.readouterr().err:  # killed before any run's first save
            got = train.main(resumed + ["--overwrite"])
        assert got == code, what
        for name in runs:
            same_run(whole / name, shot / name)
        shutil.rmtree(shot)


# ---- what a resume continues -----------------------------------------------------------------------

def test_a_resume_in_another_pack_is_refused(tmp_path, tiny_model_dir, one_backbone, capsys):
    argv = argv_of(tiny_model_dir, tmp_path / "runs", *PACK, "--pack-seeds", "--steps", "2")
    assert train.main(argv) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*")  if p.is_file()}
    for other in (["--method", "spt,xpe", "--seed", "1-2"], ["--method", "spt", "--seed", "1-2", "--pack-seeds"]):
        code = train.main(argv_of(tiny_model_dir, tmp_path / "runs", *other, "--steps", "2", "--resume"))
        err = capsys.readouterr().err
        assert code == 2 and "was trained in a pack of" in err and "--pack-seeds" in err, err
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before
    assert train.main(argv + ["--resume"]) == 0  # the same pack: nothing left to do, and accepted


def test_resume_of_a_folder_that_does_not_exist_says_so(tmp_path, tiny_model_dir, capsys):
    assert train.main(argv_of(tiny_model_dir, tmp_path / "nowhere", "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere'} does not exist, so there is nothing to resume" in err, err
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()  # it says what is wrong: --resume, not the want of --overwrite
    assert train.main(argv_of(tiny_model_dir, tmp_path / "empty", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no run, so there is nothing to resume: leave --resume out" in err[0], err
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
    assert train.main(argv_of(tiny_model_dir, out)) == 0
    assert seen == [None]
    assert json.loads((out / "config.json").read_text())["ended"] == {"why": "steps", "step": 4}


def test_init_refuses_an_unfinished_source_run(tmp_path, tiny_model_dir, one_backbone, capsys):
    source = tmp_path / "source"
    assert train.main(argv_of(tiny_model_dir, source, "--method", "dual")) == 0
    target = ["--target", "nqo_Nkoo", "--init", str(source), "--steps", "2"]
    config = json.loads((source / "config.json").read_text())
    for ended, words in ((None, "not a finished source run (its config.json says it has not ended)"),
                         ({"why": "not finite", "step": 3}, "stopped at step 3 on a loss that was not finite")):
        (source / "config.json").write_text(json.dumps(config | {"ended": ended}))
        assert train.main(argv_of(tiny_model_dir, tmp_path / "target", *target)) == 2
        assert words in capsys.readouterr().err
        assert not (tmp_path / "target").exists()
    (source / "config.json").write_text(json.dumps(config))
    assert train.main(argv_of(tiny_model_dir, tmp_path / "target", *target)) == 0


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
    assert train.main(argv_of(tiny_model_dir, out, "--steps", "2")) == 0
    torch.save({"step": 2, "stopped": "", "log": []}, out / "state.pt")  # the layout before Progress
    assert train.main(argv_of(tiny_model_dir, out, "--steps", "2", "--resume")) == 2
    assert "was written by an older train.py" in capsys.readouterr().err


def test_half_written_files_of_a_killed_call_go_when_a_call_claims_the_folder(tmp_path, tiny_model_dir, one_backbone):
    out = tmp_path / "run"
    assert train.main(argv_of(tiny_model_dir, out, "--steps", "2")) == 0
    (out / ".state.pt.k3j2.tmp").write_bytes(b"torn")  # what xpe.atomic_write leaves when killed mid-write
    assert train.foreign_files(out) == []
    assert train.main(argv_of(tiny_model_dir, out, "--steps", "2", "--resume")) == 0
    assert not (out / ".state.pt.k3j2.tmp").exists()
