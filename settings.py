"""train.py's settings, in a file of their own because train.py would pass 600 lines: TrainConfig and its flags, and from a call's flags one checked TrainConfig per run (methods × seeds, or source runs × target languages).

Nothing here trains or writes: every error is a UsageError (one line, exit status 2) raised before
train.py loads a backbone or makes a folder. train.py re-exports these names (train.TrainConfig, ...).
"""
import argparse
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import data
import packs
import run_folders
import xpe
from run_folders import Ended


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
    "precision": "auto, fp32 or bf16 (auto: bf16 on CUDA and on a CPU with native bf16 (AMX or AVX512-BF16), fp32 elsewhere); "
                 "the run records the one used",
}
TARGET_DEFAULTS = dict(steps=6000, warmup=0.05, patience=30, encoder_dropout=0.0)
METHOD_FRAC = dict(spt=0.0, xpe=1.0, dual=0.7)
NOT_IDENTITY = {"eval_batch_size"}  # settings a resumed run may change without becoming another run


class UsageError(Exception):
    """Bad input from the user: one line, exit status 2, nothing written."""


def build_parser(description=None):
    p = argparse.ArgumentParser(description=description)
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
                                                  "see --precision for what auto picks there)")
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


def parse_args(argv=None, description=None):
    return build_parser(description).parse_args(argv)


def parse_methods(text, xpe_frac):
    """[(method, xpe_frac)] from --method: one method (with --xpe-frac) or a list in xpe.method_name's grammar."""
    items = [item.strip() for item in text.split(",")]
    if len(items) == 1 and items[0] in xpe.METHODS:  # one method: its fraction from --xpe-frac or its default
        return [(items[0], METHOD_FRAC[items[0]] if xpe_frac is None else xpe_frac)]
    if xpe_frac is not None:
        raise UsageError("--xpe-frac goes with a single --method; in a list, write each fraction: dual:0.3,dual:0.7")
    runs = []
    for item in items:
        try:
            runs.append(xpe.parse_method(item))
        except ValueError as e:
            raise UsageError(f"--method {text}: {e}") from None
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
        raise UsageError("--target needs --init RUN_DIR [RUN_DIR ...]: the source runs to start from")
    if given.get("init") and not given.get("target"):
        raise UsageError("--init needs --target LANGS: the languages of the full-supervision phase")
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
    reached = run_folders.last_logged_step(init_dir) or 0
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
