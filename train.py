"""Train soft prompts (SPT, XPE or DUAL) on a frozen backbone over pooled source languages.

    python train.py --method dual --xpe-frac 0.7 --source joshi5                   # one run
    python train.py --method spt,dual:0.3,dual:0.7,xpe --seed 1-3 --source joshi5  # 12 runs, one backbone
    python train.py --target kab_Latn --init runs/dual0.7-joshi5-s42               # sequential full supervision
    python train.py --target supervised-unseen --init runs/dual0.7-joshi5-s{1,2}   # 24 targets x 2 source runs
    python train.py ... --resume                                                   # continue a killed call
    torchrun --nproc-per-node 8 train.py ...                                       # the packs over 8 GPUs

A plain PyTorch loop: Adafactor, linear warm-up then cosine with hard restarts, dev evaluation every
epoch, early stopping on dev loss after half the steps, the best dev accuracy kept. Several runs of
one call (methods × seeds) train as a pack: one backbone pass a step carries every run's prompt in
front of its own copy of the batch, while parameters, optimiser, schedule, log, early stopping and
files stay each run's own. A run folder holds config.json, log.csv, the inference artifact of the
best model (prompt.safetensors + config.json), its trainable weights (best.safetensors, for --init),
state.pt (for --resume) and xpe-train.lock (the folder is train.py's, and in use while locked).

The file reads top to bottom: the settings and their flags; the plan (run names, folders, packs); the run
folder (what train.py writes and how a pack's save stays one unit); the optimiser and its schedule; one
run's start, step and evaluation; the loop (fit); the call (main).
"""
import argparse
import csv
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

import data
import xpe
from xpe import UsageError


# ---- settings and flags ----------------------------------------------------------------------

MAX_SEED = 2 ** 64 - 1  # torch.manual_seed's largest
MAX_HIDDEN = 16_384    # the prompt encoder's h: its h x h layer is then 268 M weights, 1 GiB
MAX_SEEDS = 10_000     # seeds a call names: each is a run of every method
MAX_COUNT = 2 ** 53    # steps, rows, cycles and the like: the schedule and the epochs compute them as floats


@dataclass(frozen=True)
class Values:
    """The values a setting (or a recorded field, or a flag of a call) takes, declared once beside it: its type, and
    its bounds, choices or grammar. Every check of it reads this: its flag and a sweep's lists (check_setting), a
    run's config.json (read_run_config: --resume, --init, evaluate.py, the PEFT export), the settings of a
    per_language.csv row (evaluate.typed_row), the copies in tools.bench and the PEFT import, and the tests that walk
    them. A float is finite; read() takes a number as Python writes one; words() says the range to a person."""
    kind: type                 # int, float, str or bool
    low: float = -math.inf
    high: float = math.inf
    high_open: bool = False    # [low, high): high itself is out
    low_open: bool = False     # (low, high]: low itself is out
    choices: tuple = ()        # a text's values (empty: any text)
    filled: bool = False       # a text that may not be blank
    grammar: object = None     # a text's grammar, where it is not empty: a function that raises UsageError
    why: str = ""              # what the range means, said after it

    def holds(self, value):
        if self.kind in (str, bool):
            return (isinstance(value, self.kind) and (not self.choices or value in self.choices)
                    and not (self.filled and not value.strip())
                    and not (self.grammar and value and not follows(self.grammar, value)))
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.low < value if self.low_open else self.low <= value)
                and (value < self.high if self.high_open else value <= self.high))

    def read(self, text):
        """The value a text (a flag's, a CSV cell's) stands for, in this kind; ValueError where it stands for none.
        A number is written in ASCII as Python writes one (int() and float() also take "٣", "1_0" and " 4 ")."""
        if self.kind is bool:  # bool("false") is True
            if text.strip().lower() not in ("true", "false"):
                raise ValueError(f"{text!r} is neither true nor false")
            return text.strip().lower() == "true"
        if self.kind in (int, float) and not re.fullmatch(NUMBER_TEXT[self.kind], text, re.IGNORECASE):
            raise ValueError(f"{text!r} is not written as a {self.kind.__name__}")
        return self.kind(text)

    def words(self):
        if self.kind is bool:
            said = "true or false"
        elif self.kind is str:
            said = ("one of " + ", ".join(self.choices) if self.choices else "a text that is not blank" if self.filled
                    else "a text")
        else:
            number = "a whole number" if self.kind is int else "a finite number" if not math.isfinite(self.high) \
                else "a number"
            shown = lambda x: f"{x:,}" if isinstance(x, int) else xpe.value_text(float(x))  # noqa: E731
            if not math.isfinite(self.low) and not math.isfinite(self.high):
                said = number
            elif not math.isfinite(self.high):
                said = (f"{number}, {shown(self.low)} or more" if not self.low_open
                        else f"{number} above {shown(self.low)}")
            elif self.kind is int:
                said = f"{number} from {shown(self.low)} to {shown(self.high)}"
            else:
                said = (f"{number} in {'(' if self.low_open else '['}{shown(self.low)}, {shown(self.high)}"
                        f"{')' if self.high_open else ']'}")
        return f"{said} ({self.why})" if self.why else said


NUMBER_TEXT = {int: r"-?[0-9]+", float: r"-?([0-9]+\.?[0-9]*|\.[0-9]+)(e[-+]?[0-9]+)?|-?(inf|nan)"}


def follows(grammar, text):
    """Whether a text follows a grammar (a function that raises UsageError where it does not)."""
    try:
        grammar(text)
    except UsageError:
        return False
    return True


COUNT = Values(int, 1, MAX_COUNT, why="2^53: a count stays exact as a float, as the schedule takes it")
RATE = Values(float, 0)
PROBABILITY = Values(float, 0, 1, high_open=True, why="a probability")
TEXT = Values(str)


def flag(default, help, values, later=None):
    """A setting with its --flag's help and the values it takes. later: for a setting that came after runs were
    recorded without it, the value those runs had (LATER_SETTINGS); None: every run records it."""
    return field(default=default, metadata={"help": help, "values": values, "later": later})


def values_of(name):
    """The Values a setting of TrainConfig takes, by name."""
    return next(f.metadata["values"] for f in fields(TrainConfig) if f.name == name)


@dataclass
class TrainConfig:
    """Every setting of a run; each is a flag of train.py (--xpe-frac for xpe_frac), its help and values beside it."""
    method: str = flag("xpe", "spt, xpe or dual (with --xpe-frac), or a list of runs such as "
                              "spt,dual:0.3,dual:0.7,xpe", Values(str, choices=xpe.METHODS))
    xpe_frac: float = flag(1.0, "share of the prompt built by the prompt encoder, with one --method: spt 0, xpe 1, "
                                "dual between (dual: 0.7)",
                           Values(float, *xpe.XPE_FRAC_RANGE, why="0 = spt, 1 = xpe, between = dual"))
    seed: int = flag(42, "a seed, a list 1,2,5 or a range 1-10: each seed is a run of every --method (a --target "
                         "run: its --init's)", Values(int, 0, MAX_SEED, why="2^64 - 1, torch's largest"))
    source: str = flag("joshi5", "training languages: a group, codes, or a mix such as joshi5,swh_Latn or seen-joshi5",
                       Values(str, filled=True, why="the source languages"))
    target: str = flag("", "the full-supervision phase: languages as --source takes them, each trained from each "
                           "--init on its own train split", TEXT)
    init: str = flag("", "folders of the finished source runs that --target starts from: a run for each with each "
                         "language", TEXT)
    model: str = flag("xlm-roberta-large", "backbone: a hub name or a local folder of a Hugging Face encoder, or of a "
                                           "causal LM (read through its label tokens: docs/decoders.md)",
                      Values(str, filled=True, why="a backbone's name or folder"))
    data_dir: str = flag("", "local data laid out as DIR/<code>/{train,dev,test}.tsv (empty: SIB-200 from the hub)",
                         TEXT)
    groups_file: str = flag("", "language groups, in the form of groups.json (empty: groups.json)", TEXT)
    steps: int = flag(24000, "training steps (with --target: 6000)", COUNT)
    batch_size: int = flag(32, "rows of training text per step and run", COUNT)
    lr_prompt: float = flag(5e-3, "learning rate of the pseudo-prompts, and of the SPT part unless --lr-spt", RATE)
    lr_spt: float = flag(-1.0, "learning rate of the SPT part (below 0: --lr-prompt, as the paper; the authors' "
                               "code: 5e-5 in dual)", Values(float, why="below 0: the prompt learning rate"))
    lr: float = flag(5e-5, "learning rate of the prompt encoder's MLP and the head", RATE)
    weight_decay: float = flag(0.1, "weight decay of the MLP and head weights, never biases or prompt vectors "
                                    "(authors' code: 0.01)", RATE)
    warmup: float = flag(0.1, "linear warm-up as a share of the steps, then cosine with hard restarts (with "
                              "--target: 0.05)", Values(float, 0, 1, high_open=True, why="a share of the steps"))
    cycles: int = flag(2, "cosine cycles, each ending in a hard restart", COUNT)
    patience: int = flag(20, "dev evaluations without a lower dev loss before a run stops; 0: never stop early "
                             "(--target: 30)", Values(int, 0, MAX_COUNT, why="0 turns early stopping off"))
    stop_after: float = flag(0.5, "share of the steps before which early stopping counts nothing (the authors' "
                                  "callback)", Values(float, 0, 1, why="a share of the steps"))
    max_length: int = flag(xpe.MAX_LENGTH, "tokens of text a row keeps; the prompt vectors come on top",
                           Values(int, 3, MAX_COUNT, why="<s>, a token of text and </s>: below, a tokenizer keeps the "
                                                         "whole text or none of it"))
    prompt_len: int = flag(20, "prompt vectors P", Values(int, *xpe.PROMPT_LEN_RANGE, why="no backbone has more "
                                                                                          "positions"))
    encoder_hidden: int = flag(256, "hidden size h of the prompt encoder's MLP d -> h -> h -> d",
                               Values(int, 1, MAX_HIDDEN, why="its h x h layer holds h² weights"))
    encoder_dropout: float = flag(0.1, "dropout inside the prompt encoder's MLP (with --target: 0)", PROBABILITY)
    head_dropout: float = flag(0.1, "dropout before each of the classification head's two layers", PROBABILITY)
    grad_clip: float = flag(1.0, "gradient-norm clipping, per run (0: off)", Values(float, 0, why="0: no clipping"))
    eval_every: int = flag(0, "steps between dev evaluations (0: one epoch of the pooled training rows)",
                           Values(int, 0, MAX_COUNT, why="0 means one epoch"))
    eval_batch_size: int = flag(128, "rows per backbone pass in dev evaluation, shared by the runs of a pack", COUNT)
    precision: str = flag("auto", "auto, fp32 or bf16 of the backbone's passes (auto: bf16 on CUDA, fp32 on a CPU; "
                                  + xpe.CPU_BF16 + "); the run records the one used",
                          Values(str, choices=xpe.PRECISIONS))
    template: str = flag("", "a decoder's text template, with {text} where the text goes and optionally {labels} (the "
                             "label words); it ends where the answer, a label word, starts (empty: a topic question, "
                             "xpe.DEFAULT_TEMPLATE)",
                       Values(str, grammar=xpe.check_template,
                              why="empty, or holding {text} once, where the text goes"),
                       later="")
    chat_template: bool = flag(False, "a decoder's template goes through its tokenizer's chat template as the user's "
                                      "turn (instruction-tuned models)", Values(bool), later=False)

    def __post_init__(self):
        if self.lr_spt < 0:
            self.lr_spt = self.lr_prompt


TARGET_DEFAULTS = dict(steps=6000, warmup=0.05, patience=30, encoder_dropout=0.0)
# Settings a run keeps to itself in a pack (its parameters, optimiser, schedule, early stopping): each takes a list,
# and a call trains every combination (a sweep). The others shape the batch or the sequence, which a pack shares.
SWEEPABLE = ("lr_prompt", "lr_spt", "lr", "weight_decay", "warmup", "cycles", "grad_clip", "encoder_hidden",
             "encoder_dropout", "head_dropout", "patience", "stop_after")
MAX_RUNS = 64  # runs a call trains unless --max-runs allows more
MOST_RUNS = 100_000  # the most --max-runs allows
# The call's own number flags (not settings of a run), each with the values it takes
CALL_VALUES = {"max_runs": Values(int, 1, MOST_RUNS, why="each run is a folder and a model of its own: split a larger "
                                                         "call"),
               "pack_size": Values(int, 1, MAX_COUNT, why="1: every run alone")}
METHOD_FRAC = dict(spt=0.0, xpe=1.0, dual=0.7)
NOT_IDENTITY = {"eval_batch_size"}  # settings a resumed run may change without becoming another run
# Settings that came after runs were recorded without them, with the value those runs had: a run records them only
# where they differ (an encoder's config.json stays as it was), and a run without them has that value.
LATER_SETTINGS = {f.name: f.metadata["later"] for f in fields(TrainConfig) if f.metadata["later"] is not None}
DECODER_SETTINGS = ("template", "chat_template")  # what only a decoder backbone takes


class Parser(argparse.ArgumentParser):
    """argparse's parser for every command of xpe: its own refusals (an unknown flag, a missing value, a bad type or
    choice) read as a UsageError's, one line naming the flag and exit 2, without the usage above it."""

    def error(self, message):
        flag = re.fullmatch(r"argument (--[\w-]+): expected one argument", message)
        if flag:  # argparse takes a value such as -1,5e-3 for a flag
            message += f" (a value that begins with '-' is written {flag[1]}=-1,5e-3)"
        self.exit(2, f"{self.prog}: error: {message}\n")


def path_text(text):
    """argparse's type for a flag that names a file or folder: an empty name is refused, for it would read as the
    flag's default or as the working folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is an empty name: name a file or folder, or leave the flag out")
    return text


def build_parser(description=None):
    p = Parser(prog="train.py", description=description)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        shown = {"data_dir": "empty", "groups_file": "empty", "lr_spt": "-1", "eval_every": "0",
                 "template": "empty"}.get(f.name, default)
        declared = f.metadata["values"].kind
        kind = (str if f.name in ("method", "seed") + SWEEPABLE  # lists: parsed below
                else one_value(f.metadata["values"]) if declared in (int, float) else declared)
        if declared is bool:  # a switch; None marks "not given" as for the others
            p.add_argument("--" + f.name.replace("_", "-"), action="store_true", default=None,
                           help=f"{f.metadata['help']} (default off)")
            continue
        # None marks "not given", so that method- and target-dependent defaults can fill it.
        kind = path_text if f.name in ("model", "init", "data_dir", "groups_file") else kind  # leave out: default
        ranged = f.metadata["values"].kind in (int, float)  # a text's choices: its help names them
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None, nargs="+" if f.name == "init" else None,
                       help=f"{f.metadata['help']} (default {shown}"
                            + (f"; {f.metadata['values'].words()})" if ranged else ")"))
    p.add_argument("--out", type=path_text, default=None,
                   help="the run's folder, or with several runs the folder that holds them (default runs/, each run "
                        "named like dual0.7-joshi5-s42)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cuda when there is one; "
                                                  "see --precision for what auto picks there)")
    p.add_argument("--pack-seeds", action="store_true",
                   help="pack the seeds of a call into the same steps too, each seed its own batch, instead of one "
                        "seed's pack after another (methods are always packed; bench.py measures both)")
    p.add_argument("--pack-size", type=value_type(CALL_VALUES["pack_size"]), default=None,
                   help="most runs a pack trains in one backbone pass; the call goes pack after pack (default "
                        + ", ".join(f"{n} on {d}" for d, n in DEFAULT_PACK_SIZE.items()) + ")")
    p.add_argument("--max-runs", type=value_type(CALL_VALUES["max_runs"]), default=MAX_RUNS,
                   help=f"most runs a call may plan (methods x seeds x swept values, at most {MOST_RUNS:,}); more are "
                        f"refused (default {MAX_RUNS})")
    p.add_argument("--resume", action="store_true", help="continue the call's runs from their last evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace the runs in the run folders (only train.py's "
                                                            "own files there are removed)")
    p.add_argument("--tensorboard", type=path_text, metavar="DIR", default=None,
                   help="also write log.csv's numbers as TensorBoard events, each run in DIR/<its folder's name>; "
                        "needs tensorboard: pip install -r requirements-plot.txt (default none)")
    return p


def value_type(values):
    """argparse's type for a flag's value, read as its Values read a text (every command's flags that take one)."""
    def parse(text):
        return values.read(text)
    parse.__name__ = values.kind.__name__  # argparse names the type in its message
    return parse


def one_value(values):
    """argparse's type for a setting of train.py that takes one value: a list is refused, saying why."""
    read = value_type(values)

    def parse(text):
        if "," in text:
            raise argparse.ArgumentTypeError(f"takes one value, not the list {text}: it shapes the batch or the "
                                             f"sequence, which the runs of a pack share (lists: "
                                             f"{', '.join('--' + k.replace('_', '-') for k in SWEEPABLE)})")
        return read(text)
    parse.__name__ = read.__name__
    return parse


def parse_values(name, text):
    """[values] of a swept setting from its flag: a number or a list of them (5e-3,5e-5)."""
    kind, flag_name = values_of(name).kind, "--" + name.replace("_", "-")
    try:
        values = [values_of(name).read(item) for item in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag_name} {text}: use a number or a list of numbers such as 5e-3,5e-5"
                         f"{' (whole numbers)' if kind is int else ''}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"{flag_name} {text} names a value twice")
    for value in values:
        check_setting(name, value)
    return values


def parse_args(argv=None, description=None):
    return build_parser(description).parse_args(argv)


def parse_methods(text, xpe_frac, prompt_len=None):
    """[(method, xpe_frac)] from --method: one method (with --xpe-frac) or a list in xpe.method_name's grammar. Two
    fractions that split the prompt alike (dual:0.7 and dual:0.71 both give 6 SPT + 14 XPE of 20) are one run: refused."""
    items = [item.strip() for item in text.split(",")]
    if len(items) == 1 and items[0] in xpe.METHODS:  # one method: its fraction from --xpe-frac or its default
        return [(items[0], METHOD_FRAC[items[0]] if xpe_frac is None else xpe_frac)]
    if xpe_frac is not None:
        raise UsageError("--xpe-frac goes with a single --method; in a list, write each fraction: dual:0.3,dual:0.7")
    runs = []
    for item in items:
        try:
            runs.append(xpe.parse_method(item))
        except UsageError as e:
            raise UsageError(f"--method {text}: {e}") from None
    if len(set(runs)) != len(runs):
        raise UsageError(f"--method {text} names a run twice")
    splits = {}
    for method, frac in runs:
        split = xpe.split_prompt(method, frac, TrainConfig.prompt_len if prompt_len is None else prompt_len)
        if split in splits:
            raise UsageError(f"--method {text}: {xpe.method_name(*splits[split])} and {xpe.method_name(method, frac)} "
                             f"both split the prompt into {split[0]} SPT + {split[1]} XPE vectors, so they would train "
                             f"one run twice: give one of them")
        splits[split] = (method, frac)
    return runs


def parse_seeds(text):
    """[seeds] from --seed: a number, a list 1,2,5, a range 1-10, or a mix."""
    seeds = []
    for item in text.split(","):
        if not re.fullmatch(r"[0-9]+(-[0-9]+)?", item.strip()):  # ASCII digits: str.isdigit takes "²"
            raise UsageError(f"--seed {text}: use a number, a list 1,2,5 or a range 1-10; a seed must be "
                             f"{values_of('seed').words()}")
        first, dash, last = item.strip().partition("-")
        low, high = int(first), int(last) if dash else int(first)
        for seed in (low, high):
            if not values_of("seed").holds(seed):
                raise UsageError(f"--seed {text}: a seed must be {values_of('seed').words()}, got {seed}")
        if high < low:
            raise UsageError(f"--seed {text}: the range {item.strip()} runs backwards; write {high}-{low}")
        if len(seeds) + high - low + 1 > MAX_SEEDS:
            raise UsageError(f"--seed {text} names more than {MAX_SEEDS:,} seeds: split it into several calls")
        seeds += range(low, high + 1)
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed {text} names a seed twice")
    return seeds


def resolve_configs(args):
    """One TrainConfig per run of the call (methods × seeds, or source runs × target languages), every setting
    checked; nothing is written."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    for name, value in given.items():  # each value a flag gave, before anything reads it (lists: parse_values)
        if name not in ("method", "seed", "init") + SWEEPABLE:
            check_setting(name, value)
    if "model" in given:  # a local folder by its absolute path, so that the run is scored from any working folder
        given["model"] = model_key(given["model"])
    if "source" in given:  # one spelling a language set, so that equal specs are one source in the tables
        given["source"] = data.canonical_spec(given["source"])
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the runs in --out and --overwrite replaces them: give one of them")
    if given.get("target") and not given.get("init"):
        raise UsageError("--target needs --init RUN_DIR [RUN_DIR ...]: the source runs to start from")
    if given.get("init") and not given.get("target"):
        raise UsageError("--init needs --target LANGS: the languages of the full-supervision phase")
    for key, values in CALL_VALUES.items():  # max_runs: the plan holds a TrainConfig a run, so more would fill the
        value = getattr(args, key)           # memory before training
        if value is not None and not values.holds(value):
            raise UsageError(f"--{key.replace('_', '-')} must be {values.words()}, got {value:,}")
    sweeps = {name: parse_values(name, given.pop(name)) for name in SWEEPABLE if name in given}
    if given.get("init"):
        listed = [name for name, values in sweeps.items() if len(values) > 1]
        if listed:
            raise UsageError(f"--{listed[0].replace('_', '-')} takes one value with --target: sweep the source runs, "
                             f"then give each its own target call")
        cfgs = target_configs({**given, **{name: values[0] for name, values in sweeps.items()}})
    else:
        runs = parse_methods(given.pop("method", TrainConfig.method), given.pop("xpe_frac", None),
                             given.get("prompt_len"))
        seeds = parse_seeds(given.pop("seed", str(TrainConfig.seed)))
        combinations = math.prod(len(values) for values in sweeps.values())  # counted before any is built
        if len(seeds) * combinations * len(runs) > args.max_runs:
            raise UsageError(f"this call plans {len(seeds) * combinations * len(runs):,} runs ({len(runs)} methods x "
                             f"{combinations:,} combinations of the listed settings x {len(seeds)} seeds), more than "
                             f"--max-runs {args.max_runs}: give --max-runs to confirm, or split it")
        combos = [dict(zip(sweeps, values)) for values in itertools.product(*sweeps.values())]
        for method, frac in runs:
            check_read(method, frac, given.get("prompt_len", TrainConfig.prompt_len), sweeps, combos)
        cfgs = [TrainConfig(**given, **combo, method=method, xpe_frac=frac, seed=seed)
                for seed in seeds for combo in combos for method, frac in runs]
    for c in {json.dumps(asdict(c), sort_keys=True): c for c in cfgs}.values():  # each distinct setting once
        check_ranges(c)
        xpe.split_prompt(c.method, c.xpe_frac, c.prompt_len)  # the method's fraction and its prompt's two parts
    return cfgs


def unread_settings(method, xpe_frac, prompt_len, decoder=False):
    """The swept settings that a run of this method never reads: lr_spt without an SPT part; the prompt encoder's
    without a prompt encoder, and lr_prompt too (spt's prompt learns at lr_spt, which only follows lr_prompt). On a
    decoder the head is the frozen LM head's label rows (xpe.LabelHead): head_dropout is never read, and without a
    prompt encoder neither are lr and weight_decay (the MLP's and the head's)."""
    n_spt, n_xpe = xpe.split_prompt(method, xpe_frac, prompt_len)
    return (({"lr_spt"} if not n_spt else set())
            | ({"lr_prompt", "encoder_hidden", "encoder_dropout"} if not n_xpe else set())
            | ({"head_dropout"} | ({"lr", "weight_decay"} if not n_xpe else set()) if decoder else set()))


def check_read(method, xpe_frac, prompt_len, sweeps, combos):
    """Refuse a sweep that would train one run of this method several times: over a setting the method never reads,
    or over lr_spt values that come to the same (below 0: lr_prompt's)."""
    unread, name = unread_settings(method, xpe_frac, prompt_len), xpe.method_name(method, xpe_frac)
    seen = {}
    for combo in combos:
        lr_prompt, lr_spt = combo.get("lr_prompt", TrainConfig.lr_prompt), combo.get("lr_spt", -1.0)
        effective = {**combo, "lr_spt": lr_prompt if lr_spt < 0 else lr_spt}  # as TrainConfig resolves it
        key = tuple(sorted((k, v) for k, v in effective.items() if k not in unread))
        if key not in seen:
            seen[key] = combo
            continue
        other, text = seen[key], lambda values: ",".join(map(xpe.value_text, values))
        differ = [k for k in combo if combo[k] != other[k]]
        if any(k in unread for k in differ):
            k = next(k for k in differ if k in unread)
            why = {"lr_spt": "it has no SPT part", "lr_prompt": "its prompt learns at --lr-spt alone"
                   if "lr_spt" in sweeps else "it has no pseudo-prompts"}.get(k, "it has no prompt encoder")
            raise UsageError(f"--{k.replace('_', '-')} {text(sweeps[k])}: {name} never reads {k} ({why}), so its "
                             f"values would train the same {name} run again: train {name} in a call without that list")
        raise UsageError(f"--lr-spt {text(sweeps['lr_spt'])}: a value below 0 stands for the prompt learning rate, "
                         f"{xpe.value_text(effective['lr_spt'])}, so {xpe.value_text(other['lr_spt'])} and "
                         f"{xpe.value_text(combo['lr_spt'])} are one run: give each learning rate once")


def unread_notes(args, cfgs):
    """A line for each setting given one value that some of the call's methods never read: the runs record it, and
    train as they would without it (a list of them is refused, check_read)."""
    notes = {}
    follows = args.lr_spt is None or all(v < 0 for v in parse_values("lr_spt", args.lr_spt))  # spt reads lr_prompt
    for c in cfgs:
        for key in sorted(unread_settings(c.method, c.xpe_frac, c.prompt_len) - ({"lr_prompt"} if follows else set())):
            if getattr(args, key, None) is not None:
                name = xpe.method_name(c.method, c.xpe_frac)
                notes[name, key] = (f"train.py: note: {name} never reads --{key.replace('_', '-')}: its runs record "
                                    f"{xpe.value_text(getattr(c, key))} and train as they would without it")
    return list(notes.values())


def model_key(model):
    """A backbone as a run records it: a local folder by its absolute path, a hub name as it is."""
    return str(Path(model).resolve()) if Path(model).is_dir() else model


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
        mine["model"] = model_key(mine.get("model", init_config["model"]))
        if cfgs and mine["model"] != cfgs[0].model:
            raise UsageError(f"--init {init} was trained on {mine['model']}, {inits[0]} on {cfgs[0].model}: train "
                             f"their targets in separate calls")
        if mine.setdefault("method", init_config["method"]) == init_config["method"]:
            mine.setdefault("xpe_frac", init_config["xpe_frac"])
        for key in ("encoder_hidden", "source", "prompt_len"):
            mine.setdefault(key, init_config[key])
        for key in DECODER_SETTINGS:  # the text as the source run's prompt learned to read it
            mine.setdefault(key, settings_of(init_config).get(key, LATER_SETTINGS[key]))
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


def check_setting(name, value):
    """A setting's value against the Values TrainConfig declares for it (a text's grammar says what is wrong)."""
    values = values_of(name)
    if values.grammar and isinstance(value, str) and value:
        values.grammar(value)
    if not values.holds(value):
        raise UsageError(f"--{name.replace('_', '-')} must be {values.words()}, got "
                         f"{repr(value) if isinstance(value, str) else xpe.value_text(value)[:60]}")


def check_ranges(cfg):
    """Every setting of a run against its declared Values (shared by a call's runs)."""
    for f in fields(TrainConfig):
        check_setting(f.name, getattr(cfg, f.name))


# config.json's keys that nothing reads back: what a run records for the people reading it
RECORD_ONLY = ("target_languages", "trainable_parameters", "total_parameters", "trainable_share_percent", "threads",
               "pack", "imported_from")
# What a run imported by tools.peft_adapters records that train.py never would: it trained no step here, and a PEFT
# prompt without a prompt encoder has no encoder size.
IMPORTED = {"steps": 0, "encoder_hidden": 0}


STEP = Values(int, 0, MAX_COUNT)  # a step a run reached (config.json's ended, log.csv's rows)


def recorded_holds(name, value, imported=False):
    """A setting a run recorded is within its Values, or is what an imported run records (imported: its "ended"
    says so)."""
    return values_of(name).holds(value) or (imported and name in IMPORTED and type(value) is int
                                            and value == IMPORTED[name])


# What a run records beside its settings, each with what it must be: the fingerprints of the code and the backbone's
# weights, the source languages, and a target run's source run's settings (read as these are).
RECORDED = {
    "code": ("a fingerprint (text)", lambda v: isinstance(v, str)),
    "backbone_weights": ("a fingerprint (text)", lambda v: isinstance(v, str)),
    "source_languages": ("a list of distinct language codes", lambda v: isinstance(v, list) and all(
        isinstance(x, str) for x in v) and len(set(v)) == len(v)),
    "init_settings": ("an object: its source run's settings", lambda v: isinstance(v, dict)),
}


def recorded_problem(settings, imported=False):
    """(key, value, what it must be) of the first of a run's recorded settings (TrainConfig's against their Values,
    RECORDED's, and a source run's init_settings as these) that is wrong, else None."""
    for f in fields(TrainConfig):
        if f.name in settings and not recorded_holds(f.name, settings[f.name], imported):
            return f.name, settings[f.name], f.metadata["values"].words()
    for key, (words, holds) in RECORDED.items():
        if key in settings and not holds(settings[key]):
            return key, settings[key], words
    inner = recorded_problem(settings["init_settings"]) if "init_settings" in settings else None
    return ("init_settings." + inner[0], *inner[1:]) if inner else None


def read_run_config(run_dir, what):
    """A run's config.json, every key that evaluate.py and --init read checked: a setting (at the top level or under
    "settings") against its Values, the rest here (RECORD_ONLY are not read); what: how the message names the run,
    e.g. "--init runs/a"."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=xpe.unique_keys)
    except (OSError, ValueError) as e:
        raise UsageError(f"{what}: config.json cannot be read as JSON ({getattr(e, 'strerror', None) or e}): not "
                         f"written by train.py") from None
    if not isinstance(config, dict):
        raise UsageError(f"{what}: config.json holds no object: not written by train.py")
    missing = [k for k in ("model", "labels", "max_length", "method", "xpe_frac", "prompt_len", "n_spt", "n_xpe",
                           "source", "seed") if k not in config]
    if missing:
        raise UsageError(f"{what}: config.json lacks {', '.join(missing)}: not written by train.py")

    def bad(key, value, wanted):
        return UsageError(f"{what}: config.json's {key} is {json.dumps(value)[:60]}: it must be {wanted}")

    labels, settings, ended = config["labels"], config.get("settings", {}), config.get("ended")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x and x == x.strip() for x in labels)
            and len(set(labels)) == len(labels)):  # data.py strips the labels it reads, so train.py writes none other
        raise bad("labels", labels, "a list of distinct label names, none with spaces around it")
    rules = [("ended", ended is None or isinstance(ended, dict) and ended.get("why") in ENDINGS
              and STEP.holds(ended.get("step")), f'null or {{"why": one of {", ".join(ENDINGS)}, "step": N}}'),
             ("num_labels", config.get("num_labels", len(labels)) == len(labels), "the number of labels"),
             ("settings", isinstance(settings, dict), "an object of the run's settings")]
    for key, valid, wanted in rules:
        if not valid:
            raise bad(key, config.get(key), wanted)
    imported = ended is not None and ended["why"] == "imported"
    for where, prefix in ((config, ""), (settings, "settings.")):  # the settings a run keeps at the top and below
        problem = recorded_problem(where, imported)
        if problem:
            raise bad(prefix + problem[0], *problem[1:])
    try:
        split = xpe.split_prompt(config["method"], config["xpe_frac"], config["prompt_len"])
        # the source as train.py records it now (data.canonical_spec), whichever spelling an older run kept
        config["source"] = data.canonical_spec(config["source"])
    except UsageError as e:
        raise UsageError(f"{what}: config.json: {e}") from None
    if [config["n_spt"], config["n_xpe"]] != list(split):
        raise bad("n_spt, n_xpe", [config["n_spt"], config["n_xpe"]], f"{list(split)} for its method and prompt_len")
    return config


def read_init(init_dir, given):
    config_path, weights = init_dir / "config.json", init_dir / "best.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise UsageError(f"--init {init_dir} is not a finished source run (config.json and best.safetensors needed)")
    init_config = read_run_config(init_dir, f"--init {init_dir}")
    ended = init_config.get("ended")
    if not isinstance(ended, dict):
        raise UsageError(f"--init {init_dir} is not a finished source run (its config.json says it has not ended): "
                         f"finish it first (train.py ... --resume)")
    if ended.get("why") == Ended.NOT_FINITE.value:
        raise UsageError(f"--init {init_dir} stopped at step {ended.get('step')} on a loss that was not finite: "
                         f"train the source run again with lower learning rates")
    for key in ("model", "prompt_len"):  # taken from there unless given
        mine, theirs = given.get(key), init_config.get(key)
        if key in given and (model_key(theirs) if key == "model" and isinstance(theirs, str) else theirs) != mine:
            raise UsageError(f"--init {init_dir} was trained with {key} {theirs!r}, this run has {mine!r}: leave "
                             f"--{key.replace('_', '-')} out to take it from there, or give another --init")
    return init_config


# ---- the plan: run names, folders and packs --------------------------------------------------
# A call's runs go into packs: a source call's one seed's methods (all its runs with --pack-seeds), a
# target call's every (source run, language); runs whose training splits differ in length stay apart
# (their evaluations fall on other steps), and each pack is cut into packs of at most --pack-size runs.
# Started several times by torchrun or srun, each process trains every world-th pack, from its rank on,
# on its own device: every run folder is written by exactly one process, and no process waits for
# another, so no process group is needed.

DEFAULT_PACK_SIZE = {"cuda": 8, "cpu": 4}  # cuda: one pass carries the pack, 8 x 32 rows; cpu: a seed's methods


def run_name(cfg, swept=()):
    """A run's folder name: its method as xpe.method_name writes it, without the colon, then the values of the
    call's swept settings (swept_settings) and the source and seed: dual0.7-joshi5-s42, xpe-lr_prompt5e-05-joshi5-s1."""
    if cfg.target:
        return f"{Path(cfg.init).name}-to-{cfg.target}"
    values = "".join(f"-{name}{xpe.value_text(getattr(cfg, name))}" for name in swept)
    return f"{xpe.method_name(cfg.method, cfg.xpe_frac).replace(':', '')}{values}-{cfg.source.replace(',', '+')}-s{cfg.seed}"


def swept_settings(cfgs):
    """The settings whose values differ among a call's runs; --lr-spt only where it is not --lr-prompt's."""
    return [name for name in SWEEPABLE if len({getattr(c, name) for c in cfgs}) > 1 and
            (name != "lr_spt" or any(c.lr_spt != c.lr_prompt for c in cfgs))]


def run_names(cfgs):
    swept = swept_settings(cfgs)
    return [run_name(cfg, swept) for cfg in cfgs]


def run_dirs(cfgs, out):
    """One run: --out is its folder. Several: --out (default runs/) holds them, each under its default name."""
    if len(cfgs) == 1:
        return [Path(out) if out else Path("runs") / run_name(cfgs[0])]
    names = run_names(cfgs)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice and cfgs[0].target:
        raise UsageError(f"two runs of this call would share the folder {twice[0]}: give each --init a name "
                         f"of its own (the target runs are named <init folder>-to-<language>)")
    if twice:  # resolve_configs refuses the lists that make one run twice; a folder name must never hide one
        raise RuntimeError(f"two runs of this call are named {twice[0]}")
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


# ---- the run folder ----------------------------------------------------------------------------------
# A folder that train.py makes gets MARK first. train.py only ever trains into an empty folder or one
# of its own, and --overwrite removes only the files it writes (OUTPUTS), never the folder or anything
# else in it. While a call trains into a folder it holds an flock on MARK, which the operating system
# drops when the process ends, however it ends.
#
# A pack saves at an evaluation in two phases: every run writes STAGED (its next state.pt) first, then
# each renames it to state.pt and writes the files that follow from it. A kill in the first phase leaves
# the previous evaluation's state.pt in every run (settle deletes the staged ones); a kill in the second
# leaves every run's state of the new one, staged or renamed (settle finishes the renames). Either way
# the runs of a pack resume from one and the same step. evaluate.py reads config.json (every setting,
# the labels, the languages, and "ended" once the run ends), log.csv and prompt.safetensors.

MARK = "xpe-train.lock"  # "made by train.py"; locked while a call trains into the folder
STAGED = "state.next.pt"
# everything else train.py writes into a run folder, in the order --overwrite removes it: the state first,
# so that a kill halfway leaves no state to resume from, and config.json (which says "a run is here") last
OUTPUTS = (STAGED, "state.pt", "best.safetensors", "prompt.safetensors", "log.csv", "config.json")
TMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in OUTPUTS) + r")\.[^/]*\.tmp")  # xpe.atomic_write's
PARTS = ("spt", "pseudo", "mlp", "head")  # the trainable parts: the SPT part, the pseudo-prompts, the MLP, the head
# log.csv's columns: the evaluation's numbers, then what explains them (as the Hugging Face Trainer's grad_norm and
# nanoGPT's share of the run): the share of the steps done, the gradient norm of the evaluation's step before
# clipping (all parts, then each), each part's parameter norm and the static prompt's mean row norm; a part the
# method lacks is empty. Logs from before these columns lack them: readers take a missing column as empty.
LOG_FIELDS = ["step", "train_loss", "lr_prompt", "lr_spt", "lr", "dev_loss", "dev_accuracy", "seconds",
              "budget_used", "grad_norm", *(f"grad_norm_{part}" for part in PARTS),
              *(f"param_norm_{part}" for part in PARTS), "prompt_row_norm"]


class Ended(str, Enum):
    """How a run ended; the value is what config.json's "ended" says."""
    STEPS = "steps"
    EARLY = "early"
    NOT_FINITE = "not finite"


ENDINGS = (*(e.value for e in Ended), "imported")  # config.json's ended "why"; imported: tools.peft_adapters made it


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
    """Refuse a folder holding anything train.py did not write, or one it cannot write; `what` says what the call
    wanted to do there."""
    xpe.check_writable(out, "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    foreign = foreign_files(out)
    runs = [name for name in foreign if (out / name).is_dir() and is_own(out / name)]
    if runs and len(runs) == len(foreign):  # the folder of an earlier call of several runs
        raise UsageError(f"{out} holds the run folders of a call of several runs ({', '.join(runs[:3])}"
                         f"{', ...' if len(runs) > 3 else ''}), and with one run --out is that run's own folder: "
                         f"give --out {out / runs[0]} (a run's folder), or choose another --out")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(f"{out} holds files that train.py did not write ({shown}), so it will not {what} there: "
                          f"choose another --out")
    theirs = [name for name in OUTPUTS if (out / name).exists()] if not is_own(out) else []
    if theirs:  # a file of train.py's names in a folder train.py did not make is the user's
        raise UsageError(f"{out} holds {' and '.join('a ' + name for name in theirs)} that train.py did not write, "
                         f"so it will not {what} there: choose another --out")


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
            fd = os.open(out / MARK, os.O_RDWR | os.O_CREAT, 0o666)  # never replaced: the lock is on this file
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"{out} is in use: another train.py call is training into it; wait for it "
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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises several kinds on a torn or foreign file; the user needs one line
        raise UsageError(f"--resume: {path} cannot be read ({type(e).__name__}): not a state train.py wrote; start "
                         f"the run again with --overwrite") from None


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
        config = read_run_config(out, f"--resume: {out}") if (out / "config.json").is_file() else {}
        return config.get("ended") is not None  # ended before its first evaluation
    finish = all(ready(out) for out in outs)
    for out in staged:
        if finish:
            os.replace(out / STAGED, out / "state.pt")
        else:
            (out / STAGED).unlink()


def check_holder(out, runs):
    """A call of several runs puts each into a folder inside out: refuse a run's own folder there (the reverse,
    one run into a folder of runs, is check_own's)."""
    if runs > 1 and out.is_dir() and is_own(out):
        raise UsageError(f"{out} is the folder of one run, and a call of {runs} runs puts each into a folder of its "
                         f"own inside --out: choose another --out")


def pack_change(out, theirs, mine, call_settings):
    """What to resume with when out was trained in the pack theirs and this call packs it in mine: the flags whose
    values differ between the two packs' runs, as the first call gave them."""
    old = [settings_of(read_run_config(folder, f"--resume: {folder}")) for name in theirs
           for folder in [out if name == out.name else out.parent / name] if (folder / "config.json").is_file()]
    new = [call_settings[name] for name in mine]

    def values(runs, key):
        return sorted({xpe.method_name(r["method"], r["xpe_frac"]) if key == "method" else r.get(key) for r in runs},
                      key=lambda v: (str(type(v)), v))
    changed, seeds = [], [values(old, "seed"), values(new, "seed")]
    if (len(seeds[0]) > 1) != (len(seeds[1]) > 1):  # seeds packed together in one call, apart in the other
        together = len(seeds[0]) > 1
        changed.append(f"{'with' if together else 'without'} --pack-seeds, as the first call")
    for key in ("method", "seed", *SWEEPABLE):
        follows = key == "lr_spt" and all(r.get("lr_spt") == r.get("lr_prompt") for r in old + new)  # not given
        if values(old, key) != values(new, key) and not follows and not (key == "seed" and changed):
            flag_values = ",".join(map(xpe.value_text, values(old, key)))
            changed.append(f"with the first call's --{key.replace('_', '-')} {flag_values}")
    shown = lambda names: ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")  # noqa
    advice = " and ".join(changed) or "with the first call's --pack-size"  # the same runs, cut into other packs
    return (f"--resume: {out} was trained in a pack of {shown(theirs)}, this call packs it with {shown(mine)}: resume "
            f"{advice}")


def check_folders(outs, settings, packs, resume, overwrite, not_identity=(), probe_locks=True, call_outs=None,
                  call_settings=None):
    """Refuse to mix runs: a folder holding a run needs --resume (the same run, in the same pack) or --overwrite.

    Only an empty folder or one of train.py's own is ever trained into; one in use is refused. settings: each
    run's TrainConfig as a dict; packs: the names of the runs of each run's pack. call_outs: every folder of
    the call, where outs are one process's share (torchrun, srun), for what --resume finds; call_settings: every
    run's settings by name, for what a pack that changed differs in.
    """
    read = {Path(s["init"]).resolve(): "--init" for s in settings if s.get("init")}  # what the call reads
    read |= {Path(s["data_dir"]).resolve(): "--data-dir" for s in settings if s.get("data_dir")}
    for out, mine, pack in zip(outs, settings, packs):
        flag = next((f for folder, f in read.items() if folder == out.resolve() or folder in out.resolve().parents),
                    None)
        if flag:  # --overwrite would clear the source run a target run starts from; a run in the data, a language
            raise UsageError(f"{out} is {'in ' if out.resolve() not in read else ''}the {flag} folder of this call, "
                             f"which it reads: choose another --out")
        check_own(out, "continue a run" if resume else "replace anything" if overwrite else "train")
        if probe_locks and out.is_dir() and is_locked(out):
            raise UsageError(f"{out} is in use: another train.py call is training into it; wait for it or "
                             f"choose another --out")
        config_path = out / "config.json"
        if not config_path.is_file() or overwrite:  # empty, or what a call left before it wrote config.json
            continue
        if not resume:
            raise UsageError(f"{out} already holds a run: pass --resume to continue it or --overwrite to replace it")
        config = read_run_config(out, f"--resume: {out}")  # checked as every reader of a run checks it
        old = settings_of(config)
        diff = [k for k, v in mine.items() if k not in not_identity and
                (model_key(old[k]) if k == "model" and k in old else old.get(k, LATER_SETTINGS.get(k))) != v]
        if diff:
            theirs = ", ".join(f"{k} {old.get(k)!r}" for k in diff)
            raise UsageError(f"--resume: {out} holds a different run ({theirs}); "
                             f"resume with the same settings or choose another --out")
        if config.get("pack", pack) != pack:  # the runs of a pack share the random stream: another pack diverges
            raise UsageError(pack_change(out, config["pack"], pack, call_settings or dict(zip(
                [o.name for o in outs], settings))))
        states = [p for p in (out / STAGED, out / "state.pt") if p.is_file()]
        state = load(states[0]) if states else {"progress": None}
        if not isinstance(state, dict) or "progress" not in state:
            raise UsageError(f"--resume: {states[0]} was written by an older train.py; resume it with that "
                             f"version, or start again with --overwrite")
    outs = outs if call_outs is None else call_outs
    resumable = any((out / name).is_file() for out in outs for name in (STAGED, "state.pt"))
    if resume and not any(out.is_dir() for out in outs):
        where = outs[0] if len(outs) == 1 else outs[0].parent
        held = (f"holds none of this call's {len(outs)} run folders ({outs[0].name}, ...)" if where.is_dir()
                else "does not exist")
        raise UsageError(f"--resume: {where} {held}, so there is nothing to resume: leave --resume out to start the "
                         f"{'run' if len(outs) == 1 else 'runs'}")
    if resume and not any((out / "config.json").is_file() for out in outs):  # empty, or only a lock
        raise UsageError(f"--resume: {'no folder of this call holds' if len(outs) > 1 else f'{outs[0]} holds no'} "
                         f"run, so there is nothing to resume: leave --resume out to start "
                         f"{'them' if len(outs) > 1 else 'it'}")
    if resume and not resumable:
        raise UsageError(f"--resume: {'no run of this call has' if len(outs) > 1 else f'{outs[0]} has'} reached its "
                         f"first evaluation (state.pt), so there is nothing to resume: use --overwrite")


def write_log(path, rows):
    """log.csv: one row an evaluation."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def check_tensorboard(board_dir):
    """--tensorboard, before anything is read: DIR a folder this process can write, and tensorboard installed."""
    xpe.check_writable(board_dir, "--tensorboard")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard (or pip install -r "
                         "requirements-plot.txt)") from None


def check_board(board_dir, outs, resume, overwrite):
    """No run's subfolder of --tensorboard holds events from before, unless --resume continues them or --overwrite
    replaces them."""
    for out in outs:
        folder = Path(board_dir) / out.name
        xpe.check_writable(folder, "--tensorboard")
        if not (resume or overwrite) and folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
            raise UsageError(f"--tensorboard: {folder} already holds events: pass --resume to continue that run's "
                             f"curves or --overwrite to replace them, or choose another --tensorboard")


def open_board(board_dir, run):
    """The run's TensorBoard writer, in board_dir/<its folder's name>. Every event there from before is dropped
    (purged from step 0) and the run's log written again, so that the curves hold each step once and equal log.csv
    whatever a killed call, an --overwrite or a call without --tensorboard left."""
    from torch.utils.tensorboard import SummaryWriter
    folder = Path(board_dir) / run.out.name
    # TensorBoard reads a folder's event files in name order, and a name starts with the second its writer opened:
    # one opened in the same second as an earlier one (a resume right after a kill) may sort before it, and then the
    # earlier file's steps read as out of order and purge this one's. Open in a later second than any file there.
    seconds = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*")
               if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)
    board = SummaryWriter(str(folder), purge_step=0)
    for row in run.progress.log:
        write_scalars(board, row)
    return board


def write_scalars(board, row):
    """A log.csv row as TensorBoard scalars, each under its column's name at the row's step; flushed."""
    for key, value in row.items():
        if key != "step" and value is not None and value != "":
            board.add_scalar(key, float(value), int(row["step"]))
    board.flush()


def stage(out, state):
    """The first phase of a pack's save: the run's next state.pt, under another name."""
    xpe.atomic_write(out / STAGED, lambda tmp: torch.save(state, tmp))


def commit(out, progress, best, config):
    """The second phase: the staged state becomes state.pt, then the files that follow from it."""
    os.replace(out / STAGED, out / "state.pt")
    write_run_files(out, progress, best, config)


def write_run_files(out, progress, best, config, everything=False):
    """What follows from a run's state: log.csv, and the best model's files and config.json where they changed."""
    p = progress
    write_log(out / "log.csv", p.log)
    if everything or p.best_step == p.step:
        xpe.atomic_write(out / "best.safetensors", lambda tmp: save_file(best["model"], tmp))
        config["ended"] = ended_record(p)
        xpe.save_artifact(best["artifact"], out, config)  # prompt.safetensors, then config.json
    elif p.ended:
        write_config(out, config, p)


def ended_record(progress):
    """config.json's "ended": how and at which step the run ended; None while it goes on."""
    return dict(why=progress.ended.value, step=progress.ended_step) if progress.ended else None


def write_config(out, config, progress):
    config["ended"] = ended_record(progress)
    xpe.atomic_write_json(out / xpe.ARTIFACT_CONFIG, config)


def mark_ended(out, progress):
    """A run that ends between evaluations keeps its last state.pt, saying that it ended (and so stays out)."""
    path = out / "state.pt"
    if path.is_file():
        state = load(path)
        state["progress"].update(ended=progress.ended.value, ended_step=progress.ended_step, left_at=progress.left_at)
        xpe.atomic_write(path, lambda tmp: torch.save(state, tmp))


# ---- the optimiser and its schedule -------------------------------------------------------------------

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


def make_optimizer(model, cfg):
    """Adafactor at the rates the training sets (lr_scale), as the authors ran it."""
    from transformers.optimization import Adafactor  # here: that module imports peft where it is installed, and
    # the PEFT tools import this file for its seed grammar with no peft at all
    return Adafactor(param_groups(model, cfg), scale_parameter=False, relative_step=False, warmup_init=False)


def lr_scale(step, cfg):
    """The share of every group's rate at a step: linear warm-up, then cosine with hard restarts, as
    transformers' get_cosine_with_hard_restarts_schedule_with_warmup (the authors') computes it."""
    warmup = int(cfg.warmup * cfg.steps)
    if step < warmup:
        return float(step) / float(max(1, warmup))
    progress = float(step - warmup) / float(max(1, cfg.steps - warmup))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(cfg.cycles) * progress) % 1.0))))


def early_stopping_start(cfg):
    """The first step at which early stopping counts, int(0.5 * steps) as in the authors' callback."""
    return int(cfg.stop_after * cfg.steps)


def prompt_config(cfg, num_labels=len(data.LABELS)):
    """The model's part of the training settings: the fields of xpe.PromptConfig, by name."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(xpe.PromptConfig) if hasattr(cfg, f.name)}
    return xpe.PromptConfig(**shared, num_labels=num_labels)


# ---- one run ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """A run of the call: its settings, folder, trainable model, optimiser and progress."""
    cfg: TrainConfig
    out: Path
    model: xpe.PromptClassifier
    optimizer: torch.optim.Optimizer  # Adafactor (make_optimizer)
    base_lrs: list                   # each parameter group's rate, which lr_scale scales
    config: dict                     # its config.json
    progress: Progress
    best: dict = None                # the best model's trainable weights and artifact tensors, on the CPU
    loss_sum: torch.Tensor = None    # training loss since the last evaluation, summed on the device
    first_bad: torch.Tensor = None   # the first step with a non-finite loss, found without a sync
    parts: dict = None               # {part of PARTS: its trainable parameters} (parts_of)
    grad_norms: dict = None          # {log.csv column: norm} of the last step's gradients, on the device
    board: object = None             # its TensorBoard writer (--tensorboard), or None


def ending(cfg, p):
    """Whether a run goes on (None) or how it ended: the one place that decides it."""
    if p.ended:
        return p.ended
    if cfg.patience and p.bad_evals >= cfg.patience:
        return Ended.EARLY
    return Ended.STEPS if p.step >= cfg.steps else None


# ---- what made a run beyond its flags -----------------------------------------------------------------
# config.json's settings name everything that made the run's numbers, so that evaluate.py keeps apart what
# differs: the flags, the training code, the backbone's weights, and for a target run its source run's setting.

TRAINING_CODE = ("xpe.py", "data.py", "train.py")
MIB = 1 << 20


def code_fingerprint(root=Path(__file__).resolve().parent):
    """A digest of the training code's files: a change of docs or evaluation keeps it, one of model, data or
    training code changes it."""
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def weights_fingerprint(model):
    """Which weights a backbone name held: the hub revision of a cached hub model, else a digest of the weight files'
    names, sizes and first and last MiB (cheap, and a folder's name says nothing of what it holds)."""
    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # an old or missing huggingface_hub: no revision to name
            cached = None
        if not isinstance(cached, str):
            return "unknown"
        folder = Path(cached).parent
        if folder.parent.name == "snapshots":
            return f"revision {folder.name[:12]}"
    digest, found = hashlib.sha256(), False
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".bin", ".pt", ".pth") and path.is_file():
            size, found = path.stat().st_size, True
            with open(path, "rb") as f:
                head = f.read(MIB)
                f.seek(max(0, size - MIB))
                digest.update(f"{path.name}\0{size}\0".encode() + head + f.read(MIB))
    return digest.hexdigest()[:12] if found else "unknown"


def settings_of(config):
    """A run's settings from its config.json: those the artifact keeps at the top level and the rest under
    "settings" (train.py writes each once)."""
    return {**{f.name: config[f.name] for f in fields(TrainConfig) if f.name in config}, **config.get("settings", {})}


def init_setting(init_dir):
    """A target run's source run: its settings and the languages it was trained on."""
    config = json.loads((Path(init_dir) / "config.json").read_text())
    return {**settings_of(config), "source_languages": config.get("source_languages", [])}


def start_run(cfg, out, backbone, labels, sources, device, resume=False, pack=None, made_by=None, template=None):
    """Build a run as it would be built alone (seeded), then load its state when resuming; write config.json.

    pack: the names of the runs of its pack, which config.json records for --resume. made_by: the fingerprints
    of the training code and the backbone's weights ({"code": ..., "backbone_weights": ...}). template: a decoder's
    text template and label token ids (xpe.decoder_template), which config.json records beside the artifact.
    """
    torch.manual_seed(cfg.seed)
    model = xpe.build_classifier(backbone, prompt_config(cfg, len(labels)), template).to(device)
    if cfg.init:
        model.load_state_dict(load_file(str(Path(cfg.init) / "best.safetensors")), strict=False)
    trainable, total, percent = xpe.count_parameters(model)
    print(f"{out}: {xpe.describe_parameters(model)}")
    optimizer = make_optimizer(model, cfg)
    config = {  # the artifact's keys (xpe.save_artifact) first, then what evaluate.py and --init read
        "model": cfg.model, "labels": list(labels), "max_length": cfg.max_length,
        **({"readout": xpe.READOUT, **template} if template else {}),  # what scores a decoder's artifact
        **xpe.prompt_config_dict(prompt_config(cfg, len(labels))), "source": cfg.source, "target": cfg.target,
        "seed": cfg.seed, "source_languages": [] if cfg.target else sources,
        "target_languages": sources if cfg.target else [],
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share_percent": percent,
        "threads": torch.get_num_threads(),  # a pack's sums, in bf16 most, depend on how many threads split them
    }
    settings = {**recorded_settings(cfg), **(made_by or {}),
                **({"init_settings": init_setting(cfg.init)} if cfg.init else {})}
    config["settings"] = {k: v for k, v in settings.items() if k not in config}  # each once (settings_of)
    config.update(pack=list(pack or [run_name(cfg)]), ended=None)
    earlier = (json.loads((out / "config.json").read_text()).get("settings", {}).get("code")
               if resume and (out / "config.json").is_file() else None)
    if earlier and "code" in config["settings"] and not earlier.endswith(config["settings"]["code"]):
        config["settings"]["code"] = f"{earlier}+{config['settings']['code']}"  # resumed under other code
    zero = torch.zeros((), device=device)
    run = Run(cfg, out, model, optimizer, [g["lr"] for g in optimizer.param_groups], config, Progress(),
              loss_sum=zero.clone(), first_bad=zero.long() - 1, parts=parts_of(model))
    if not resume:  # the folder is empty or train.py's own (check_folders): what a killed call left goes
        out.mkdir(parents=True, exist_ok=True)
        clear(out)
    if resume and (out / "state.pt").is_file():
        state = load(out / "state.pt")
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        run.progress, run.best = Progress.restored(state["progress"]), state["best"]
        # a kill may have come between state.pt and the files that follow from it
        write_run_files(out, run.progress, run.best, config, everything=True)
    else:
        if resume and (out / "config.json").is_file():  # ended before its first evaluation (not finite)
            ended = json.loads((out / "config.json").read_text()).get("ended")
            if ended:
                run.progress = Progress(ended=Ended(ended["why"]), ended_step=ended["step"], left_at=ended["step"])
        write_config(out, config, run.progress)
    return run


def parts_of(model):
    """{part of PARTS: its trainable parameters}, the parts the model has (an SPT run: no pseudo-prompts, no MLP)."""
    parts = {}
    for name, p in itertools.chain(model.prompt.named_parameters("prompt"), model.head.named_parameters("head")):
        if p.requires_grad:
            part = ("spt" if name == "prompt.spt" else "pseudo" if name == "prompt.xpe.pseudo" else
                    "mlp" if name.startswith("prompt.xpe.mlp.") else "head")
            parts.setdefault(part, []).append(p)
    return parts


def norm_of(tensors):
    """The L2 norm of tensors taken together, as a tensor on their device (no sync)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach()) for t in tensors]))


def recorded_settings(cfg):
    """A run's settings as config.json records them: LATER_SETTINGS only where they differ from the value a run
    without them had (check_folders reads a missing one as that value)."""
    return {k: v for k, v in asdict(cfg).items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}


def update(run, loss, logged=True):
    """One optimiser step of a run whose gradients are in place: rate, clip, step, track the loss. logged: an
    evaluation follows this step, so its gradient norms before clipping stay for its log (the per-part norms are
    taken only then; clipping computes the whole one anyway)."""
    scale = lr_scale(run.progress.step, run.cfg)
    for group, base in zip(run.optimizer.param_groups, run.base_lrs):
        group["lr"] = base * scale
    if logged:
        grads = {part: [p.grad for p in params if p.grad is not None] for part, params in run.parts.items()}
        norms = {f"grad_norm_{part}": norm_of(g) for part, g in grads.items() if g}
    if run.cfg.grad_clip:
        params = [p for g in run.optimizer.param_groups for p in g["params"]]
        total = torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip)
    elif logged:
        total = torch.linalg.vector_norm(torch.stack(list(norms.values())))
    if logged:
        run.grad_norms = {"grad_norm": total, **norms}
    run.optimizer.step()
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
    scale = lr_scale(p.step, cfg)  # the rate of the next step, as logged since the first version
    since = p.step - (p.log[-1]["step"] if p.log else 0)
    p.seconds += seconds
    p.log.append(dict(step=p.step, train_loss=round(run.loss_sum.item() / max(since, 1), 6),
                      lr_prompt=cfg.lr_prompt * scale, lr_spt=cfg.lr_spt * scale, lr=cfg.lr * scale,
                      dev_loss=round(dev_loss, 6),
                      dev_accuracy=round(dev_acc, 6), seconds=round(p.seconds, 2), **norm_columns(run)))
    run.loss_sum.zero_()
    if run.board:  # before the save: a kill after it finds the events at least as far as state.pt
        write_scalars(run.board, p.log[-1])
    if dev_acc > p.best_accuracy:
        p.best_step, p.best_accuracy = p.step, dev_acc
        run.best = dict(model=trainable_state(run.model), artifact=xpe.artifact_tensors(run.model))
    if cfg.patience and p.step >= early_stopping_start(cfg):  # the authors' LossEarlyStoppingCallback
        if dev_loss < p.lowest_loss:
            p.lowest_loss, p.bad_evals = dev_loss, 0
        else:
            p.bad_evals += 1
    p.ended = ending(cfg, p)
    if p.ended:
        p.ended_step, p.left_at = p.step, pack_step


def norm_columns(run):
    """log.csv's columns after seconds (LOG_FIELDS), at an evaluation: None (empty) for a part the run lacks."""
    six = lambda x: None if x is None else float(f"{x:.6g}")  # noqa: E731  (six significant digits)
    grads = {k: v.item() for k, v in (run.grad_norms or {}).items()}
    params = {f"param_norm_{part}": norm_of(ps).item() for part, ps in run.parts.items()}
    rows = torch.linalg.vector_norm(run.model.static_prompt(), dim=-1).mean().item()  # dropout off: no random draw
    columns = dict(budget_used=round(run.progress.step / run.cfg.steps, 6), prompt_row_norm=six(rows))
    return {**columns, **{k: six(grads.get(k, params.get(k))) for k in LOG_FIELDS if k.startswith(("grad_", "param_"))}}


def end_not_finite(run, bad_step, pack_step):
    """The run leaves the pack; its last good state.pt stays, marked as ended, so that --resume skips it."""
    p = run.progress
    p.ended, p.ended_step, p.left_at = Ended.NOT_FINITE, bad_step, pack_step
    mark_ended(run.out, p)
    write_config(run.out, run.config, p)


def save_pack(runs, device):
    """The runs' saves at one evaluation, as one unit (see the run folder): every run stages its state, then
    each commits."""
    for run in runs:
        p = run.progress
        p.rng_cpu = torch.get_rng_state()
        p.rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        stage(run.out, dict(progress=p.saved(), model=trainable_state(run.model), best=run.best,
                            optimizer=run.optimizer.state_dict()))
    for run in runs:
        commit(run.out, run.progress, run.best, run.config)


def trainable_state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


# ---- the loop -----------------------------------------------------------------------------------------

def fit(runs, splits, pad_id, device, on_step=None):
    """Train a pack until each run has done its steps or stopped: batch, forward, backward, step, and now and
    then evaluate and save. splits: {data_key(cfg): (train ids, train labels, dev ids, dev labels)}, the rows
    each run trains on (of one length within a pack, packs_of). on_step(step): bench.py's clock."""
    cfg = runs[0].cfg  # steps, batch size and evaluation are the same for every run of a call
    live = [r for r in runs if not r.progress.ended]
    if not live:
        return
    lengths = {key: [len(x) for x in split[0]] for key, split in splits.items()}
    eval_every = cfg.eval_every or math.ceil(len(splits[data_key(live[0].cfg)][0]) / cfg.batch_size)  # an epoch
    step = min(r.progress.step for r in live)  # the same for every run of a pack (rejoin)
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
        for key, seed in dict.fromkeys((data_key(r.cfg), r.cfg.seed) for r in live):  # a run's rows and seed
            if (key, seed) not in plans:
                plans[key, seed] = data.batch_plan(lengths[key], cfg.batch_size, seed, step)
            indices, (ids, labels) = next(plans[key, seed]), splits[key][:2]
            batches[key, seed] = xpe.to_device([*xpe.pad([ids[i] for i in indices], pad_id), labels[indices]], device)
        mine = [batches[data_key(r.cfg), r.cfg.seed] for r in live]
        losses = backward_pack([r.model for r in live], [b[:2] for b in mine], [b[2] for b in mine],
                               device.type == "cpu", precision)
        logged = (step + 1) % eval_every == 0 or step + 1 == cfg.steps  # an evaluation follows: keep its norms
        for r, loss in zip(live, losses):
            update(r, loss, logged)
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
            groups = {key: [r for r in live if data_key(r.cfg) == key] for key in dict.fromkeys(data_key(r.cfg)
                                                                                              for r in live)}
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


def backward_pack(models, batches, labels, per_run, precision="fp32"):
    """One training step's forward and backward of a pack; the losses (detached), one a model.

    batches[i] = (input_ids, attention_mask) and labels[i] belong to models[i]. per_run (on a CPU): each
    run's pass goes forward and backward on its own, so only one pass's graph is alive at a time and a
    pack peaks at one run's activations; otherwise (a GPU) one backbone pass carries the whole pack and
    one backward follows. The gradients are the same either way: each run's come from its own loss alone.
    precision: "fp32" or "bf16", for the forward (xpe.precision_context); the backward runs outside it.
    """
    context = lambda: xpe.precision_context(models[0].backbone, precision)  # noqa: E731
    if not per_run:
        with context():
            logits = xpe.packed_logits(models, batches)
        losses = [F.cross_entropy(x.float(), y) for x, y in zip(logits, labels)]
        torch.stack(losses).sum().backward()
        return [loss.detach() for loss in losses]
    losses, embeds = [], {}
    embed = models[0].backbone.get_input_embeddings()
    for model, (input_ids, attention_mask), y in zip(models, batches, labels):
        with context():
            if id(input_ids) not in embeds:  # a batch shared by several runs is looked up once (frozen: no graph)
                embeds[id(input_ids)] = embed(input_ids)
            (logits,) = xpe.packed_logits([model], [(input_ids, attention_mask)], token_embeds=embeds[id(input_ids)])
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        losses.append(loss.detach())
    return losses


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
            write_config(r.out, r.config, p)


def print_ending(run):
    """One line on how a run ended; False when its loss stopped being finite."""
    cfg, p = run.cfg, run.progress
    if p.ended is Ended.NOT_FINITE:
        kept = (f"the last good state, from step {p.log[-1]['step']}, is kept" if p.log else
                "nothing is kept: it stopped before its first evaluation")
        print(f"train.py: {run.out}: stopped: the loss was not finite at step {p.ended_step} "
              f"(--lr-prompt {xpe.value_text(cfg.lr_prompt)}, --lr-spt {xpe.value_text(cfg.lr_spt)}, --lr "
              f"{xpe.value_text(cfg.lr)}); {kept}: "
              f"lower the learning rates", file=sys.stderr)
        return False
    why = f"early stop at step {p.step}" if p.ended is Ended.EARLY else f"{p.step} steps"
    print(f"{run.out}: done ({why}): best dev accuracy {p.best_accuracy:.4f} at step {p.best_step}, "
          f"{p.seconds:.0f} s of training")
    return True


# ---- the call -----------------------------------------------------------------------------------------

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


def encode_splits(rows, tokenizer, max_length, template=None):
    """{key: (train ids, train labels, dev ids, dev labels)}: fit's splits from load_rows' rows (a decoder's through
    its template)."""
    return {key: (data.encode(train_rows, tokenizer, max_length, template), torch.tensor([r.label for r in train_rows]),
                  data.encode(dev_rows, tokenizer, max_length, template), torch.tensor([r.label for r in dev_rows]))
            for key, (train_rows, dev_rows) in rows.items()}


def train(cfgs, outs, plan, languages, labels, rows, backbone, tokenizer, device, resume=False, made_by=None,
          board_dir=None, template=None):
    """Train the runs of the packs in plan into their claimed folders, pack after pack; 0 if all ended well.
    board_dir: --tensorboard's folder, or None; template: a decoder's (decoder_template)."""
    call_names = run_names(cfgs)
    keys = dict.fromkeys(data_key(cfgs[i]) for pack in plan for i in pack)
    splits = encode_splits({key: rows[key] for key in keys}, tokenizer, cfgs[0].max_length, template)
    runs = []
    for pack in plan:  # built just before training: a pack of one trains as that run alone
        names = [call_names[i] for i in pack]
        if resume:
            settle([outs[i] for i in pack])
        members = [start_run(cfgs[i], outs[i], backbone, labels, languages[data_key(cfgs[i])], device, resume,
                             pack=names, made_by=made_by, template=template) for i in pack]
        rejoin(members)
        if board_dir:
            for r in members:
                r.board = open_board(board_dir, r)
        try:
            fit(members, splits, tokenizer.pad_token_id, device)
        finally:
            for r in members:
                if r.board:
                    r.board.close()
        runs += members
    return 0 if all([print_ending(r) for r in runs]) else 1


def main(argv=None):
    args = parse_args(argv, __doc__.split("\n")[0])
    fds = []
    try:
        cfgs = resolve_configs(args)
        if args.tensorboard:
            check_tensorboard(args.tensorboard)
        rank, world, local_rank = rank_world()
        device = xpe.pick_device(args.device, local_rank if world > 1 else None)
        precision = xpe.resolve_precision(cfgs[0].precision, device)  # the runs record what they train in
        cfgs = [replace(c, precision=precision) for c in cfgs]
        cfg = cfgs[0]
        outs = run_dirs(cfgs, args.out)  # the folder plan before the data is read
        check_holder(Path(args.out or "runs"), len(cfgs))
        for line in unread_notes(args, cfgs) if rank == 0 else []:
            print(line, file=sys.stderr)
        languages, labels, rows = load_rows(cfgs)
        plan = packs_of(cfgs, args.pack_seeds, args.pack_size or DEFAULT_PACK_SIZE[device.type],
                        [len(rows[data_key(c)][0]) for c in cfgs])
        call_names = run_names(cfgs)
        names = {i: [call_names[j] for j in pack] for pack in plan for i in pack}
        if len(cfgs) > 1:
            swept = ", ".join(f"{k} {' '.join(sorted({xpe.value_text(getattr(c, k)) for c in cfgs}))}"
                              for k in swept_settings(cfgs))
            print(f"train.py: {len(cfgs)} runs in {len(plan)} pack{'s' if len(plan) > 1 else ''} of at most "
                  f"{max(map(len, plan))}{f' (swept: {swept})' if swept else ''}")
        plan = share(plan, rank, world)  # torchrun, srun: this process's packs
        mine = [i for pack in plan for i in pack]
        check = lambda **kw: check_folders(  # noqa: E731
            [outs[i] for i in mine], [asdict(cfgs[i]) for i in mine], [names[i] for i in mine], args.resume,
            args.overwrite, NOT_IDENTITY, call_outs=outs, call_settings=dict(zip(call_names, map(asdict, cfgs))), **kw)
        check()
        if args.tensorboard:
            check_board(args.tensorboard, [outs[i] for i in mine], args.resume, args.overwrite)
        if not mine:
            print(f"train.py: process {rank} of {world}: the call's {len(names)} runs are in other processes' packs")
            return 0
        backbone, tokenizer = xpe.load_backbone(cfg.model, device, precision)
        check_positions(cfg, xpe.max_text_length(backbone, cfg.prompt_len))
        template = decoder_template(cfg, backbone, tokenizer, labels)
        if template is not None:
            check_decoder_reads(cfgs)
        fds = claim([outs[i] for i in mine])  # from here on the folders are this call's: now it writes
        check(probe_locks=False)  # again, as they are now that they are locked
        if args.overwrite:
            for i in mine:
                clear(outs[i])
        made_by = {"code": code_fingerprint(), "backbone_weights": weights_fingerprint(cfg.model)}
        return train(cfgs, outs, plan, languages, labels, rows, backbone, tokenizer, device, args.resume, made_by,
                     args.tensorboard, template)
    except UsageError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    finally:
        release(fds)


def check_decoder_reads(cfgs):
    """Runs of a call on a decoder that differ only in settings a decoder never reads (unread_settings) would train
    one run twice: refused, as check_read refuses the others before the backbone is known."""
    seen = {}
    for c in cfgs:
        unread = unread_settings(c.method, c.xpe_frac, c.prompt_len, decoder=True) & {"head_dropout", "lr",
                                                                                      "weight_decay"}
        key = json.dumps({k: v for k, v in asdict(c).items() if k not in unread}, sort_keys=True, default=str)
        if key in seen:
            k = next(k for k in sorted(unread) if getattr(c, k) != getattr(seen[key], k))
            name = xpe.method_name(c.method, c.xpe_frac)
            why = "no head trains on a decoder" if k == "head_dropout" else f"{name} has no prompt encoder, and no head " \
                                                                           f"trains on a decoder"
            values = ",".join(sorted({xpe.value_text(getattr(x, k)) for x in cfgs}))
            raise UsageError(f"--{k.replace('_', '-')} {values}: {c.model} is a decoder, where {name} never reads {k} "
                             f"({why}), so its values would train the same run again: give it once")
        seen[key] = c


def decoder_template(cfg, backbone, tokenizer, labels):
    """A decoder's text template and label token ids (xpe.decoder_template); None for an encoder, which takes
    neither --template nor --chat-template."""
    if not xpe.is_decoder(backbone):
        given = [k for k in DECODER_SETTINGS if getattr(cfg, k) != LATER_SETTINGS[k]]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is for a decoder backbone, and {cfg.model} is an "
                             f"encoder (read at its first token by a trained head): leave it out")
        return None
    return xpe.decoder_template(tokenizer, labels, cfg.template or xpe.DEFAULT_TEMPLATE, cfg.max_length,
                                cfg.chat_template, cfg.model)


def check_positions(cfg, limit):
    """The prompt and the text must fit into the backbone's position table (None: it has none)."""
    if limit is None or cfg.max_length <= limit:
        return
    positions = limit + cfg.prompt_len
    if limit < 1:
        prompt_len = max(1, positions - cfg.max_length)
        raise UsageError(f"--prompt-len {cfg.prompt_len} leaves no position for text in {cfg.model}, which has "
                         f"{positions}: use --prompt-len {prompt_len} or less, which leaves "
                         f"{min(cfg.max_length, positions - prompt_len)} for text")
    raise UsageError(f"--max-length {cfg.max_length} and {cfg.prompt_len} prompt vectors need more positions "
                     f"than {cfg.model} has: use --max-length {limit} or less")


if __name__ == "__main__":
    sys.exit(main())
