"""The call's plan, in a file of its own because train.py would pass 600 lines: its runs' names and folders, which runs train together (packs), and which process trains which pack (torchrun, srun).

A call's runs go into packs: a source call's one seed's methods (all its runs with --pack-seeds), a
target call's every (source run, language); runs whose training splits differ in length stay apart
(their evaluations fall on other steps), and each pack is cut into packs of at most --pack-size runs.
Started several times by torchrun or srun, each process trains every world-th pack, from its rank on,
on its own device: every run folder is written by exactly one process, and no process waits for
another, so no process group is needed.
"""
import os
from pathlib import Path

DEFAULT_PACK_SIZE = {"cuda": 8, "cpu": 4}  # cuda: one pass carries the pack, 8 x 32 rows; cpu: a seed's methods


def run_name(cfg):
    if cfg.target:
        return f"{Path(cfg.init).name}-to-{cfg.target}"
    frac = f"{cfg.xpe_frac:g}" if cfg.method == "dual" else ""
    return f"{cfg.method}{frac}-{cfg.source.replace(',', '+')}-s{cfg.seed}"


def run_dirs(cfgs, out):
    """One run: --out is its folder. Several: --out (default runs/) holds them, each under its default name."""
    if len(cfgs) == 1:
        return [Path(out) if out else Path("runs") / run_name(cfgs[0])]
    names = [run_name(cfg) for cfg in cfgs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two runs of this call would share the folder {twice[0]}: give each --init a name "
                         f"of its own (the target runs are named <init folder>-to-<language>)")
    return [Path(out or "runs") / name for name in names]


def packs_of(cfgs, pack_seeds, pack_size, rows=None):
    """The packs of a call, as lists of indices into cfgs, in the order the call trains them.

    rows[i]: the length of run i's training split (None: all the same), which sets its epochs.
    """
    together = {}
    for i, cfg in enumerate(cfgs):
        key = (None if pack_seeds or cfg.target else cfg.seed, rows[i] if rows else None)
        together.setdefault(key, []).append(i)
    return [group[k:k + pack_size] for group in together.values() for k in range(0, len(group), pack_size)]


def rank_world(env=None):
    """(rank, world size, local rank) of this process: torchrun's variables, else those of an srun step, else one."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (also under srun)
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        return rank, world, int(env.get("LOCAL_RANK", rank))
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]), int(env.get("LOCAL_WORLD_SIZE", 1)), int(env["LOCAL_RANK"])
    # only inside a step that srun started: a batch script also sets SLURM_PROCID and SLURM_NTASKS, and
    # a train.py started there directly is the only process
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def share(packs, rank, world):
    """The packs this process trains: every world-th, from its rank on."""
    return packs[rank::world]
