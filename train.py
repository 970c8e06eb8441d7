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
state.pt (for --resume) and xpe-train.lock (run_folders.py: the folder is train.py's, and in use while locked).
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace  # noqa: F401 (fields: the tests take it from train)
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm
from transformers.optimization import Adafactor, get_cosine_with_hard_restarts_schedule_with_warmup

import data
import packs
import run_folders
import xpe
from packs import run_dirs, run_name  # noqa: F401 (bench.py and the tests call them through train)
from run_folders import Ended, Progress
from settings import (  # noqa: F401 (bench.py and the tests take them from train)
    build_parser, check_ranges, HELP, METHOD_FRAC, NOT_IDENTITY, parse_args, parse_methods, parse_seeds,
    read_init, resolve_configs, target_configs, TARGET_DEFAULTS, TrainConfig, UsageError)


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
    if not resume:  # the folder is empty or train.py's own (run_folders.check_folders): what a killed call left goes
        out.mkdir(parents=True, exist_ok=True)
        run_folders.clear(out)
    if resume and (out / "state.pt").is_file():
        state = run_folders.load(out / "state.pt")
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.progress, run.best = Progress.restored(state["progress"]), state["best"]
        # a kill may have come between state.pt and the files that follow from it
        run_folders.write_outputs(out, run.progress, run.best, config, everything=True)
    else:
        if resume and (out / "config.json").is_file():  # ended before its first evaluation (not finite)
            ended = json.loads((out / "config.json").read_text()).get("ended")
            if ended:
                run.progress = Progress(ended=Ended(ended["why"]), ended_step=ended["step"], left_at=ended["step"])
        run_folders.write_config(out, config, run.progress)
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
                      lr_prompt=cfg.lr_prompt * scale, lr_spt=cfg.lr_spt * scale, lr=cfg.lr * scale,
                      dev_loss=round(dev_loss, 6),
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
    run_folders.mark_ended(run.out, p)
    run_folders.write_config(run.out, run.config, p)


def save_pack(runs, device):
    """The runs' saves at one evaluation, as one unit (run_folders.py): every run stages its state, then each commits."""
    for run in runs:
        p = run.progress
        p.rng_cpu = torch.get_rng_state()
        p.rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        run_folders.stage(run.out, dict(progress=p.saved(), model=trainable_state(run.model), best=run.best,
                                    optimizer=run.optimizer.state_dict(), scheduler=run.scheduler.state_dict()))
    for run in runs:
        run_folders.commit(run.out, run.progress, run.best, run.config)


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
    step = min(r.progress.step for r in live)  # the same for every run of a pack (run_folders.py, rejoin)
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
            run_folders.write_config(r.out, r.config, p)


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
            run_folders.settle([outs[i] for i in pack])
        members = [start_run(cfgs[i], outs[i], backbone, labels, languages[data_key(cfgs[i])], device, resume,
                             pack=names) for i in pack]
        rejoin(members)
        fit(members, None, None, None, None, tokenizer.pad_token_id, device, splits=splits)
        runs += members
    return 0 if all([report(r) for r in runs]) else 1


def main(argv=None):
    args = parse_args(argv, __doc__.split("\n")[0])
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
        check = lambda **kw: run_folders.check_folders(  # noqa: E731
            [outs[i] for i in mine], [asdict(cfgs[i]) for i in mine], [names[i] for i in mine], args.resume,
            args.overwrite, NOT_IDENTITY, call_outs=outs, **kw)
        check()
        if not mine:
            print(f"train.py: process {rank} of {world}: the call's {len(names)} runs are in other processes' packs")
            return 0
        backbone, tokenizer = xpe.load_backbone(cfg.model, device)
        xpe.prepare_backbone(backbone, precision)
        check_positions(cfg, xpe.max_text_length(backbone, cfg.prompt_len))
        fds = run_folders.claim([outs[i] for i in mine])  # from here on the folders are this call's: now it writes
    except (UsageError, run_folders.FolderError, ValueError) as e:  # data.DataError is a ValueError
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    try:
        check(probe_locks=False)  # again, as they are now that they are locked
        if args.overwrite:
            for i in mine:
                run_folders.clear(outs[i])
        return train(cfgs, outs, plan, languages, labels, rows, backbone, tokenizer, device, args.resume)
    except (UsageError, run_folders.FolderError) as e:  # another call changed a folder between the checks
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    finally:
        run_folders.release(fds)


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
