"""Train soft prompts (SPT, XPE or DUAL) on a frozen backbone over pooled source languages.

    python train.py --method dual --xpe-frac 0.7 --source joshi5                   # one run
    python train.py --method spt,dual:0.3,dual:0.7,xpe --seed 1-3 --source joshi5  # 12 runs, one backbone
    python train.py --target kab_Latn --init runs/dual0.7-joshi5-s42               # sequential full supervision
    python train.py --target supervised-unseen --init runs/dual0.7-joshi5-s{1,2}   # 24 targets x 2 source runs
    python train.py ... --resume                                                   # continue a killed call
    torchrun --nproc-per-node 8 train.py ...                                       # the packs over 8 GPUs (packs.py)

A plain PyTorch loop: Adafactor, linear warm-up then cosine with hard restarts, dev evaluation every
epoch, early stopping on dev loss after half the steps, the best dev accuracy kept. Several runs of
one call (methods × seeds) train as a pack: one backbone pass a step carries every run's prompt in
front of its own copy of the batch, while parameters, optimiser, schedule, log, early stopping and
files stay each run's own. A run folder holds config.json, log.csv, the inference artifact of the
best model (prompt.safetensors + config.json), its trainable weights (best.safetensors, for --init),
state.pt (for --resume) and xpe-train.lock (rundirs.py: the folder is train.py's, and in use while locked).
"""
import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm
from transformers.optimization import Adafactor, get_cosine_with_hard_restarts_schedule_with_warmup

import data
import packs
import rundirs
import xpe
from packs import run_dirs, run_name  # noqa: F401 (bench.py and the tests call them through train)
from rundirs import Ended, Progress


@dataclass
class TrainConfig:
    method: str = "xpe"
    xpe_frac: float = 1.0
    seed: int = 42
    source: str = "joshi5"
    target: str = ""
    init: str = ""
    model: str = "xlm-roberta-large"
    data_dir: str = ""
    groups_file: str = ""
    steps: int = 24000
    batch_size: int = 32
    lr_prompt: float = 5e-3
    lr_spt: float = -1.0          # below 0: --lr-prompt, as the paper says
    lr: float = 5e-5
    weight_decay: float = 0.1
    warmup: float = 0.1
    cycles: int = 2
    patience: int = 20
    stop_after: float = 0.5
    max_length: int = 164
    prompt_len: int = 20
    encoder_hidden: int = 256
    encoder_dropout: float = 0.1
    head_dropout: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 0
    eval_batch_size: int = 128
    precision: str = "auto"

    def __post_init__(self):
        if self.lr_spt < 0:
            self.lr_spt = self.lr_prompt


HELP = {  # one line a flag: what it sets, its unit or choices; the default is appended
    "method": "spt, xpe or dual (with --xpe-frac), or a list of runs such as spt,dual:0.3,dual:0.7,xpe",
    "xpe_frac": "share of the prompt built by the prompt encoder, with one --method: spt 0, xpe 1, dual between "
                "(dual: 0.7)",
    "seed": "a seed, a list 1,2,5 or a range 1-10: each seed is a run of every --method (a --target run: its --init's)",
    "source": "training languages: a group, codes, or a mix such as joshi5,swh_Latn or seen-joshi5",
    "target": "the full-supervision phase: languages as --source takes them, each trained from each --init on its "
              "own train split",
    "init": "folders of the finished source runs that --target starts from: a run for each with each language",
    "model": "backbone: a hub name or a local folder of a Hugging Face encoder",
    "data_dir": "local data laid out as DIR/<code>/{train,dev,test}.tsv (empty: SIB-200 from the hub)",
    "groups_file": "language groups, in the form of groups.json (empty: groups.json)",
    "steps": "training steps (with --target: 6000)",
    "batch_size": "rows of training text per step and run",
    "lr_prompt": "learning rate of the pseudo-prompts, and of the SPT part unless --lr-spt",
    "lr_spt": "learning rate of the SPT part (below 0: --lr-prompt, as the paper; the authors' code: 5e-5 in dual)",
    "lr": "learning rate of the prompt encoder's MLP and the head",
    "weight_decay": "weight decay of the MLP and head weights, never biases or prompt vectors (authors' code: 0.01)",
    "warmup": "linear warm-up as a share of the steps, then cosine with hard restarts (with --target: 0.05)",
    "cycles": "cosine cycles, each ending in a hard restart",
    "patience": "dev evaluations without a lower dev loss before a run stops; 0: never stop early (--target: 30)",
    "stop_after": "share of the steps before which early stopping counts nothing (the authors' callback)",
    "max_length": "tokens of text a row keeps; the prompt vectors come on top",
    "prompt_len": "prompt vectors P",
    "encoder_hidden": "hidden size h of the prompt encoder's MLP d -> h -> h -> d",
    "encoder_dropout": "dropout inside the prompt encoder's MLP (with --target: 0)",
    "head_dropout": "dropout before each of the classification head's two layers",
    "grad_clip": "gradient-norm clipping, per run (0: off)",
    "eval_every": "steps between dev evaluations (0: one epoch of the pooled training rows)",
    "eval_batch_size": "rows per backbone pass in dev evaluation, shared by the runs of a pack",
    "precision": "auto, fp32 or bf16 (auto: bf16 on CUDA and on a CPU with AMX or AVX512-BF16, else fp32); "
                 "the run records the one used",
}
TARGET_DEFAULTS = dict(steps=6000, warmup=0.05, patience=30, encoder_dropout=0.0)
METHOD_FRAC = dict(spt=0.0, xpe=1.0, dual=0.7)
NOT_IDENTITY = {"eval_batch_size"}  # settings a resumed run may change without becoming another run


class UsageError(Exception):
    """Bad input from the user: one line, exit status 2, nothing written."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        shown = {"data_dir": "empty", "groups_file": "empty", "lr_spt": "-1", "eval_every": "0"}.get(f.name, default)
        kind = str if f.name in ("method", "seed") else type(default)  # lists and ranges: parsed below
        # None marks "not given", so that method- and target-dependent defaults can fill it.
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None, nargs="+" if f.name == "init" else None,
                       help=f"{HELP[f.name]} (default {shown})")
    p.add_argument("--out", default=None, help="the run's folder, or with several runs the folder that holds them "
                                               "(default runs/, each run named like dual0.7-joshi5-s42)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one; "
                                                  "bf16 there with --precision auto)")
    p.add_argument("--pack-seeds", action="store_true",
                   help="pack the seeds of a call into the same steps too, each seed its own batch, instead of one "
                        "seed's pack after another (methods are always packed; bench.py measures both)")
    p.add_argument("--pack-size", type=int, default=None,
                   help="most runs a pack trains in one backbone pass; the call goes pack after pack (default "
                        + ", ".join(f"{n} on {d}" for d, n in packs.DEFAULT_PACK_SIZE.items()) + ")")
    p.add_argument("--resume", action="store_true", help="continue the call's runs from their last evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace the runs in the run folders (only train.py's "
                                                            "own files there are removed)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def parse_methods(text, xpe_frac):
    """[(method, xpe_frac)] from --method: one method (with --xpe-frac) or a list like spt,dual:0.7,xpe."""
    items = [item.strip() for item in text.split(",")]
    if len(items) == 1 and ":" not in items[0]:
        method = items[0]
        if method not in xpe.METHODS:
            raise UsageError(f"unknown method {method!r}: use one of {', '.join(xpe.METHODS)}")
        return [(method, METHOD_FRAC[method] if xpe_frac is None else xpe_frac)]
    if xpe_frac is not None:
        raise UsageError("--xpe-frac goes with a single --method; in a list, write each fraction: dual:0.3,dual:0.7")
    runs = []
    for item in items:
        method, _, frac = item.partition(":")
        if method not in xpe.METHODS:
            raise UsageError(f"unknown method {item!r} in --method {text}: use spt, xpe or dual:R (0 < R < 1)")
        if method == "dual" and not frac:
            raise UsageError(f"dual in a list needs its fraction, as in dual:0.7 (--method {text})")
        if method != "dual" and frac:
            raise UsageError(f"{item!r}: only dual takes a fraction (spt is 0, xpe is 1)")
        try:
            value = float(frac) if frac else METHOD_FRAC[method]
        except ValueError:
            raise UsageError(f"{item!r}: the fraction after dual: must be a number between 0 and 1") from None
        if not 0 < value < 1 and method == "dual":
            raise UsageError(f"{item!r}: dual needs 0 < fraction < 1 (use spt for 0 or xpe for 1)")
        runs.append((method, value))
    if len(set(runs)) != len(runs):
        raise UsageError(f"--method {text} names a run twice")
    return runs


def parse_seeds(text):
    """[seeds] from --seed: a number, a list 1,2,5, a range 1-10, or a mix."""
    seeds = []
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--seed {text}: use a number, a list 1,2,5 or a range 1-10 (seeds are 0 or more)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UsageError(f"--seed {text}: the range {item.strip()} runs backwards; write {high}-{low}")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed {text} names a seed twice")
    return seeds


def resolve_configs(args):
    """One TrainConfig per run of the call (methods × seeds, or source runs × target languages), every setting
    checked; nothing is written."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the runs in --out and --overwrite replaces them: give one of them")
    if given.get("target") and not given.get("init"):
        raise UsageError("--target needs --init RUN_DIR: the source run to start from")
    if given.get("init") and not given.get("target"):
        raise UsageError("--init needs --target LANG: the language of the full-supervision phase")
    if args.pack_size is not None and args.pack_size < 1:
        raise UsageError(f"--pack-size must be at least 1 (1: every run alone), got {args.pack_size}")
    if given.get("init"):
        cfgs = target_configs(given)
    else:
        runs = parse_methods(given.pop("method", TrainConfig.method), given.pop("xpe_frac", None))
        seeds = parse_seeds(given.pop("seed", str(TrainConfig.seed)))
        cfgs = [TrainConfig(**given, method=method, xpe_frac=frac, seed=seed) for seed in seeds for method, frac in runs]
    for c in cfgs:
        try:
            xpe.split_prompt(c.method, c.xpe_frac, c.prompt_len)
        except ValueError as e:
            raise UsageError(str(e)) from None
    check_ranges(cfgs[0])
    return cfgs


def target_configs(given):
    """A target run for each --init and each --target language: the prompt's shape, the source and the seed
    from its source run, the rest from the flags and the target defaults."""
    inits, spec = given.pop("init"), given.pop("target")
    groups, codes = data.groups_and_codes(given.get("groups_file") or None, given.get("data_dir") or None)
    languages = data.resolve_languages(spec, groups, codes)
    for key, value in TARGET_DEFAULTS.items():
        given.setdefault(key, value)
    cfgs, labels = [], None
    for init in inits:
        init_config, mine = read_init(Path(init), given), dict(given, init=init)
        if labels is not None and init_config["labels"] != labels:
            raise UsageError(f"--init {init} has other labels than {inits[0]}: train their targets in separate calls")
        labels = init_config["labels"]
        if mine.setdefault("method", init_config["method"]) == init_config["method"]:
            mine.setdefault("xpe_frac", init_config["xpe_frac"])
        for key in ("encoder_hidden", "source"):
            mine.setdefault(key, init_config[key])
        runs = parse_methods(mine.pop("method"), mine.pop("xpe_frac", None))
        seeds = parse_seeds(mine.pop("seed", str(init_config["seed"])))
        if len(runs) > 1 or len(seeds) > 1:
            raise UsageError("--target trains one run from each --init and language: give one --method and one --seed")
        cfg = TrainConfig(**mine, method=runs[0][0], xpe_frac=runs[0][1], seed=seeds[0], target=languages[0])
        for key in ("method", "xpe_frac", "encoder_hidden"):
            if getattr(cfg, key) != init_config[key]:
                raise UsageError(f"--init {init} was trained with {key} {init_config[key]!r}, not "
                                 f"{getattr(cfg, key)!r}: leave --{key.replace('_', '-')} out to take it from there")
        cfgs += [replace(cfg, target=lang) for lang in languages]
    return cfgs


def check_ranges(cfg):
    """Every number of the settings against the range where it means something (shared by a call's runs)."""
    finite = math.isfinite
    rules = [(key, getattr(cfg, key) >= 1, "at least 1") for key in
             ("steps", "batch_size", "cycles", "max_length", "encoder_hidden", "eval_batch_size")]
    rules += [(key, getattr(cfg, key) >= 0, f"0 or more ({meaning})") for key, meaning in
              (("patience", "0 turns early stopping off"), ("eval_every", "0 means one epoch"))]
    rules += [(key, finite(getattr(cfg, key)) and getattr(cfg, key) >= 0, "a finite number, 0 or more")
              for key in ("lr_prompt", "lr", "weight_decay")]
    rules += [("lr_spt", finite(cfg.lr_spt), "a finite number (below 0: --lr-prompt)"),
              ("grad_clip", finite(cfg.grad_clip) and cfg.grad_clip >= 0, "a finite norm, or 0 for no clipping"),
              ("encoder_dropout", 0 <= cfg.encoder_dropout < 1, "a probability in [0, 1)"),
              ("head_dropout", 0 <= cfg.head_dropout < 1, "a probability in [0, 1)"),
              ("warmup", 0 <= cfg.warmup < 1, "a share of the steps in [0, 1)"),
              ("stop_after", 0 <= cfg.stop_after <= 1, "a share of the steps in [0, 1]")]
    for key, valid, what in rules:
        if not valid:
            raise UsageError(f"--{key.replace('_', '-')} must be {what}, got {getattr(cfg, key)}")


def read_init(init_dir, given):
    config_path, weights = init_dir / "config.json", init_dir / "best.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise UsageError(f"--init {init_dir} is not a finished source run (config.json and best.safetensors needed)")
    init_config = json.loads(config_path.read_text())
    steps = init_config.get("settings", {}).get("steps")
    reached = rundirs.last_logged_step(init_dir)
    # the run end marker; a config.json from before it: finished when its log reached the steps
    ended = init_config["ended"] if "ended" in init_config else (
        {"why": "steps", "step": reached} if steps is not None and reached >= steps else None)
    if ended is None:
        raise UsageError(f"--init {init_dir} is not a finished source run: it reached step {reached} of {steps}; "
                         f"finish it first (train.py ... --resume)")
    if ended.get("why") == Ended.NOT_FINITE.value:
        raise UsageError(f"--init {init_dir} stopped at step {ended.get('step')} on a loss that was not finite: "
                         f"train the source run again with lower learning rates")
    for key, default in (("model", TrainConfig.model), ("prompt_len", TrainConfig.prompt_len)):
        mine = given.get(key, default)
        if init_config.get(key) != mine:
            raise UsageError(f"--init {init_dir} was trained with {key} {init_config.get(key)!r}, this run has "
                             f"{mine!r}: pass --{key.replace('_', '-')} {init_config.get(key)} or another --init")
    return init_config




def param_groups(model, cfg):
    """SPT part at lr_spt and pseudo-prompts at lr_prompt, no decay; MLP and head at lr, decay on weights only."""
    spt, pseudo, weights, biases = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name == "prompt.spt":
            spt.append(p)
        elif name == "prompt.xpe.pseudo":
            pseudo.append(p)
        elif name.endswith("bias"):
            biases.append(p)
        else:
            weights.append(p)
    groups = [dict(params=spt, lr=cfg.lr_spt, weight_decay=0.0),
              dict(params=pseudo, lr=cfg.lr_prompt, weight_decay=0.0),
              dict(params=weights, lr=cfg.lr, weight_decay=cfg.weight_decay),
              dict(params=biases, lr=cfg.lr, weight_decay=0.0)]
    return [g for g in groups if g["params"]]


def prompt_config(cfg, num_labels=len(data.LABELS)):
    """The model's part of the training settings."""
    return xpe.PromptConfig(method=cfg.method, xpe_frac=cfg.xpe_frac, prompt_len=cfg.prompt_len,
                            encoder_hidden=cfg.encoder_hidden, encoder_dropout=cfg.encoder_dropout,
                            num_labels=num_labels, head_dropout=cfg.head_dropout)


def make_optimizer(model, cfg):
    """Adafactor with an external learning rate; warm-up, then cosine with hard restarts."""
    optimizer = Adafactor(param_groups(model, cfg), scale_parameter=False, relative_step=False, warmup_init=False)
    scheduler = get_cosine_with_hard_restarts_schedule_with_warmup(
        optimizer, num_warmup_steps=int(cfg.warmup * cfg.steps), num_training_steps=cfg.steps,
        num_cycles=cfg.cycles)
    return optimizer, scheduler


def early_stopping_start(cfg):
    """The first step at which early stopping counts, int(0.5 * steps) as in the authors' callback."""
    return int(cfg.stop_after * cfg.steps)


# ---- one run and its progress ----------------------------------------------------------------------

@dataclass
class Run:
    """A run of the call: its settings, folder, trainable model, optimiser, schedule and progress."""
    cfg: TrainConfig
    out: Path
    model: xpe.PromptClassifier
    optimizer: Adafactor
    scheduler: object
    config: dict                     # its config.json
    progress: Progress
    best: dict = None                # the best model's trainable weights and artifact tensors, on the CPU
    loss_sum: torch.Tensor = None    # training loss since the last evaluation, summed on the device
    first_bad: torch.Tensor = None   # the first step with a non-finite loss, found without a sync

    @property
    def stopped(self):  # bench.py's word for a run whose loss stopped being finite
        return "training" if self.progress.ended is Ended.NOT_FINITE else ""


def verdict(cfg, p):
    """Whether a run goes on (None) or how it ended: the one place that decides it."""
    if p.ended:
        return p.ended
    if cfg.patience and p.bad_evals >= cfg.patience:
        return Ended.EARLY
    return Ended.STEPS if p.step >= cfg.steps else None


def start_run(cfg, out, backbone, labels, sources, device, resume=False, overwrite=False, pack=None):
    """Build a run as it would be built alone (seeded), then load its state when resuming; write config.json.

    A call that does not resume starts from an emptied folder, so overwrite (bench.py passes it) changes nothing.
    pack: the names of the runs of its pack, which config.json records for --resume.
    """
    torch.manual_seed(cfg.seed)
    model = xpe.build_classifier(backbone, prompt_config(cfg, len(labels))).to(device)
    if cfg.init:
        model.load_state_dict(load_file(str(Path(cfg.init) / "best.safetensors")), strict=False)
    trainable, total, share = xpe.count_parameters(model)
    print(f"{out}: {xpe.describe_parameters(model)}")
    optimizer, scheduler = make_optimizer(model, cfg)
    config = {  # the artifact's keys (xpe.save_artifact) first, then what evaluate.py and --init read
        "model": cfg.model, "labels": list(labels), "max_length": cfg.max_length,
        **xpe.prompt_config_dict(prompt_config(cfg, len(labels))), "source": cfg.source, "target": cfg.target,
        "seed": cfg.seed, "source_languages": [] if cfg.target else sources,
        "target_languages": sources if cfg.target else [],
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share_percent": share,
        "settings": asdict(cfg), "pack": list(pack or [run_name(cfg)]), "ended": None,
    }
    zero = torch.zeros((), device=device)
    run = Run(cfg, out, model, optimizer, scheduler, config, Progress(), loss_sum=zero.clone(),
              first_bad=zero.long() - 1)
    if not resume:  # the folder is empty or train.py's own (rundirs.check_folders): what a killed call left goes
        out.mkdir(parents=True, exist_ok=True)
        rundirs.clear(out)
    if resume and (out / "state.pt").is_file():
        state = rundirs.load(out / "state.pt")
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.progress, run.best = Progress.restored(state["progress"]), state["best"]
        # a kill may have come between state.pt and the files that follow from it
        rundirs.write_outputs(out, run.progress, run.best, config, everything=True)
    else:
        if resume and (out / "config.json").is_file():  # ended before its first evaluation (not finite)
            ended = json.loads((out / "config.json").read_text()).get("ended")
            if ended:
                run.progress = Progress(ended=Ended(ended["why"]), ended_step=ended["step"], left_at=ended["step"])
        rundirs.write_config(out, config, run.progress)
    return run


def update(run, loss):
    """One optimiser step of a run whose gradients are in place: clip, step, schedule, track the loss."""
    if run.cfg.grad_clip:
        params = [p for g in run.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.progress.step += 1
    loss = loss.detach()
    run.loss_sum += loss
    run.first_bad = torch.where((run.first_bad < 0) & ~torch.isfinite(loss), run.progress.step, run.first_bad)


def evaluate_run(run, logits, labels, seconds, pack_step):
    """A dev evaluation of a run, in memory: log it, keep the best model, count towards early stopping."""
    cfg, p = run.cfg, run.progress
    dev_loss = F.cross_entropy(logits, labels).item()
    if not math.isfinite(dev_loss):  # this step's update overflowed: keep the state before it
        return end_not_finite(run, p.step, pack_step)
    dev_acc = (logits.argmax(-1) == labels).float().mean().item()
    scale = run.scheduler.lr_lambdas[0](run.scheduler.last_epoch)  # one schedule shapes every group's rate
    since = p.step - (p.log[-1]["step"] if p.log else 0)
    p.seconds += seconds
    p.log.append(dict(step=p.step, train_loss=round(run.loss_sum.item() / max(since, 1), 6),
                      lr_prompt=cfg.lr_prompt * scale, lr=cfg.lr * scale, dev_loss=round(dev_loss, 6),
                      dev_accuracy=round(dev_acc, 6), seconds=round(p.seconds, 2)))
    run.loss_sum.zero_()
    if dev_acc > p.best_accuracy:
        p.best_step, p.best_accuracy = p.step, dev_acc
        run.best = dict(model=trainable_state(run.model), artifact=artifact_tensors(run.model))
    if cfg.patience and p.step >= early_stopping_start(cfg):  # the authors' LossEarlyStoppingCallback
        if dev_loss < p.lowest_loss:
            p.lowest_loss, p.bad_evals = dev_loss, 0
        else:
            p.bad_evals += 1
    p.ended = verdict(cfg, p)
    if p.ended:
        p.ended_step, p.left_at = p.step, pack_step


def end_not_finite(run, bad_step, pack_step):
    """The run leaves the pack; its last good state.pt stays, marked as ended, so that --resume skips it."""
    p = run.progress
    p.ended, p.ended_step, p.left_at = Ended.NOT_FINITE, bad_step, pack_step
    rundirs.mark_ended(run.out, p)
    rundirs.write_config(run.out, run.config, p)


def save_pack(runs, device):
    """The runs' saves at one evaluation, as one unit (rundirs.py): every run stages its state, then each commits."""
    for run in runs:
        p = run.progress
        p.rng_cpu = torch.get_rng_state()
        p.rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        rundirs.stage(run.out, dict(progress=p.saved(), model=trainable_state(run.model), best=run.best,
                                    optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict()))
    for run in runs:
        rundirs.commit(run.out, run.progress, run.best, run.config)


def trainable_state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def artifact_tensors(model):
    """The inference artifact's tensors (xpe.save_artifact's): the prompt, computed once, and the head."""
    tensors = {"prompt": model.static_prompt().detach().float().cpu().contiguous()}
    return tensors | {f"head.{k}": v.detach().float().cpu().clone() for k, v in model.head.state_dict().items()}


# ---- the loop --------------------------------------------------------------------------------------

def fit(runs, train_ids, train_labels, dev_ids, dev_labels, pad_id, device, on_step=None, splits=None):
    """Train the runs as one pack until each has done its steps or stopped. on_step(step): bench.py's timer.

    splits: {data_key(cfg): (train_ids, train_labels, dev_ids, dev_labels)} where the runs train on rows of
    their own (a target call's languages; splits of one length, packs.packs_of); None: all on the ones given.
    """
    cfg = runs[0].cfg  # steps, batch size and evaluation are the same for every run of a call
    live = [r for r in runs if not r.progress.ended]
    if not live:
        return
    key_of = (lambda r: data_key(r.cfg)) if splits else (lambda r: None)  # noqa: E731
    splits = splits or {None: (train_ids, train_labels, dev_ids, dev_labels)}
    lengths = {key: [len(x) for x in split[0]] for key, split in splits.items()}
    per_epoch = math.ceil(len(splits[key_of(live[0])][0]) / cfg.batch_size)
    eval_every = cfg.eval_every or per_epoch
    step = min(r.progress.step for r in live)  # the same for every run of a pack (rundirs.py, rejoin)
    resumed = [r.progress for r in live if r.progress.rng_cpu is not None]
    if resumed:  # the dropout stream continues where the killed call left it
        torch.set_rng_state(resumed[0].rng_cpu)
        if device.type == "cuda" and resumed[0].rng_cuda is not None:
            torch.cuda.set_rng_state(resumed[0].rng_cuda, device)
    precision = xpe.resolve_precision(cfg.precision, device)
    plans, clock = {}, time.time()
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True,
               desc=live[0].out.name if len(runs) == 1 else f"{len(live)} runs")
    for r in live:
        r.model.train()
    while live and step < cfg.steps:
        batches = {}
        for key, seed in dict.fromkeys((key_of(r), r.cfg.seed) for r in live):  # a run's rows and seed: its batches
            if (key, seed) not in plans:
                plans[key, seed] = data.batch_plan(lengths[key], cfg.batch_size, seed, step)
            indices, (ids, labels) = next(plans[key, seed]), splits[key][:2]
            batches[key, seed] = xpe.to_device([*xpe.pad([ids[i] for i in indices], pad_id), labels[indices]], device)
        active, batch_of = live, lambda r: batches[key_of(r), r.cfg.seed]  # noqa: E731
        # On a CPU a pass a run, each backward as it ends: its tensors stay in the caches and the pack peaks
        # at one run's activations (bench.py). On a GPU one pass carries the pack. Each run's gradients
        # come from its own loss alone.
        losses = xpe.backward_pack([r.model for r in active], [batch_of(r)[:2] for r in active],
                                   [batch_of(r)[2] for r in active], device.type == "cpu", precision)
        for r, loss in zip(active, losses):
            update(r, loss)
        step += 1
        bar.update(1)
        if on_step:
            on_step(step)
        due = step % eval_every == 0 or step == cfg.steps
        if step % 50 == 0 or due:
            live = drop_non_finite(live, step)
            bar.set_postfix(runs=len(live), loss=f"{torch.stack(losses).mean().item():.3f}", dev_acc=max(
                (f"{r.progress.log[-1]['dev_accuracy']:.3f}" for r in live if r.progress.log), default="-"))
        if due and live:
            groups = {key: [r for r in live if key_of(r) == key] for key in dict.fromkeys(map(key_of, live))}
            dev = {key: xpe.predict([r.model for r in group], splits[key][2], pad_id, cfg.eval_batch_size,
                                    precision=precision)
                   for key, group in groups.items()}  # each run on its own dev split, those sharing one in one pass
            seconds, clock = time.time() - clock, time.time()
            for key, group in groups.items():
                for r, logits in zip(group, dev[key]):
                    evaluate_run(r, logits, splits[key][3], seconds, step)
            save_pack([r for r in live if r.progress.ended is not Ended.NOT_FINITE], device)
            live = [r for r in live if not r.progress.ended]
            for r in live:
                r.model.train()
    bar.close()


def drop_non_finite(live, pack_step):
    """Runs whose training loss stopped being finite leave the pack: the one sync between evaluations."""
    bad = torch.stack([r.first_bad for r in live]).tolist()
    for r, b in zip(live, bad):
        if b >= 0:
            end_not_finite(r, b, pack_step)
    return [r for r in live if not r.progress.ended]


def rejoin(pack):
    """A resumed pack goes on from the step its running runs reached; a run that left it after that step
    (its loss was not finite, then the call was killed before the others saved) leaves it again as it did."""
    going = [r.progress.step for r in pack if not r.progress.ended]
    for r in pack:
        p = r.progress
        if going and p.ended and p.left_at > min(going):
            if p.step != min(going):
                raise RuntimeError(f"{r.out}: state.pt holds step {p.step}, its pack goes on from {min(going)}")
            p.ended, p.ended_step, p.left_at = None, 0, 0
            rundirs.write_config(r.out, r.config, p)


def report(run):
    """One line on how a run ended; False when its loss stopped being finite."""
    cfg, p = run.cfg, run.progress
    if p.ended is Ended.NOT_FINITE:
        kept = (f"the last good state, from step {p.log[-1]['step']}, is kept" if p.log else
                "nothing is kept: it stopped before its first evaluation")
        print(f"train.py: {run.out}: stopped: the loss was not finite at step {p.ended_step} "
              f"(--lr-prompt {cfg.lr_prompt:g}, --lr-spt {cfg.lr_spt:g}, --lr {cfg.lr:g}); {kept}: "
              f"lower the learning rates", file=sys.stderr)
        return False
    why = f"early stop at step {p.step}" if p.ended is Ended.EARLY else f"{p.step} steps"
    print(f"{run.out}: done ({why}): best dev accuracy {p.best_accuracy:.4f} at step {p.best_step}, "
          f"{p.seconds:.0f} s of training")
    return True


def data_key(cfg):
    """Runs of the same key train on the same rows: a target run on its own language, a source run on its source."""
    return cfg.target or cfg.source


def load_rows(cfgs):
    """The languages {key: codes}, the labels, and the rows {key: (train rows, dev rows)} of the call's runs."""
    cfg = cfgs[0]
    data_dir = cfg.data_dir or None
    groups, codes = data.groups_and_codes(cfg.groups_file or None, data_dir)
    languages = {key: data.resolve_languages(key, groups, codes) for key in dict.fromkeys(map(data_key, cfgs))}
    # a target run keeps its source run's head, so its labels
    labels = (json.loads((Path(cfg.init) / "config.json").read_text())["labels"] if cfg.init
              else data.find_labels(languages[data_key(cfg)], data_dir))
    rows = {key: tuple(data.check_rows(data.load_split(langs, split, data_dir, labels), langs, split, data_dir)
                       for split in ("train", "dev")) for key, langs in languages.items()}
    return languages, labels, rows


def train(cfgs, outs, plan, languages, labels, rows, backbone, tokenizer, device, resume=False):
    """Train the runs of the packs in plan into their claimed folders, pack after pack; 0 if all ended well."""
    splits = {}
    for key in dict.fromkeys(data_key(cfgs[i]) for pack in plan for i in pack):
        train_rows, dev_rows = rows[key]
        splits[key] = (data.encode(train_rows, tokenizer, cfgs[0].max_length), torch.tensor([r.label for r in train_rows]),
                       data.encode(dev_rows, tokenizer, cfgs[0].max_length), torch.tensor([r.label for r in dev_rows]))
    runs = []
    for pack in plan:  # built just before training: a pack of one trains as that run alone
        names = [run_name(cfgs[i]) for i in pack]
        if resume:
            rundirs.settle([outs[i] for i in pack])
        members = [start_run(cfgs[i], outs[i], backbone, labels, languages[data_key(cfgs[i])], device, resume,
                             pack=names) for i in pack]
        rejoin(members)
        fit(members, None, None, None, None, tokenizer.pad_token_id, device, splits=splits)
        runs += members
    return 0 if all([report(r) for r in runs]) else 1


def main(argv=None):
    args = parse_args(argv)
    try:
        cfgs = resolve_configs(args)
        rank, world, local_rank = packs.rank_world()
        device = pick_device(args.device, local_rank if world > 1 else None)
        precision = xpe.resolve_precision(cfgs[0].precision, device)  # the runs record what they train in
        cfgs = [replace(c, precision=precision) for c in cfgs]
        cfg = cfgs[0]
        languages, labels, rows = load_rows(cfgs)
        plan = packs.packs_of(cfgs, args.pack_seeds, args.pack_size or packs.DEFAULT_PACK_SIZE[device.type],
                              [len(rows[data_key(c)][0]) for c in cfgs])
        outs = run_dirs(cfgs, args.out)
        names = {i: [run_name(cfgs[j]) for j in pack] for pack in plan for i in pack}
        plan = packs.share(plan, rank, world)  # torchrun, srun: this process's packs
        mine = [i for pack in plan for i in pack]
        check = lambda **kw: rundirs.check_folders(  # noqa: E731
            [outs[i] for i in mine], [asdict(cfgs[i]) for i in mine], [names[i] for i in mine], args.resume,
            args.overwrite, NOT_IDENTITY, call_outs=outs, **kw)
        check()
        if not mine:
            print(f"train.py: process {rank} of {world}: the call's {len(names)} runs are in other processes' packs")
            return 0
        backbone, tokenizer = xpe.load_backbone(cfg.model, device)
        xpe.prepare_backbone(backbone, precision)
        check_positions(cfg, xpe.max_text_length(backbone, cfg.prompt_len))
        fds = rundirs.claim([outs[i] for i in mine])  # from here on the folders are this call's: now it writes
    except (UsageError, rundirs.FolderError, ValueError) as e:  # data.DataError is a ValueError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    try:
        check(probe_locks=False)  # again, as they are now that they are locked
        if args.overwrite:
            for i in mine:
                rundirs.clear(outs[i])
        return train(cfgs, outs, plan, languages, labels, rows, backbone, tokenizer, device, args.resume)
    except (UsageError, rundirs.FolderError) as e:  # another call changed a folder between the checks
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    finally:
        rundirs.release(fds)


def pick_device(name, local_rank=None):
    """--device, or cuda when there is one; a process of several (torchrun, srun) takes its local rank's GPU."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
        if local_rank is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UsageError(f"--device {name or device}: no such CUDA device on this machine "
                         f"({torch.cuda.device_count()} found); use cpu or another --device")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: train.py runs on cpu or cuda")
    return device


def check_positions(cfg, limit):
    """The prompt and the text must fit into the backbone's position table (None: it has none)."""
    if limit is None or cfg.max_length <= limit:
        return
    positions = limit + cfg.prompt_len
    if limit < 1:
        prompt_len = max(1, positions - cfg.max_length)
        raise UsageError(f"--prompt-len {cfg.prompt_len} leaves no position for text in {cfg.model}, which has "
                         f"{positions}: use --prompt-len {prompt_len} or less with --max-length "
                         f"{min(cfg.max_length, positions - prompt_len)}")
    raise UsageError(f"--max-length {cfg.max_length} and {cfg.prompt_len} prompt vectors need more positions "
                     f"than {cfg.model} has: use --max-length {limit} or less")


if __name__ == "__main__":
    sys.exit(main())
