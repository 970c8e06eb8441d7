"""Train a soft prompt (SPT, XPE or DUAL) on a frozen backbone over pooled SIB-200 source languages.

    python train.py --method dual --xpe-frac 0.7 --source joshi5
    python train.py --target kab_Latn --init runs/dual0.7-joshi5-s42      # sequential full supervision
    python train.py ... --resume                                          # continue a killed run

A plain PyTorch loop: Adafactor, linear warm-up then cosine with hard restarts, dev evaluation every
epoch, early stopping on dev loss after the first cycle, the best dev accuracy kept. The run
directory holds config.json, log.csv, the inference artifact of the best model (prompt.safetensors
+ config.json), the best trainable weights (best.safetensors, for --init) and state.pt (--resume).
"""
import argparse
import csv
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
from evaluate import predict


@dataclass
class TrainConfig:
    method: str = "xpe"
    xpe_frac: float = 1.0         # spt 0, xpe 1, dual 0.7 by default
    source: str = "joshi5"
    target: str = ""              # with init: the sequential full-supervision phase
    init: str = ""
    model: str = "xlm-roberta-large"
    data_dir: str = ""            # empty: the hub
    steps: int = 24000            # 6,000 on a target
    batch_size: int = 32
    lr_prompt: float = 5e-3       # SPT part and pseudo-prompts
    lr: float = 5e-5              # MLP and head
    weight_decay: float = 0.1     # MLP and head weights; never biases or prompt vectors
    warmup: float = 0.1           # 0.05 on a target
    cycles: int = 2
    patience: int = 20            # evaluations; 30 on a target
    max_length: int = 164
    prompt_len: int = 20
    encoder_hidden: int = 256
    encoder_dropout: float = 0.1  # 0.0 on a target
    grad_clip: float = 1.0
    seed: int = 42
    eval_every: int = 0           # 0: one epoch of the pooled training rows
    eval_batch_size: int = 128


TARGET_DEFAULTS = dict(steps=6000, warmup=0.05, patience=30, encoder_dropout=0.0)
METHOD_FRAC = dict(spt=0.0, xpe=1.0, dual=0.7)
# Settings a resumed run may change without becoming another run.
NOT_IDENTITY = {"eval_batch_size"}


class UsageError(Exception):
    """Bad input from the user: one line, exit status 2, nothing written."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        # None marks "not given", so that method- and target-dependent defaults can fill it.
        p.add_argument(flag, type=type(getattr(defaults, f.name)), default=None,
                       help=f"default {getattr(defaults, f.name)!r}")
    p.add_argument("--out", default=None, help="run directory (default: runs/<method>-<source>-s<seed>)")
    p.add_argument("--device", default=None, help="default: cuda when there is one, else cpu")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    return p.parse_args(argv)


def resolve_config(args):
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    if "method" in given and given["method"] not in xpe.METHODS:
        raise UsageError(f"unknown method {given['method']!r}: use one of {', '.join(xpe.METHODS)}")
    if given.get("target") and not given.get("init"):
        raise UsageError("--target needs --init RUN_DIR: the source run to start from")
    if given.get("init") and not given.get("target"):
        raise UsageError("--init needs --target LANG: the language of the full-supervision phase")
    init_config = None
    if given.get("init"):
        init_config = read_init(Path(given["init"]), given)
        # The prompt's shape comes from the source run; the rest are the target defaults.
        for key in ("method", "xpe_frac", "encoder_hidden", "source"):
            given.setdefault(key, init_config[key])
        for key, value in TARGET_DEFAULTS.items():
            given.setdefault(key, value)
    given.setdefault("xpe_frac", METHOD_FRAC[given.get("method", TrainConfig.method)])
    cfg = TrainConfig(**given)
    try:
        xpe.split_prompt(cfg.method, cfg.xpe_frac, cfg.prompt_len)
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
    if not 0 <= cfg.warmup < 1:
        raise UsageError(f"--warmup is a share of the steps in [0, 1), got {cfg.warmup}")
    return cfg


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


def default_out(cfg):
    frac = "" if cfg.method != "dual" else f"{cfg.xpe_frac:g}"
    name = f"{cfg.method}{frac}-{cfg.source.replace(',', '+')}-s{cfg.seed}"
    if cfg.target:
        name = f"{Path(cfg.init).name}-to-{cfg.target}"
    return Path("runs") / name


def check_out_dir(out, cfg, resume, overwrite):
    """Refuse to mix runs: an --out that holds another run needs --resume (same run) or --overwrite."""
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise UsageError(f"--resume: {out} holds no run to resume")
        return
    config_path = out / "config.json"
    if not config_path.is_file():
        raise UsageError(f"--out {out} is not empty and holds no run: choose another --out")
    if overwrite:
        return
    if not resume:
        raise UsageError(f"--out {out} already holds a run: pass --resume to continue it or --overwrite to replace it")
    old = json.loads(config_path.read_text()).get("settings", {})
    diff = [k for k, v in asdict(cfg).items() if k not in NOT_IDENTITY and old.get(k) != v]
    if diff:
        raise UsageError(f"--resume: {out} holds a different run ({', '.join(f'{k} {old.get(k)!r}' for k in diff)}); "
                         f"resume with the same settings or choose another --out")
    if not (out / "state.pt").is_file():
        raise UsageError(f"--resume: {out} has no state.pt yet (killed before its first evaluation): use --overwrite")


def param_groups(model, cfg):
    """Prompt vectors at lr_prompt without decay; MLP and head at lr, decay on weights only."""
    vectors, weights, biases = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in ("prompt.spt", "prompt.xpe.pseudo"):
            vectors.append(p)
        elif name.endswith("bias"):
            biases.append(p)
        else:
            weights.append(p)
    groups = [dict(params=vectors, lr=cfg.lr_prompt, weight_decay=0.0),
              dict(params=weights, lr=cfg.lr, weight_decay=cfg.weight_decay),
              dict(params=biases, lr=cfg.lr, weight_decay=0.0)]
    return [g for g in groups if g["params"]]


def prompt_config(cfg):
    """The model's part of the training settings."""
    return xpe.PromptConfig(method=cfg.method, xpe_frac=cfg.xpe_frac, prompt_len=cfg.prompt_len,
                            encoder_hidden=cfg.encoder_hidden, encoder_dropout=cfg.encoder_dropout,
                            num_labels=len(data.LABELS))


def make_optimizer(model, cfg):
    """Adafactor with an external learning rate; warm-up, then cosine with hard restarts."""
    optimizer = Adafactor(param_groups(model, cfg), scale_parameter=False, relative_step=False, warmup_init=False)
    scheduler = get_cosine_with_hard_restarts_schedule_with_warmup(
        optimizer, num_warmup_steps=int(cfg.warmup * cfg.steps), num_training_steps=cfg.steps,
        num_cycles=cfg.cycles)
    return optimizer, scheduler


def early_stopping_start(cfg):
    """The step at which the first learning-rate cycle ends; early stopping waits for it."""
    warmup = int(cfg.warmup * cfg.steps)
    return warmup + math.ceil((cfg.steps - warmup) / cfg.cycles)


def trainable_state(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def write_log(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["step", "train_loss", "lr_prompt", "lr", "dev_loss", "dev_accuracy",
                                             "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    xpe.atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def train_step(model, input_ids, attention_mask, labels, optimizer, scheduler, cfg, autocast):
    with autocast:
        loss = F.cross_entropy(model(input_ids, attention_mask).float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = resolve_config(args)
        out = Path(args.out) if args.out else default_out(cfg)
        check_out_dir(out, cfg, args.resume, args.overwrite)
        sources = data.resolve_languages(cfg.target or cfg.source)
        if cfg.target and len(sources) != 1:
            raise UsageError(f"--target is one language, got {cfg.target!r} ({len(sources)} languages)")
        data_dir = cfg.data_dir or None
        train_rows = data.load_split(sources, "train", data_dir)
        dev_rows = data.load_split(sources, "dev", data_dir)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        backbone, tokenizer = xpe.load_backbone(cfg.model, device)
    except (UsageError, ValueError) as e:  # data.DataError is a ValueError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return train(cfg, out, sources, train_rows, dev_rows, backbone, tokenizer, device, args.resume, args.overwrite)


def train(cfg, out, sources, train_rows, dev_rows, backbone, tokenizer, device, resume=False, overwrite=False):
    torch.manual_seed(cfg.seed)
    model = xpe.build_classifier(backbone, prompt_config(cfg)).to(device)
    if cfg.init:
        model.load_state_dict(load_file(str(Path(cfg.init) / "best.safetensors")), strict=False)
    trainable, total, share = xpe.count_parameters(model)
    print(xpe.describe_parameters(model))

    train_ids = data.encode(train_rows, tokenizer, cfg.max_length)
    dev_ids = data.encode(dev_rows, tokenizer, cfg.max_length)
    train_labels = torch.tensor([r.label for r in train_rows])
    dev_labels = torch.tensor([r.label for r in dev_rows])
    lengths = [len(x) for x in train_ids]
    per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    eval_every = cfg.eval_every or per_epoch

    optimizer, scheduler = make_optimizer(model, cfg)
    stop_from = early_stopping_start(cfg)

    run_config = {  # the artifact's keys (xpe.save_artifact) first, then what evaluate.py and --init read
        "model": cfg.model, "labels": list(data.LABELS), "max_length": cfg.max_length,
        **xpe.prompt_config_dict(prompt_config(cfg)), "source": cfg.source, "target": cfg.target, "seed": cfg.seed,
        "source_languages": [] if cfg.target else sources, "target_languages": sources if cfg.target else [],
        "trainable_parameters": trainable, "total_parameters": total, "trainable_share_percent": share,
        "settings": asdict(cfg),
    }
    best = dict(step=0, dev_accuracy=-1.0, dev_loss=math.inf)
    early = dict(best_loss=math.inf, bad_evals=0)
    step, log_rows = 0, []
    if resume:
        state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best, early, log_rows = state["step"], state["best"], state["early"], state["log"]
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        print(f"resuming {out} from step {step}")
    else:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    xpe.atomic_write_json(out / "config.json", run_config)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device)  # the first step with a non-finite loss, found without a sync
    since_eval, start, start_step = 0, time.time(), step
    bar = tqdm(total=cfg.steps, initial=step, desc=out.name, dynamic_ncols=True)
    stopped = None
    model.train()
    while step < cfg.steps and early["bad_evals"] < cfg.patience and stopped is None:
        epoch, offset = divmod(step, per_epoch)
        plan = data.train_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        for indices in plan[offset:]:
            batch = data.to_device([*data.collate(train_ids, indices, tokenizer.pad_token_id),
                                    train_labels[indices]], device)
            loss = train_step(model, *batch, optimizer, scheduler, cfg, autocast)
            step += 1
            since_eval += 1
            loss_sum += loss
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            if step % 50 == 0 or step % eval_every == 0 or step == cfg.steps:
                if first_bad.item() >= 0:  # the only sync between evaluations, once in 50 steps
                    stopped, bad_step = "training", first_bad.item()
                    break
                show_progress(bar, loss, scheduler, log_rows)
            bar.update(1)
            if step % eval_every == 0 or step == cfg.steps:
                dev_loss, dev_acc = dev_metrics(model, dev_ids, dev_labels, tokenizer.pad_token_id, cfg, device)
                if not math.isfinite(dev_loss):  # this step's update overflowed: keep the state before it
                    stopped, bad_step = "dev", step
                    break
                model.train()
                lr_prompt, lr = scheduler.get_last_lr()[:2]
                log_rows.append(dict(step=step, train_loss=round(loss_sum.item() / since_eval, 6),
                                     lr_prompt=lr_prompt, lr=lr, dev_loss=round(dev_loss, 6),
                                     dev_accuracy=round(dev_acc, 6), seconds=round(time.time() - start, 2)))
                loss_sum.zero_()
                since_eval = 0
                show_progress(bar, loss, scheduler, log_rows)
                if dev_acc > best["dev_accuracy"]:
                    best.update(step=step, dev_accuracy=dev_acc, dev_loss=dev_loss)
                    xpe.save_artifact(model, out, run_config)
                    weights = trainable_state(model)
                    xpe.atomic_write(out / "best.safetensors", lambda tmp: save_file(weights, tmp))
                if dev_loss < early["best_loss"]:
                    early.update(best_loss=dev_loss, bad_evals=0)
                elif step >= stop_from:
                    early["bad_evals"] += 1
                write_log(out / "log.csv", log_rows)
                save_state(out, model, optimizer, scheduler, step, best, early, log_rows, device)
                if early["bad_evals"] >= cfg.patience:
                    stopped = "early"
                    break
            if step >= cfg.steps:
                break
    bar.close()
    elapsed = time.time() - start
    if stopped in ("training", "dev"):
        lrs = ", ".join(f"{g['lr']:.2e}" for g in optimizer.param_groups)
        print(f"train.py: stopped: the {stopped} loss was not finite at step {bad_step} (learning rates now {lrs}; "
              f"--lr-prompt {cfg.lr_prompt:g}, --lr {cfg.lr:g}); the last good state, from step "
              f"{log_rows[-1]['step'] if log_rows else 0}, is kept in {out}: lower the learning rates", file=sys.stderr)
        return 1
    rate = (step - start_step) / elapsed if elapsed > 0 else float("nan")
    why = f"early stop at step {step}" if stopped == "early" else f"{step} steps"
    print(f"done ({why}): best dev accuracy {best['dev_accuracy']:.4f} at step {best['step']}, "
          f"{elapsed:.0f} s, {rate:.2f} steps/s; artifact in {out}")
    return 0


def show_progress(bar, loss, scheduler, log_rows):
    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[1]:.2e}",
                    dev_acc=f"{log_rows[-1]['dev_accuracy']:.3f}" if log_rows else "-")


def dev_metrics(model, ids, labels, pad_id, cfg, device):
    logits = predict(model, ids, pad_id, cfg.eval_batch_size, device)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    return loss, accuracy


def save_state(out, model, optimizer, scheduler, step, best, early, log_rows, device):
    state = dict(trainable=trainable_state(model), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                 step=step, best=best, early=early, log=log_rows, rng_cpu=torch.get_rng_state())
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
    xpe.atomic_write(out / "state.pt", lambda tmp: torch.save(state, tmp))


if __name__ == "__main__":
    sys.exit(main())
