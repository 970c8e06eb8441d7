"""Training and evaluation speed of xpe: packed runs against the same runs one after another, and one run
against PEFT under the Hugging Face Trainer.

    python bench.py                   # XLM-R-large shape (random weights, no download), cuda if there is one
    python bench.py --quick           # a tiny backbone on the CPU, seconds (CI runs this)
    python bench.py --config base --device cpu --steps 3 --warmup-steps 1 --eval-limit 16

Every figure comes from one process and the very same batches (train.py's data.train_batches plans over
real SIB-200 text, tokenised with XLM-R's vocabulary) on one randomly initialised backbone of an XLM-R
shape. Ours is always train.fit, the loop train.py runs, bookkeeping included (the loss checked once in
50 steps, the progress bar; the dev evaluation falls after the timed steps), and evaluate.py's
xpe.predict. Sections:

1. pack: the four methods (spt, dual:0.3, dual:0.7, xpe) of one seed as one pack, one backbone pass a
   step, against the same four runs one after another: run-steps per second and model FLOP utilisation.
2. seeds: two seeds of the four methods packed into the same steps (train.py --pack-seeds) against one
   seed's pack after the other (train.py's default): run-steps per second.
3. eval: zero-shot evaluation of the four runs' static prompts in one pass over the test rows (default
   all 205 languages, 41,820 sentences) against one pass per run: sentences x runs per second.
4. peer: one run (--method, xpe by default) against PEFT P-tuning (PromptEncoderConfig, SEQ_CLS, 20 virtual
   tokens, MLP encoder of hidden size 256; PromptTuningConfig for spt) on XLMRobertaForSequenceClassification
   under transformers.Trainer with the authors' settings (Adafactor, bf16 on CUDA, group_by_length,
   DataCollatorWithPadding), fed our batch plan (its get_train_dataloader returns a DataLoader whose
   batch_sampler is the plan). The stock Trainer reads the loss on the host every step for its NaN/inf
   filter, as the authors ran it; it runs again with logging_nan_inf_filter=False, so that the ratio shows
   how much of the difference is that bookkeeping. Then evaluation: Trainer.predict of the peer against
   ours on the same pooled rows. Skipped with --no-peer (which needs no peft).

Before any timing, the pack trains once over the whole plan, untimed: the first code in a process also
warms it (allocator, kernels) for what follows, which on the CPU once moved a ratio by a third. Both
sides run on one device: on CUDA only the chosen GPU is made visible, so that the Trainer cannot wrap the
peer in DataParallel over several while ours uses one.

Model FLOPs of one run's training step (a batch of B rows padded to width W):
    FLOPs = B * L * (16*T*d^2 + 8*T*d*f + 12*T^2*d)  +  6 * B * (P_x*M + H),     T = W + P
d hidden size, f feed-forward size, L layers, P prompt length, P_x prompt rows that go through the prompt
MLP (M its weights; 0 for spt), H the head's weights. The frozen backbone's forward is 2 FLOPs per weight
per position (8Td^2 + 4Tdf) plus attention scores and values (4T^2d); its backward computes input
gradients only (the weights are frozen): the weight matmuls once more, the attention matmuls twice (both
operands are activations). The trainable parts take the usual 6 FLOPs per weight per row. Embeddings,
LayerNorm, softmax and masks are left out; padding counts as work. A pack's FLOPs are the sum over its
runs. This equals torch's FlopCounterMode on a training step of ours (tests/test_bench.py). MFU = FLOPs /
seconds / peak, the dense bf16 peak of the GPU read from its name (H100 SXM 989, H100 NVL 835, H100 PCIe
756, H200 989, H200 NVL 835, A100 312 TFLOP/s); another GPU needs --peak-tflops; "n/a" on the CPU unless
given.

Goals on one H100 (issue 10): four methods packed >= 2.5x the run-steps per second of the same four runs one
after another, >= 40 % MFU; zero-shot evaluation of four runs over all 41,820 test sentences in <= 40 s.
"""
import argparse
import contextlib
import dataclasses
import io
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent

CONFIGS = {  # XLM-R shapes; quick is a toy for CI
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "quick": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
}
# what --quick means, for every flag not given
QUICK = dict(config="quick", device="cpu", steps=3, warmup_steps=1, source="eng_Latn",
             eval_languages="eng_Latn,fra_Latn,zho_Hans", eval_limit=32, eval_batch_size=16, threads=1)
DEFAULTS = dict(config="large", device=None, steps=50, warmup_steps=10, source="joshi5",
                eval_languages="all", eval_limit=0, eval_batch_size=128, threads=0)
PACK = ("spt", "dual:0.3", "dual:0.7", "xpe")
PEAKS = [  # (words in torch.cuda.get_device_name, dense bf16 TFLOP/s), the first match wins
    (("H100", "NVL"), 835.0), (("H100", "PCIe"), 756.0), (("H100",), 989.0), (("H200", "NVL"), 835.0),
    (("H200",), 989.0), (("A100",), 312.0)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"tiny backbone on the CPU, a few steps, a small eval subset ({QUICK})")
    p.add_argument("--config", choices=sorted(CONFIGS), help="backbone shape (default large)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cuda when there is one)")
    p.add_argument("--steps", type=int, help=f"timed training steps per measurement (default {DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=int, help=f"untimed steps before them (default {DEFAULTS['warmup_steps']})")
    p.add_argument("--batch-size", type=int, default=32, help="rows per step and run (default 32)")
    p.add_argument("--max-length", type=int, default=164, help="tokens of text per row (default 164)")
    p.add_argument("--method", choices=("xpe", "spt"), default="xpe",
                   help="the run set against the peer: xpe against P-tuning (MLP), spt against PEFT prompt tuning")
    p.add_argument("--source", help="training languages, a group or codes (default joshi5)")
    p.add_argument("--eval-languages", help="languages evaluated, a group or codes (default all: 205)")
    p.add_argument("--eval-limit", type=int, help="at most this many test sentences per language (default 0: all)")
    p.add_argument("--eval-batch-size", type=int, help="rows per backbone pass in evaluation, both sides "
                                                       "(default 128, train.py's)")
    p.add_argument("--no-eval", action="store_true", help="time training only")
    p.add_argument("--no-peer", action="store_true", help="leave out the peer (PEFT + Trainer): no peft needed")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak for MFU (default: read from the GPU's name; none on the CPU)")
    p.add_argument("--data-dir", default=os.environ.get("XPE_SIB200_DIR") or str(ROOT.parent / "shared" / "sib200"),
                   help="SIB-200 copy (default env XPE_SIB200_DIR or ../shared/sib200)")
    p.add_argument("--tokenizer", default=os.environ.get("XPE_E5_DIR") or str(ROOT / ".e5"),
                   help="a folder with XLM-R's tokenizer, e.g. e5-small's (default env XPE_E5_DIR or ./.e5)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default 0: torch's choice; 1 with --quick); 1 is steadier on a "
                        "busy machine")
    p.add_argument("--seed", type=int, default=1, help="the first seed; the seeds section adds the next (default 1)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("steps", "warmup_steps", "batch_size", "max_length", "eval_batch_size"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}"
                    + (" (the first steps allocate memory and pick kernels)" if key == "warmup_steps" else ""))
    if args.eval_limit < 0:
        p.error(f"--eval-limit must be 0 (all) or more, got {args.eval_limit}")
    return args


def peak_tflops(name):
    """The dense bf16 peak of a GPU from its name (torch.cuda.get_device_name), or None when unknown."""
    return next((peak for words, peak in PEAKS if all(w.lower() in name.lower() for w in words)), None)


def visible_devices(device, visible):
    """CUDA_VISIBLE_DEVICES that leaves only `device` (cuda, cuda:1) of those now visible (None: all)."""
    index = int(device.partition(":")[2] or 0)
    ids = visible.split(",") if visible else [str(i) for i in range(index + 1)]
    if index >= len(ids):
        raise ValueError(f"--device {device}: only {len(ids)} GPU(s) are visible")
    return ids[index]


def step_flops(widths, rows, enc, prompt_len, mlp_rows, mlp_weights, head_weights):
    """Model FLOPs of the training steps whose batches have these padded widths and row counts (module doc)."""
    d, f, n_layers = enc.hidden_size, enc.intermediate_size, enc.num_hidden_layers
    total = 0
    for width, b in zip(widths, rows):
        t = width + prompt_len
        total += b * n_layers * (16 * t * d * d + 8 * t * d * f + 12 * t * t * d)
        total += 6 * b * (mlp_rows * mlp_weights + head_weights)
    return total


def main(argv=None):
    args = parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"  # before tqdm's import: train.fit's bars would interleave with the figures
    if args.device is None or args.device.startswith("cuda"):
        # before torch sees CUDA: only the chosen GPU is visible, to both sides alike
        try:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(args.device or "cuda",
                                                                 os.environ.get("CUDA_VISIBLE_DEVICES"))
        except ValueError as e:
            print(f"bench.py: error: {e}", file=sys.stderr)
            return 2
    if not args.no_peer:
        try:
            import peft  # noqa: F401  (the peer side)
            from transformers import Trainer  # noqa: F401  (needs accelerate, which peft brings)
        except ImportError as e:
            print(f"bench.py: error: the peer side needs peft and accelerate ({e}): pip install peft, "
                  f"or leave the peer out with --no-peer", file=sys.stderr)
            return 2
    import torch

    import data
    if not any((Path(args.tokenizer) / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        print(f"bench.py: error: no tokenizer in {args.tokenizer}; pass --tokenizer with a folder holding XLM-R's "
              f"tokenizer (e5-small's: ../shared/tools/e5small.py) or set XPE_E5_DIR", file=sys.stderr)
        return 2
    try:
        train_langs = data.resolve_languages(args.source)
        eval_langs = [] if args.no_eval else data.resolve_languages(args.eval_languages)
        train_rows = data.load_split(train_langs, "train", args.data_dir)
        test_rows = [r for lang in eval_langs for r in data.load_split([lang], "test", args.data_dir)
                     [:args.eval_limit or None]]
    except data.DataError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")  # cuda:0 is the one GPU left visible
    peak = args.peak_tflops if args.peak_tflops is not None else \
        peak_tflops(torch.cuda.get_device_name(device)) if cuda else None
    if cuda and peak is None:
        print(f"bench.py: error: no known peak for {torch.cuda.get_device_name(device)}: pass --peak-tflops with its "
              f"dense bf16 TFLOP/s", file=sys.stderr)
        return 2
    return run(args, device, peak, train_langs, train_rows, test_rows)


def run(args, device, peak, train_langs, train_rows, test_rows):
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaForSequenceClassification

    import data
    import train
    import xpe

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    pad_id = tokenizer.pad_token_id
    enc_cfg = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                               num_labels=len(data.LABELS), **CONFIGS[args.config])
    if len(tokenizer) > enc_cfg.vocab_size or pad_id != enc_cfg.pad_token_id:
        print(f"bench.py: error: {args.tokenizer} is not XLM-R's tokenizer ({len(tokenizer)} tokens, pad id {pad_id})",
              file=sys.stderr)
        return 2

    # one random backbone for every measurement: the peer's base model, whose .roberta (no pooler) is ours
    torch.manual_seed(0)
    base = XLMRobertaForSequenceClassification(enc_cfg).to(device)
    backbone = base.roberta.requires_grad_(False)
    steps = args.warmup_steps + args.steps
    # eval_every = steps: the one dev evaluation comes after the timed steps; patience 0: nothing stops early
    common = train.TrainConfig(steps=steps, batch_size=args.batch_size, max_length=args.max_length,
                               eval_batch_size=args.eval_batch_size, eval_every=steps, patience=0, model="bench")

    def configs(methods, seeds):
        return [dataclasses.replace(common, method=m, xpe_frac=r, seed=s)
                for s in seeds for m, r in train.parse_methods(",".join(methods), None)]

    train_ids = data.encode(train_rows, tokenizer, args.max_length)
    train_labels = torch.tensor([r.label for r in train_rows])
    dev_ids, dev_labels = train_ids[:64], train_labels[:64]
    lengths = [len(x) for x in train_ids]
    per_epoch = math.ceil(len(train_ids) / args.batch_size)

    def batches(seed, first=args.warmup_steps):
        """The batches of steps first.. of a seed's plan, epoch after epoch, as train.fit takes them."""
        epochs = {}
        for step in range(first, steps):
            epoch = step // per_epoch
            if epoch not in epochs:
                epochs[epoch] = data.train_batches(lengths, args.batch_size, seed, epoch)
            yield epochs[epoch][step % per_epoch]

    def timed_plan(seed):
        return list(batches(seed))

    def fit_seconds(cfgs):
        """Seconds of the timed steps of train.fit over fresh runs built from cfgs, as train.py builds them."""
        folder = Path(tempfile.mkdtemp(prefix="xpe-bench-"))
        marks = {}

        def on_step(step):
            if step in (args.warmup_steps, steps):
                sync()
                marks[step] = time.perf_counter()

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # each run's parameter count and end
                runs = [train.start_run(cfg, folder / train.run_name(cfg), backbone, data.LABELS, train_langs, device,
                                        False, False) for cfg in cfgs]
                train.fit(runs, train_ids, train_labels, dev_ids, dev_labels, pad_id, device, on_step)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if any(r.stopped in ("training", "dev") for r in runs):
            raise RuntimeError("ours: a training loss is not finite")
        return marks[steps] - marks[args.warmup_steps], runs

    d, hidden = enc_cfg.hidden_size, common.encoder_hidden
    mlp_weights = d * hidden + hidden ** 2 + hidden * d
    head_weights = d * d + d * len(data.LABELS)

    def flops(cfgs):
        """Model FLOPs of the timed steps of these runs (module doc), each on its own seed's batches."""
        total = 0
        for cfg in cfgs:
            plan = timed_plan(cfg.seed)
            n_xpe = xpe.split_prompt(cfg.method, cfg.xpe_frac, cfg.prompt_len)[1]
            total += step_flops([max(lengths[i] for i in b) for b in plan], [len(b) for b in plan], enc_cfg,
                                cfg.prompt_len, n_xpe, mlp_weights, head_weights)
        return total

    def utilisation(total, seconds):
        rate = total / seconds / 1e12
        mfu = f"{100 * rate / peak:.1f} % of {peak:g} TFLOP/s" if peak else "n/a (no --peak-tflops on the CPU)"
        return f"{rate:.4g} TFLOP/s, MFU {mfu}"

    shape = ", ".join(f"{k} {v}" for k, v in CONFIGS[args.config].items())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"bench.py: device {device} ({where}), torch {torch.__version__}, config {args.config} ({shape}), "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}")
    plan = timed_plan(args.seed)
    print(f"data: train {args.source} ({len(train_langs)} languages, {len(train_rows)} rows), batch {args.batch_size} "
          f"per run, max length {args.max_length}; {args.steps} timed steps after {args.warmup_steps} untimed, mean "
          f"padded width {sum(max(lengths[i] for i in b) for b in plan) / len(plan):.1f} + {common.prompt_len} prompt")
    print("FLOPs per run-step = B*L*(16*T*d^2 + 8*T*d*f + 12*T^2*d) + 6*B*(P_x*M + H), T = padded width + P "
          "(frozen backbone: forward + input-gradient backward; trainable prompt MLP and head: 6 per weight)")

    # ---- the process warm-up, then packed against one after another
    pack = configs(PACK, [args.seed])
    fit_seconds(pack)
    packed, runs = fit_seconds(pack)
    alone = sum(fit_seconds([cfg])[0] for cfg in pack)
    run_steps = len(pack) * args.steps
    ratios = {"pack train (packed / one after another)": alone / packed}
    print(f"train packed ({len(pack)} runs, one backbone pass a step): {run_steps / packed:.4g} run-steps/s, "
          f"{utilisation(flops(pack), packed)}")
    print(f"train one after another ({len(pack)} runs): {run_steps / alone:.4g} run-steps/s, "
          f"{utilisation(flops(pack), alone)}")

    # ---- two seeds: packed into the same steps, or one seed's pack after the other
    seeds = configs(PACK, [args.seed, args.seed + 1])
    together = fit_seconds(seeds)[0]
    in_turn = sum(fit_seconds([c for c in seeds if c.seed == s])[0] for s in (args.seed, args.seed + 1))
    ratios["seeds train (packed / in turn)"] = in_turn / together
    print(f"seeds packed (2 seeds x {len(pack)} runs, --pack-seeds): {len(seeds) * args.steps / together:.4g} "
          f"run-steps/s")
    print(f"seeds in turn (2 seeds x {len(pack)} runs, the default): {len(seeds) * args.steps / in_turn:.4g} "
          f"run-steps/s")

    # ---- zero-shot evaluation: the four static prompts in one pass, or a pass per run
    test_ids = data.encode(test_rows, tokenizer, args.max_length) if test_rows else []
    statics = [r.model.to_static() for r in runs]
    if test_ids:
        xpe.predict(statics, test_ids[:args.eval_batch_size], pad_id, args.eval_batch_size)  # warm-up, untimed
        sync()
        start = time.perf_counter()
        xpe.predict(statics, test_ids, pad_id, args.eval_batch_size)
        sync()
        eval_packed = time.perf_counter() - start
        each = []
        for static in statics:
            start = time.perf_counter()
            xpe.predict([static], test_ids, pad_id, args.eval_batch_size)
            sync()
            each.append(time.perf_counter() - start)
        ratios["eval (one pass / a pass per run)"] = sum(each) / eval_packed
        n = len(test_ids)
        print(f"eval one pass ({len(statics)} runs, {n} sentences, batch {args.eval_batch_size}): {eval_packed:.3f} s, "
              f"{n * len(statics) / eval_packed:.4g} sentence-runs/s")
        print(f"eval a pass per run ({len(statics)} runs): {sum(each):.3f} s, "
              f"{n * len(statics) / sum(each):.4g} sentence-runs/s")

    # ---- one run against PEFT + the Trainer
    if not args.no_peer:
        mine = configs([args.method], [args.seed])
        ours, mine_runs = fit_seconds(mine)
        peer = make_peer(base, mine[0])
        print(f"ours ({args.method}): {xpe.describe_parameters(mine_runs[0].model)}; peer: {describe_peer(peer)}")
        full_plan = list(batches(args.seed, first=0))
        trainer, stock = train_peer(peer, mine[0], full_plan, train_ids, train_labels, tokenizer, device, args, sync,
                                    nan_filter=True)
        _, unfiltered = train_peer(peer, mine[0], full_plan, train_ids, train_labels, tokenizer, device, args, sync,
                                   nan_filter=False)
        sentences = sum(len(b) for b in timed_plan(args.seed))
        tokens = sum(lengths[i] for b in timed_plan(args.seed) for i in b)
        for side, seconds in (("ours train (train.fit)", ours), ("peer train (Trainer, NaN filter on, as the authors "
                                                                  "ran it)", stock),
                              ("peer train (Trainer, logging_nan_inf_filter=False)", unfiltered)):
            print(f"{side}: {args.steps / seconds:.4g} steps/s, {sentences / seconds:.4g} sentences/s, "
                  f"{tokens / seconds:.4g} tokens/s (text, padding not counted), {utilisation(flops(mine), seconds)}")
        ratios["peer train (ours / stock Trainer)"] = stock / ours
        ratios["peer train (ours / Trainer without NaN filter)"] = unfiltered / ours
        if test_ids:
            static = mine_runs[0].model.to_static()
            xpe.predict([static], test_ids[:args.eval_batch_size], pad_id, args.eval_batch_size)
            sync()
            start = time.perf_counter()
            xpe.predict([static], test_ids, pad_id, args.eval_batch_size)
            sync()
            ours_eval = time.perf_counter() - start
            peer_eval = eval_peer(trainer, test_ids, [r.label for r in test_rows], args.eval_batch_size, sync)
            ratios["peer eval (ours / Trainer.predict)"] = peer_eval / ours_eval
            print(f"ours eval (1 run): {len(test_ids) / ours_eval:.4g} sentences/s; peer eval (Trainer.predict): "
                  f"{len(test_ids) / peer_eval:.4g} sentences/s")

    if device.type == "cuda":  # issue 10's goals, set for one H100
        mfu = 100 * flops(pack) / packed / (peak * 1e12)
        goals = [f"four methods packed {alone / packed:.2f}x the run-steps/s of one after another (>= 2.5x)",
                 f"packed MFU {mfu:.1f} % (>= 40 %)"]
        if test_ids and not args.eval_limit and args.eval_languages == "all":
            goals.append(f"four runs over all {len(test_ids)} test sentences in {eval_packed:.1f} s (<= 40 s)")
        print("goals (one H100): " + "; ".join(goals))
    print("ratios: " + ", ".join(f"{name} {value:.3f}x" for name, value in ratios.items()))
    return 0


def make_peer(base, cfg):
    """PEFT prompt learning for SEQ_CLS on the shared base model: P-tuning (MLP) for xpe, prompt tuning for spt."""
    from peft import PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model

    if cfg.method == "xpe":
        peft_cfg = PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=cfg.prompt_len,
                                       encoder_reparameterization_type="MLP", encoder_hidden_size=cfg.encoder_hidden)
    else:
        peft_cfg = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=cfg.prompt_len)
    return get_peft_model(base, peft_cfg)


def describe_peer(peer):
    trainable = sum(p.numel() for p in peer.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peer.parameters())
    kind = type(peer.active_peft_config).__name__
    return (f"PEFT {kind} on XLMRobertaForSequenceClassification under transformers.Trainer, trainable parameters: "
            f"{trainable / 1e6:.2f}M of {total / 1e6:.1f}M ({100 * trainable / total:.3f} %)")


def train_peer(peer, cfg, plan, train_ids, train_labels, tokenizer, device, args, sync, nan_filter=True):
    """The Trainer over the same plan; (trainer, seconds taken by the steps after the warm-up).

    nan_filter: the stock logging_nan_inf_filter, which reads the loss on the host every step.
    """
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class PlanTrainer(Trainer):
        """The stock Trainer, but its training batches are our plan (the group_by_length sampler is bypassed)."""

        def get_train_dataloader(self):
            loader = DataLoader(self.train_dataset, batch_sampler=plan, collate_fn=self.data_collator,
                                num_workers=self.args.dataloader_num_workers,
                                pin_memory=self.args.dataloader_pin_memory)
            return self.accelerator.prepare(loader)

    class StepTimer(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step == args.warmup_steps:
                sync()
                self.start = time.perf_counter()
            elif state.global_step == args.warmup_steps + args.steps:
                sync()
                self.seconds = time.perf_counter() - self.start

    cuda = device.type == "cuda"
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5 renamed group_by_length=True to train_sampling_strategy="group_by_length"
    grouping = dict(train_sampling_strategy="group_by_length") if "train_sampling_strategy" in fields \
        else dict(group_by_length=True)
    out = tempfile.mkdtemp(prefix="xpe-bench-")
    targs = TrainingArguments(
        output_dir=out, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        max_steps=cfg.steps, optim="adafactor", learning_rate=cfg.lr_prompt, weight_decay=0.01,
        lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": cfg.cycles},
        warmup_steps=int(cfg.warmup * cfg.steps), max_grad_norm=cfg.grad_clip, bf16=cuda, use_cpu=not cuda,
        dataloader_pin_memory=cuda, seed=args.seed, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, logging_nan_inf_filter=nan_filter, **grouping)
    dataset = [dict(input_ids=ids, attention_mask=[1] * len(ids), labels=int(label))
               for ids, label in zip(train_ids, train_labels.tolist())]
    timer = StepTimer()
    trainer = PlanTrainer(model=peer, args=targs, train_dataset=dataset,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary would clutter the output
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)  # nothing is saved there (save_strategy "no")
    if trainer.state.global_step != cfg.steps or not hasattr(timer, "seconds"):
        raise RuntimeError(f"peer: the Trainer ran {trainer.state.global_step} steps, expected {cfg.steps}")
    return trainer, timer.seconds


def eval_peer(trainer, test_ids, test_labels, batch_size, sync):
    """Trainer.predict over the same pooled rows (its own batching: group_by_length applies to training only)."""
    rows = [dict(input_ids=ids, attention_mask=[1] * len(ids), labels=label) for ids, label in zip(test_ids, test_labels)]
    trainer.predict(rows[:batch_size])  # warm-up, untimed
    sync()
    start = time.perf_counter()
    trainer.predict(rows)
    sync()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
