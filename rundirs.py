"""train.py's run folders, in a file of their own because train.py would pass 600 lines: which folders are its own, the lock, the pack's save as one unit.

A folder that train.py makes gets MARK first. train.py only ever trains into an empty folder or one
of its own, and --overwrite removes only the files it writes (OUTPUTS), never the folder or anything
else in it. While a call trains into a folder it holds an flock on MARK, which the operating system
drops when the process ends, however it ends.

A pack saves at an evaluation in two phases: every run writes STAGED (its next state.pt) first, then
each renames it to state.pt and writes the files that follow from it. A kill in the first phase leaves
the previous evaluation's state.pt in every run (settle deletes the staged ones); a kill in the second
leaves every run's state of the new one, staged or renamed (settle finishes the renames). Either way
the runs of a pack resume from one and the same step.
"""
import fcntl
import json
import os
import re
from pathlib import Path

import torch

MARK = "xpe-train.lock"  # "made by train.py"; locked while a call trains into the folder
STAGED = "state.next.pt"
# everything else train.py writes into a run folder, in the order --overwrite removes it: the state first,
# so that a kill halfway leaves no state to resume from, and config.json (which says "a run is here") last
OUTPUTS = (STAGED, "state.pt", "best.safetensors", "prompt.safetensors", "log.csv", "config.json")
TMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in OUTPUTS) + r")\.[^/]*\.tmp")  # xpe.atomic_write's


class FolderError(Exception):
    """A run folder that train.py may not use: one line naming it and what is there."""


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


def last_logged_step(out):
    """The last step in out's log.csv; 0 without one."""
    try:
        lines = (Path(out) / "log.csv").read_text().splitlines()
    except OSError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0
