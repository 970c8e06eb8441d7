"""Train soft prompts (SPT, XPE or DUAL) on a frozen backbone over pooled source languages.

    python train.py --method dual --xpe-frac 0.7 --source joshi5                   # one run
    python train.py --method spt,dual:0.3,dual:0.7,xpe --seed 1-3 --source joshi5  # 12 runs, one backbone
    python train.py --target kab_Latn --init runs/dual0.7-joshi5-s42               # sequential full supervision
    python train.py ... --resume                                                   # continue a killed call

A plain PyTorch loop: Adafactor, linear warm-up then cosine with hard restarts, dev evaluation every
epoch, early stopping on dev loss after half the steps, the best dev accuracy kept. Several runs of
one call (methods × seeds) train as a pack: one backbone pass a step carries every run's prompt in
front of its own copy of the batch, while parameters, optimiser, schedule, log, early stopping and
files stay each run's own. A run folder holds config.json, log.csv, the inference artifact of the
best model (prompt.safetensors + config.json), its trainable weights (best.safetensors, for --init)
and state.pt (for --resume).
"""
import argparse
import csv
import dataclasses
import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers.optimization import Adafactor, get_cosine_with_hard_restarts_schedule_with_warmup

import data
import xpe


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
    "target": "the full-supervision phase: one language, trained from --init on its own train split",
    "init": "folder of the finished source run that --target starts from",
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
    "grad_clip": "gradient-norm clipping, per run",
    "eval_every": "steps between dev evaluations (0: one epoch of the pooled training rows)",
    "eval_batch_size": "rows per backbone pass in dev evaluation, shared by the runs of a pack",
    "precision": "auto, fp32 or bf16 (auto: bf16 on CUDA and on a CPU with AMX or AVX512-BF16, else fp32); "
                 "the run records the one used",
}
TARGET_DEFAULTS = dict(steps=6000, warmup=0.05, patience=30, encoder_dropout=0.0)
METHOD_FRAC = dict(spt=0.0, xpe=1.0, dual=0.7)
NOT_IDENTITY = {"eval_batch_size"}  # settings a resumed run may change without becoming another run
LOG_FIELDS = ["step", "train_loss", "lr_prompt", "lr", "dev_loss", "dev_accuracy", "seconds"]


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
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                       help=f"{HELP[f.name]} (default {shown})")
    p.add_argument("--out", default=None, help="the run's folder, or with several runs the folder that holds them "
                                               "(default runs/, each run named like dual0.7-joshi5-s42)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one; "
                                                  "bf16 there with --precision auto)")
    p.add_argument("--pack-seeds", action="store_true",
                   help="pack the seeds of a call into the same steps too, each seed its own batch, instead of one "
                        "seed's pack after another (methods are always packed; bench.py measures both)")
    p.add_argument("--resume", action="store_true", help="continue the call's runs from their last evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace the runs already in the run folders")
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
    """One TrainConfig per run of the call (methods × seeds), every setting checked; nothing is written."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the runs in --out and --overwrite replaces them: give one of them")
    if given.get("target") and not given.get("init"):
        raise UsageError("--target needs --init RUN_DIR: the source run to start from")
    if given.get("init") and not given.get("target"):
        raise UsageError("--init needs --target LANG: the language of the full-supervision phase")
    init_config = None
    if given.get("init"):
        init_config = read_init(Path(given["init"]), given)
        # The prompt's shape, the source and the seed come from the source run; the rest are the target defaults.
        if given.setdefault("method", init_config["method"]) == init_config["method"]:
            given.setdefault("xpe_frac", init_config["xpe_frac"])
        for key in ("encoder_hidden", "source"):
            given.setdefault(key, init_config[key])
        given.setdefault("seed", str(init_config["seed"]))
        for key, value in TARGET_DEFAULTS.items():
            given.setdefault(key, value)
    runs = parse_methods(given.pop("method", TrainConfig.method), given.pop("xpe_frac", None))
    seeds = parse_seeds(given.pop("seed", str(TrainConfig.seed)))
    if init_config is not None and (len(runs) > 1 or len(seeds) > 1):
        raise UsageError("--target trains one run from its --init: give one --method and one --seed")
    cfgs = [TrainConfig(**given, method=method, xpe_frac=frac, seed=seed) for seed in seeds for method, frac in runs]
    cfg = cfgs[0]
    for c in cfgs:
        try:
            xpe.split_prompt(c.method, c.xpe_frac, c.prompt_len)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if init_config is not None:
        for key in ("method", "xpe_frac", "encoder_hidden"):
            if getattr(cfg, key) != init_config[key]:
                raise UsageError(f"--init {cfg.init} was trained with {key} {init_config[key]!r}, not "
                                 f"{getattr(cfg, key)!r}: leave --{key.replace('_', '-')} out to take it from there")
    for key in ("steps", "batch_size", "cycles", "max_length", "eval_batch_size"):
        if getattr(cfg, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(cfg, key)}")
    for key in ("patience", "eval_every"):
        if getattr(cfg, key) < 0:
            raise UsageError(f"--{key.replace('_', '-')} must be 0 or more, got {getattr(cfg, key)} "
                             f"(0 {'turns early stopping off' if key == 'patience' else 'means one epoch'})")
    if not 0 <= cfg.warmup < 1:
        raise UsageError(f"--warmup is a share of the steps in [0, 1), got {cfg.warmup}")
    if not 0 <= cfg.stop_after <= 1:
        raise UsageError(f"--stop-after is a share of the steps in [0, 1], got {cfg.stop_after}")
    return cfgs


def read_init(init_dir, given):
    config_path, weights = init_dir / "config.json", init_dir / "best.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise UsageError(f"--init {init_dir} is not a finished source run (config.json and best.safetensors needed)")
    init_config = json.loads(config_path.read_text())
    for key, default in (("model", TrainConfig.model), ("prompt_len", TrainConfig.prompt_len)):
        mine = given.get(key, default)
        if init_config.get(key) != mine:
            raise UsageError(f"--init {init_dir} was trained with {key} {init_config.get(key)!r}, this run has "
                             f"{mine!r}: pass --{key.replace('_', '-')} {init_config.get(key)} or another --init")
    return init_config


def run_name(cfg):
    if cfg.target:
        return f"{Path(cfg.init).name}-to-{cfg.target}"
    frac = f"{cfg.xpe_frac:g}" if cfg.method == "dual" else ""
    return f"{cfg.method}{frac}-{cfg.source.replace(',', '+')}-s{cfg.seed}"


def run_dirs(cfgs, out):
    """One run: --out is its folder. Several: --out (default runs/) holds them, each under its default name."""
    if len(cfgs) == 1:
        return [Path(out) if out else Path("runs") / run_name(cfgs[0])]
    return [Path(out or "runs") / run_name(cfg) for cfg in cfgs]


def check_out_dirs(outs, cfgs, resume, overwrite):
    """Refuse to mix runs: a folder holding another run needs --resume (the same run) or --overwrite."""
    resumable = 0
    for out, cfg in zip(outs, cfgs):
        if not out.exists() or not any(out.iterdir()):
            continue
        config_path = out / "config.json"
        if not config_path.is_file():
            raise UsageError(f"{out} is not empty and holds no run: choose another --out")
        if overwrite:
            continue
        if not resume:
            raise UsageError(f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it")
        old = {"precision": "fp32", **json.loads(config_path.read_text()).get("settings", {})}  # before --precision
        diff = [k for k, v in asdict(cfg).items() if k not in NOT_IDENTITY and old.get(k) != v]
        if diff:
            raise UsageError(f"--resume: {out} holds a different run ({', '.join(f'{k} {old.get(k)!r}' for k in diff)}); "
                             f"resume with the same settings or choose another --out")
        resumable += (out / "state.pt").is_file()
    if resume and not resumable:
        raise UsageError(f"--resume: {'no run of this call has' if len(outs) > 1 else f'{outs[0]} has'} reached its "
                         f"first evaluation (state.pt), so there is nothing to resume: use --overwrite")


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


# ---- one run's state and bookkeeping ---------------------------------------------------------------

@dataclass
class Run:
    """A run of the call: its settings, folder, trainable model, optimiser and progress."""
    cfg: TrainConfig
    out: Path
    model: xpe.PromptClassifier
    optimizer: Adafactor
    scheduler: object
    config: dict                    # its config.json
    loss_sum: torch.Tensor          # training loss since the last evaluation, summed on the device
    first_bad: torch.Tensor         # the first step with a non-finite loss, found without a sync
    step: int = 0
    since_eval: int = 0
    seconds: float = 0.0            # training time before this process: a resumed run keeps counting
    best: dict = dataclasses.field(default_factory=lambda: dict(step=0, dev_accuracy=-1.0, dev_loss=math.inf))
    early: dict = dataclasses.field(default_factory=lambda: dict(best_loss=None, bad_evals=0))
    log: list = dataclasses.field(default_factory=list)
    stopped: str = ""               # "", "steps", "early", or where a loss stopped being finite: "training", "dev"
    bad_step: int = 0
    rng: tuple = None               # resumed: the RNG states saved with it (CPU, CUDA)


def start_run(cfg, out, backbone, labels, sources, device, resume, overwrite):
    """Build a run as it would be built alone (seeded), then load its state when resuming; write config.json."""
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
        "settings": asdict(cfg),
    }
    zero = torch.zeros((), device=device)
    run = Run(cfg, out, model, optimizer, scheduler, config, loss_sum=zero.clone(), first_bad=zero.long() - 1)
    if resume and (out / "state.pt").is_file():
        state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.step, run.best, run.early, run.log = state["step"], state["best"], state["early"], state["log"]
        run.seconds, run.stopped = state["seconds"], state["stopped"]
        run.rng = state["rng_cpu"], state.get("rng_cuda")
    else:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    xpe.atomic_write_json(out / "config.json", config)
    return run


def finished(run):
    cfg = run.cfg
    return bool(run.stopped) or run.step >= cfg.steps or (cfg.patience and run.early["bad_evals"] >= cfg.patience)


def update(run, loss):
    """One optimiser step of a run whose gradients are in place: clip, step, schedule, track the loss."""
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.since_eval += 1
    loss = loss.detach()
    run.loss_sum += loss
    run.first_bad = torch.where((run.first_bad < 0) & ~torch.isfinite(loss), run.step, run.first_bad)


def after_eval(run, logits, labels, seconds, device):
    """What a run does at a dev evaluation: log it, keep the best model, count towards early stopping, save."""
    cfg = run.cfg
    dev_loss = F.cross_entropy(logits, labels).item()
    if not math.isfinite(dev_loss):  # this step's update overflowed: keep the state before it
        run.stopped, run.bad_step = "dev", run.step
        return
    dev_acc = (logits.argmax(-1) == labels).float().mean().item()
    scale = run.scheduler.lr_lambdas[0](run.scheduler.last_epoch)  # one schedule shapes every group's rate
    run.log.append(dict(step=run.step, train_loss=round(run.loss_sum.item() / max(run.since_eval, 1), 6),
                        lr_prompt=cfg.lr_prompt * scale, lr=cfg.lr * scale, dev_loss=round(dev_loss, 6),
                        dev_accuracy=round(dev_acc, 6), seconds=round(run.seconds + seconds, 2)))
    run.loss_sum.zero_()
    run.since_eval = 0
    if dev_acc > run.best["dev_accuracy"]:
        run.best.update(step=run.step, dev_accuracy=dev_acc, dev_loss=dev_loss)
        xpe.save_artifact(run.model, run.out, run.config)
        weights = trainable_state(run.model)
        xpe.atomic_write(run.out / "best.safetensors", lambda tmp: save_file(weights, tmp))
    if cfg.patience and run.step >= early_stopping_start(cfg):  # the authors' LossEarlyStoppingCallback
        if run.early["best_loss"] is None or dev_loss < run.early["best_loss"]:
            run.early.update(best_loss=dev_loss, bad_evals=0)
        else:
            run.early["bad_evals"] += 1
    if cfg.patience and run.early["bad_evals"] >= cfg.patience:
        run.stopped = "early"
    elif run.step >= cfg.steps:
        run.stopped = "steps"
    write_log(run.out / "log.csv", run.log)
    save_state(run, run.seconds + seconds, device)


def trainable_state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def write_log(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def save_state(run, seconds, device):
    state = dict(trainable=trainable_state(run.model), optimizer=run.optimizer.state_dict(),
                 scheduler=run.scheduler.state_dict(), step=run.step, best=run.best, early=run.early, log=run.log,
                 seconds=seconds, stopped=run.stopped, rng_cpu=torch.get_rng_state())
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    xpe.atomic_write(run.out / "state.pt", lambda tmp: torch.save(state, tmp))


def mark_stopped(run):
    """A run whose loss stopped being finite keeps its last good state.pt, marked so that --resume skips it."""
    path = run.out / "state.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["stopped"] = run.stopped
        xpe.atomic_write(path, lambda tmp: torch.save(state, tmp))


# ---- the loop --------------------------------------------------------------------------------------

def fit(runs, train_ids, train_labels, dev_ids, dev_labels, pad_id, device, on_step=None):
    """Train the runs as one pack until each has done its steps or stopped. on_step(step): bench.py's timer."""
    cfg = runs[0].cfg  # steps, batches and evaluation are the same for every run of a call
    live = [r for r in runs if not finished(r)]
    if not live:
        return
    lengths = [len(x) for x in train_ids]
    per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    eval_every = cfg.eval_every or per_epoch
    step = min(r.step for r in live)
    resumed = [r.rng for r in live if r.rng is not None and r.step == step]
    if resumed:  # the dropout stream continues where the killed call left it
        torch.set_rng_state(resumed[0][0])
        if device.type == "cuda" and resumed[0][1] is not None:
            torch.cuda.set_rng_state(resumed[0][1], device)
    precision = xpe.resolve_precision(cfg.precision, device)
    plans, start = {}, time.time()
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True,
               desc=live[0].out.name if len(runs) == 1 else f"{len(live)} runs")
    for r in live:
        r.model.train()
    while live and step < cfg.steps:
        batches = {}
        for seed in sorted({r.cfg.seed for r in live}):  # the data order depends on the seed alone
            if seed not in plans:
                plans[seed] = data.batch_plan(lengths, cfg.batch_size, seed, step)
            indices = next(plans[seed])
            batches[seed] = xpe.to_device([*xpe.pad([train_ids[i] for i in indices], pad_id), train_labels[indices]],
                                          device)
        active = [r for r in live if r.step == step]  # after a kill mid-save, a run ahead waits for the pack
        # On a CPU a pass a run, each backward as it ends: its tensors stay in the caches and the pack peaks
        # at one run's activations (bench.py). On a GPU one pass carries the pack. Each run's gradients
        # come from its own loss alone.
        losses = xpe.backward_pack([r.model for r in active], [batches[r.cfg.seed][:2] for r in active],
                                   [batches[r.cfg.seed][2] for r in active], device.type == "cpu", precision)
        for r, loss in zip(active, losses):
            update(r, loss)
        step += 1
        bar.update(1)
        if on_step:
            on_step(step)
        due = step % eval_every == 0 or step == cfg.steps
        if step % 50 == 0 or due:
            live = drop_non_finite(live)
            bar.set_postfix(runs=len(live), loss=f"{torch.stack(losses).mean().item():.3f}",
                            dev_acc=max((f"{r.log[-1]['dev_accuracy']:.3f}" for r in live if r.log), default="-"))
        if due and live:
            dev = xpe.predict([r.model for r in live], dev_ids, pad_id, cfg.eval_batch_size, precision=precision)
            for r, logits in zip(live, dev):
                after_eval(r, logits, dev_labels, time.time() - start, device)
                if r.stopped in ("training", "dev"):
                    mark_stopped(r)
            live = [r for r in live if not r.stopped]
            for r in live:
                r.model.train()
    bar.close()


def drop_non_finite(live):
    """Runs whose training loss stopped being finite leave the pack: the one sync between evaluations."""
    bad = torch.stack([r.first_bad for r in live]).tolist()
    for r, b in zip(live, bad):
        if b >= 0:
            r.stopped, r.bad_step = "training", b
            mark_stopped(r)
    return [r for r in live if not r.stopped]


def report(run):
    """One line on how a run ended; False when its loss stopped being finite."""
    cfg = run.cfg
    if run.stopped in ("training", "dev"):
        kept = (f"the last good state, from step {run.log[-1]['step']}, is kept" if run.log else
                "nothing is kept: it stopped before its first evaluation")
        print(f"train.py: {run.out}: stopped: the {run.stopped} loss was not finite at step {run.bad_step} "
              f"(--lr-prompt {cfg.lr_prompt:g}, --lr-spt {cfg.lr_spt:g}, --lr {cfg.lr:g}); {kept}: "
              f"lower the learning rates", file=sys.stderr)
        return False
    why = f"early stop at step {run.step}" if run.stopped == "early" else f"{run.step} steps"
    seconds = run.log[-1]["seconds"] if run.log else 0.0
    print(f"{run.out}: done ({why}): best dev accuracy {run.best['dev_accuracy']:.4f} at step {run.best['step']}, "
          f"{seconds:.0f} s of training")
    return True


def train(cfgs, outs, sources, labels, train_rows, dev_rows, backbone, tokenizer, device, resume=False,
          overwrite=False, pack_seeds=False):
    """Train the call's runs: one pack a seed, one after another, or with pack_seeds a single pack; 0 if all ended well."""
    train_ids = data.encode(train_rows, tokenizer, cfgs[0].max_length)
    dev_ids = data.encode(dev_rows, tokenizer, cfgs[0].max_length)
    train_labels = torch.tensor([r.label for r in train_rows])
    dev_labels = torch.tensor([r.label for r in dev_rows])
    seeds = list(dict.fromkeys(cfg.seed for cfg in cfgs))
    packs = [range(len(cfgs))] if pack_seeds else [[i for i, c in enumerate(cfgs) if c.seed == s] for s in seeds]
    runs = []
    for pack in packs:  # built just before training: a pack of one trains as that run alone would
        members = [start_run(cfgs[i], outs[i], backbone, labels, sources, device, resume, overwrite) for i in pack]
        fit(members, train_ids, train_labels, dev_ids, dev_labels, tokenizer.pad_token_id, device)
        runs += members
    return 0 if all([report(r) for r in runs]) else 1


def main(argv=None):
    args = parse_args(argv)
    try:
        cfgs = resolve_configs(args)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        precision = xpe.resolve_precision(cfgs[0].precision, device)  # the runs record what they train in
        cfgs = [dataclasses.replace(c, precision=precision) for c in cfgs]
        cfg = cfgs[0]
        outs = run_dirs(cfgs, args.out)
        check_out_dirs(outs, cfgs, args.resume, args.overwrite)
        data_dir = cfg.data_dir or None
        groups, codes = data.groups_and_codes(cfg.groups_file or None, data_dir)
        sources = data.resolve_languages(cfg.target or cfg.source, groups, codes)
        if cfg.target and len(sources) != 1:
            raise UsageError(f"--target is one language, got {cfg.target!r} ({len(sources)} languages)")
        # a target run keeps its source run's head, so its labels
        labels = (json.loads((Path(cfg.init) / "config.json").read_text())["labels"] if cfg.init
                  else data.find_labels(sources, data_dir))
        train_rows = data.load_split(sources, "train", data_dir, labels)
        dev_rows = data.load_split(sources, "dev", data_dir, labels)
        backbone, tokenizer = xpe.load_backbone(cfg.model, device)
        xpe.prepare_backbone(backbone, precision)
        limit = xpe.max_text_length(backbone, cfg.prompt_len)
        if limit is not None and cfg.max_length > limit:
            raise UsageError(f"--max-length {cfg.max_length} and {cfg.prompt_len} prompt vectors need more positions "
                             f"than {cfg.model} has: use --max-length {limit} or less")
    except (UsageError, ValueError) as e:  # data.DataError is a ValueError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return train(cfgs, outs, sources, labels, train_rows, dev_rows, backbone, tokenizer, device, args.resume,
                 args.overwrite, args.pack_seeds)


if __name__ == "__main__":
    sys.exit(main())
