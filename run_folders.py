"""Why this file: what a run folder is, in one place: train.py makes, locks and fills it; evaluate.py
and --scores read it (which runs, what setting, finished or not). train.py would pass 600 lines with it.

A folder that train.py makes gets MARK first. train.py only ever trains into an empty folder or one
of its own, and --overwrite removes only the files it writes (OUTPUTS), never the folder or anything
else in it. While a call trains into a folder it holds an flock on MARK, which the operating system
drops when the process ends, however it ends.

A pack saves at an evaluation in two phases: every run writes STAGED (its next state.pt) first, then
each renames it to state.pt and writes the files that follow from it. A kill in the first phase leaves
the previous evaluation's state.pt in every run (settle deletes the staged ones); a kill in the second
leaves every run's state of the new one, staged or renamed (settle finishes the renames). Either way
the runs of a pack resume from one and the same step.

Read back by evaluation: config.json (every setting, the labels, the languages, and "ended" once the
run ends), log.csv and the inference artifact prompt.safetensors.
"""
import csv
import fcntl
import io
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path

import torch
from safetensors.torch import save_file

import xpe
from tables import UsageError, method_name, settings_text

MARK = "xpe-train.lock"  # "made by train.py"; locked while a call trains into the folder
STAGED = "state.next.pt"
# everything else train.py writes into a run folder, in the order --overwrite removes it: the state first,
# so that a kill halfway leaves no state to resume from, and config.json (which says "a run is here") last
OUTPUTS = (STAGED, "state.pt", "best.safetensors", "prompt.safetensors", "log.csv", "config.json")
TMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in OUTPUTS) + r")\.[^/]*\.tmp")  # xpe.atomic_write's
LOG_FIELDS = ["step", "train_loss", "lr_prompt", "lr_spt", "lr", "dev_loss", "dev_accuracy", "seconds"]  # log.csv's columns


class FolderError(Exception):
    """A run folder that train.py may not use: one line naming it and what is there."""


class Ended(str, Enum):
    """How a run ended; the value is what config.json's "ended" says."""
    STEPS = "steps"
    EARLY = "early"
    NOT_FINITE = "not finite"


@dataclass
class Progress:
    """How far a run has come: with the weights, exactly what its state.pt holds, saved and restored by name."""
    step: int = 0                    # optimiser steps taken
    seconds: float = 0.0             # training time, over every call that trained the run
    log: list = field(default_factory=list)  # log.csv's rows
    best_step: int = 0               # the evaluation with the best dev accuracy: the artifact's
    best_accuracy: float = -1.0
    lowest_loss: float = math.inf    # early stopping (from stop_after on): the lowest dev loss
    bad_evals: int = 0               # evaluations since without a lower one
    ended: Ended = None              # None while the run goes on
    ended_step: int = 0              # config.json's "ended" step: the last step, or the first non-finite one
    left_at: int = 0                 # the pack's step when the run left it
    rng_cpu: torch.Tensor = None     # the random stream at the save, which the pack continues
    rng_cuda: torch.Tensor = None

    def saved(self):
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"ended": self.ended and self.ended.value}

    @classmethod
    def restored(cls, saved):
        return cls(**{f.name: saved[f.name] for f in fields(cls)} | {"ended": saved["ended"] and Ended(saved["ended"])})


def foreign_files(out):
    """Names in out that train.py never writes."""
    return sorted(p.name for p in out.iterdir() if p.name not in (MARK, *OUTPUTS) and not TMP.fullmatch(p.name))


def is_own(out):
    """A folder that train.py made (MARK), or one from before MARK: a config.json with train.py's "settings"."""
    if (out / MARK).is_file():
        return True
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("settings"), dict) and "steps" in config["settings"]


def check_own(out, what):
    """Refuse a folder holding anything train.py did not write; `what` says what the call wanted to do there."""
    if out.exists() and not out.is_dir():
        raise FolderError(f"{out} is a file, not a folder: choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FolderError(f"{out} holds files that train.py did not write ({shown}), so it will not {what} there: "
                          f"choose another --out")
    if not is_own(out) and (out / "config.json").exists():
        raise FolderError(f"{out} holds a config.json that train.py did not write, so it will not {what} there: "
                          f"choose another --out")


def is_locked(out):
    """True while another call holds out's lock."""
    path = out / MARK
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock


def claim(outs):
    """Make the folders that are missing, each with MARK first, and lock them all; the open descriptors.

    A folder another call holds is refused; then what this call made is undone and nothing stays locked.
    """
    made, fds = [], []
    try:
        for out in outs:
            if not out.is_dir():
                out.mkdir(parents=True)
                made.append(out)
            fd = os.open(out / MARK, os.O_RDWR | os.O_CREAT, 0o644)  # never replaced: the lock is on this file
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderError(f"{out} is in use: another train.py call is training into it; wait for it "
                                  f"or choose another --out") from None
            if os.fstat(fd).st_size == 0:
                os.write(fd, b"made by xpe's train.py, which locks this file while a call trains into the folder\n")
            for path in out.iterdir():  # half-written files of a killed call: never anything to read
                if TMP.fullmatch(path.name):
                    path.unlink()
        return fds
    except BaseException:
        release(fds)
        for out in reversed(made):
            (out / MARK).unlink(missing_ok=True)
            out.rmdir()
        raise


def release(fds):
    for fd in fds:
        os.close(fd)


def clear(out):
    """Remove what train.py wrote into out (never the folder, MARK or anything else there)."""
    for path in sorted(p for p in out.iterdir() if TMP.fullmatch(p.name)):
        path.unlink()
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def settle(outs):
    """After a kill in a pack's save: finish it when every run that was going on had staged it, else undo it."""
    staged = [out for out in outs if (out / STAGED).is_file()]
    if not staged:
        return
    step = load(staged[0] / STAGED)["progress"]["step"]

    def ready(out):  # staged, or renamed already, or not in the save at all (the run had ended before it)
        if (out / STAGED).is_file():
            return True
        if (out / "state.pt").is_file():
            progress = load(out / "state.pt")["progress"]
            return progress["ended"] is not None or progress["step"] == step
        config = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
        return config.get("ended") is not None  # ended before its first evaluation
    finish = all(ready(out) for out in outs)
    for out in staged:
        if finish:
            os.replace(out / STAGED, out / "state.pt")
        else:
            (out / STAGED).unlink()


def check_folders(outs, settings, packs, resume, overwrite, not_identity=(), probe_locks=True, call_outs=None):
    """Refuse to mix runs: a folder holding a run needs --resume (the same run, in the same pack) or --overwrite.

    Only an empty folder or one of train.py's own is ever trained into; one in use is refused. settings: each
    run's TrainConfig as a dict; packs: the names of the runs of each run's pack. call_outs: every folder of
    the call, where outs are one process's share (torchrun, srun), for what --resume finds.
    """
    for out, mine, pack in zip(outs, settings, packs):
        check_own(out, "continue a run" if resume else "replace anything" if overwrite else "train")
        if probe_locks and out.is_dir() and is_locked(out):
            raise FolderError(f"{out} is in use: another train.py call is training into it; wait for it or "
                             f"choose another --out")
        config_path = out / "config.json"
        if not config_path.is_file() or overwrite:  # empty, or what a call left before it wrote config.json
            continue
        if not resume:
            raise FolderError(f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it")
        config = json.loads(config_path.read_text())
        old = {"precision": "fp32", **config.get("settings", {})}  # a run from before --precision
        diff = [k for k, v in mine.items() if k not in not_identity and old.get(k) != v]
        if diff:
            theirs = ", ".join(f"{k} {old.get(k)!r}" for k in diff)
            raise FolderError(f"--resume: {out} holds a different run ({theirs}); "
                             f"resume with the same settings or choose another --out")
        if config.get("pack", pack) != pack:  # the runs of a pack share the random stream: another pack diverges
            raise FolderError(f"--resume: {out} was trained in a pack of {', '.join(config['pack'])}, this call packs "
                             f"it with {', '.join(pack)}: resume with the first call's --method, --seed, "
                             f"--pack-seeds and --pack-size")
        states = [p for p in (out / STAGED, out / "state.pt") if p.is_file()]
        if states and "progress" not in load(states[0]):
            raise FolderError(f"--resume: {states[0]} was written by an older train.py; resume it with that "
                             f"version, or start again with --overwrite")
    outs = outs if call_outs is None else call_outs
    resumable = any((out / name).is_file() for out in outs for name in (STAGED, "state.pt"))
    if resume and not any(out.is_dir() for out in outs):
        raise FolderError(f"--resume: {outs[0] if len(outs) == 1 else outs[0].parent} does not exist, so there is "
                         f"nothing to resume: leave --resume out to start the {'run' if len(outs) == 1 else 'runs'}")
    if resume and not resumable:
        raise FolderError(f"--resume: {'no run of this call has' if len(outs) > 1 else f'{outs[0]} has'} reached its "
                         f"first evaluation (state.pt), so there is nothing to resume: use --overwrite")


def write_log(path, rows):
    """log.csv: one row an evaluation."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def stage(out, state):
    """The first phase of a pack's save: the run's next state.pt, under another name."""
    xpe.atomic_write(out / STAGED, lambda tmp: torch.save(state, tmp))


def commit(out, progress, best, config):
    """The second phase: the staged state becomes state.pt, then the files that follow from it."""
    os.replace(out / STAGED, out / "state.pt")
    write_outputs(out, progress, best, config)


def write_outputs(out, progress, best, config, everything=False):
    """What follows from a run's state: log.csv, and the best model's files and config.json where they changed."""
    p = progress
    write_log(out / "log.csv", p.log)
    if everything or p.best_step == p.step:
        xpe.atomic_write(out / "best.safetensors", lambda tmp: save_file(best["model"], tmp))
        xpe.atomic_write(out / xpe.ARTIFACT_WEIGHTS, lambda tmp: save_file(best["artifact"], tmp))
    if everything or p.best_step == p.step or p.ended:
        write_config(out, config, p)


def write_config(out, config, progress):
    """config.json, whose "ended" says how the run ended, null while it goes on."""
    p = progress
    config["ended"] = dict(why=p.ended.value, step=p.ended_step) if p.ended else None
    xpe.atomic_write_json(out / xpe.ARTIFACT_CONFIG, config)


def mark_ended(out, progress):
    """A run that ends between evaluations keeps its last state.pt, saying that it ended (and so stays out)."""
    path = out / "state.pt"
    if path.is_file():
        state = load(path)
        state["progress"].update(ended=progress.ended.value, ended_step=progress.ended_step, left_at=progress.left_at)
        xpe.atomic_write(path, lambda tmp: torch.save(state, tmp))


# ---- run folders as evaluation reads them -----------------------------------------------------------

FINISHED = ("steps", "early", "imported")  # the "why" of config.json's ended that make a run finished (imported: a PEFT adapter)


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
               settings=settings_text(config.get("settings", {})))
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
    """How a run ended: "steps" or "early" (finished), or "unfinished ..." with its step.

    config.json's "ended" says it ({"why": ..., "step": N}; null while the run trains); a config from
    before that key counts as finished iff its log.csv's last step reaches settings.steps.
    """
    config, total = run["config"], run["config"].get("settings", {}).get("steps")
    if "ended" in config:
        ended = config["ended"]
        if isinstance(ended, dict) and ended.get("why") in FINISHED:
            return ended["why"]
        if isinstance(ended, dict):
            return f"unfinished: {ended.get('why')} at step {ended.get('step')}"
        step = last_logged_step(run["dir"])
        return f"unfinished: still training, at step {'?' if step is None else step} of {total}"
    step = last_logged_step(run["dir"])
    if total is None:
        return ""  # nothing says how long it was meant to run
    if step is not None and step >= total:
        return "steps"
    return f"unfinished: log.csv ends at step {'none' if step is None else step} of {total}"


def check_finished(runs, allow):
    """Unfinished runs are refused, naming the run and its step, unless allow (--unfinished)."""
    unfinished = [(run["dir"], run["ended"]) for run in runs if run["ended"].startswith("unfinished")]
    if unfinished and not allow:
        run, why = unfinished[0]
        more = f" (and {len(unfinished) - 1} more)" if len(unfinished) > 1 else ""
        raise UsageError(f"{run} is {why}{more}: score finished runs, or give --unfinished to score it marked as such")


def targets_of(run, languages):
    """The languages a run is scored on: its own for a target run, else those it was not trained on."""
    if run["only"]:
        return [run["only"]]
    return [lang for lang in languages if lang not in run["trained"]]


def check_runs(runs, languages):
    """One backbone and one label set a call; two runs of one setting and seed on one language are refused."""
    for key, what in (("model", "backbones"), ("labels", "label sets")):
        found = list(dict.fromkeys(json.dumps(r["config"][key]) for r in runs))
        if len(found) > 1:
            raise UsageError(f"runs with different {what} ({', '.join(found[:3])}): evaluate them in separate calls")
    seen = {}
    for run in runs:
        cfg = run["config"]
        key = (cfg["method"], float(cfg["xpe_frac"]), cfg["source"], run["mode"], run["settings"], cfg["seed"])
        for lang in targets_of(run, languages):
            other = seen.setdefault((key, lang), run["dir"])
            if other != run["dir"]:
                raise UsageError(f"{other} and {run['dir']} are both {method_name(*key[:2])} from {key[2]} with seed "
                                 f"{key[5]} and the same settings on {lang}: one would hide the other in the means "
                                 f"over seeds; evaluate them in separate calls, or train one with another --seed")


def preview_rows(runs, languages):
    """One per_language row a run (a made-up accuracy): what --compare and --plot-sort need to know before scoring."""
    return [run_row(run, lang, 1, 0.0) for run in runs for lang in targets_of(run, languages)[:1]]


def run_row(run, lang, n, accuracy):
    cfg = run["config"]
    return dict(run=str(run["dir"]), mode=run["mode"], method=cfg["method"], xpe_frac=float(cfg["xpe_frac"]),
                source=cfg["source"], seed=cfg["seed"], backbone=cfg["model"],
                steps=cfg.get("settings", {}).get("steps", ""), language=lang, n=n, accuracy=accuracy,
                settings=run["settings"], ended=run["ended"])
