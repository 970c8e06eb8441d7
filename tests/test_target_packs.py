"""Target calls (many languages from many source runs, in packs) and calls spread over processes (torchrun, srun)."""
import csv
import json
import os
import statistics
import subprocess
import sys

import pytest
import torch

import evaluate
import train
from conftest import FIXTURE_SIB200, ROOT
from test_runs import killed_states, one_backbone, same_run  # noqa: F401 (one_backbone: a fixture)
from test_train import QUIET, close_runs, killed, log_of, same_files

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
    """issue 17's kill after every single write (tests/test_runs.py), for a target call in two packs of two."""
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


def test_a_call_spread_over_torchrun_processes_writes_the_runs_of_one_process(tmp_path, tiny_model_dir):
    argv = ["--model", str(tiny_model_dir), *BASE, "--source", "eng_Latn", "--method", "spt", "--seed", "1-3",
            "--steps", "4", "--eval-every", "2"]
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
    (["--pack-size", "0"], "--pack-size must be at least 1"),
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
