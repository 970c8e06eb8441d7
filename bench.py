"""Training and zero-shot evaluation speed of xpe against PEFT P-tuning under the Hugging Face Trainer.

    python bench.py                                   # XLM-R-large shape, cuda if there is one: the paper's setting
    python bench.py --config base --device cpu --steps 3 --warmup-steps 1 --eval-languages eng_Latn,fra_Latn
    python bench.py --quick                           # tiny random backbone on the CPU, seconds (CI runs this)

Measures, in one process on one machine, with the very same batches on both sides:
- ours: xpe.build_classifier + train.make_optimizer + train.train_step (the real training code) on batches
  planned by data.train_batches and built by data.collate; the peer: PEFT P-tuning
  (PromptEncoderConfig, task SEQ_CLS, 20 virtual tokens, MLP encoder of hidden size 256) on
  XLMRobertaForSequenceClassification under transformers.Trainer (optim adafactor, bf16 on CUDA,
  group_by_length, DataCollatorWithPadding). Both sides share one randomly initialised backbone built from
  an XLM-R config (no download); the text is real SIB-200, tokenised with XLM-R's vocabulary (--tokenizer).
  To feed the Trainer our batch plan, its get_train_dataloader is overridden: a DataLoader whose
  batch_sampler is our plan, collated by DataCollatorWithPadding (right padding to the longest row, the
  tensors data.collate makes), prepared by the Trainer's accelerator as the stock method does.
  Steps are timed after --warmup-steps, the same --steps on both sides (a TrainerCallback on the peer side).
  Before either side, ours' training code runs the plan once untimed on a scratch prompt and head: the
  first code to run in a process also warms it (allocator, kernels) for whatever follows, which on the CPU
  moved the ratio by a third; --peer-first swaps the timed order to check that no such bias is left.
- training steps/s, sentences/s, tokens/s (text tokens, padding not counted) and model FLOP utilisation,
  from this count for one step (a batch of B rows padded to width W):
      FLOPs = B * L * (16*T*d^2 + 8*T*d*f + 12*T^2*d)  +  6 * B * (P_x*M + H),     T = W + P
  d hidden size, f feed-forward size, L layers, P prompt length, P_x prompt rows that go through the prompt
  MLP (M its weights; 0 for spt), H the head's weights. The frozen backbone's forward is 2 FLOPs per weight
  per position (8Td^2 + 4Tdf) plus attention scores and values (4T^2d); its backward computes input
  gradients only (the weights are frozen): the weight matmuls once more, the attention matmuls twice (both
  operands are activations). The trainable parts take the usual 6 FLOPs per weight per row. Embeddings,
  LayerNorm, softmax and masks are left out; padding counts as work. This equals torch's FlopCounterMode on
  a training step of ours (tests/test_bench.py). MFU = FLOPs / seconds / peak, with --peak-tflops (989 on
  CUDA: H100 SXM, bf16 dense; on the CPU "n/a" unless given). The same count serves both sides.
- zero-shot evaluation throughput over the test splits (default all 205 languages, 41,820 sentences),
  pooled into one pass as evaluate.py does: ours = evaluate.predict on model.to_static() (sorted by length),
  the peer = Trainer.predict on the PEFT model, the same eval batch size. One language is run first,
  untimed, on both.
- the ratios ours / peer, printed last.

Where the peer differs from ours (none of it matters for speed beyond noise): PEFT's P-tuning MLP
(Linear, ReLU, Linear, ReLU, Linear) has no dropout, ours has two dropouts of 0.1 (the paper's XPE); the
Trainer takes one learning rate and weight decay for all trainable weights (5e-3, 0.01), ours two groups;
PEFT keeps a trained copy of the head beside the original (modules_to_save), so its total counts one head
more; the Trainer computes the loss inside XLMRobertaForSequenceClassification. --method spt compares
plain SPT with PEFT prompt tuning (PromptTuningConfig, random init) instead. P-tuning matches XPE's shape
(20 rows, each on its own through d -> 256 -> 256 -> d, expanded over the batch), so it is the default.

Needs peft (pip install peft; not in requirements.txt). Goals on one H100: ours >= 3x the peer's training
steps/s, >= 45 % MFU.
"""
import argparse
import dataclasses
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
H100_BF16_TFLOPS = 989.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"tiny backbone on the CPU, a few steps, a small eval subset ({QUICK})")
    p.add_argument("--config", choices=sorted(CONFIGS), help="backbone shape (default large)")
    p.add_argument("--device", help="default: cuda when there is one, else cpu")
    p.add_argument("--steps", type=int, help=f"timed training steps per side (default {DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=int, help=f"untimed steps first (default {DEFAULTS['warmup_steps']})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=164)
    p.add_argument("--method", choices=("xpe", "spt"), default="xpe",
                   help="xpe: the peer is P-tuning (MLP); spt: the peer is PEFT prompt tuning")
    p.add_argument("--source", help="training languages, a group or codes (default joshi5)")
    p.add_argument("--eval-languages", help="languages evaluated, a group or codes (default all: 205)")
    p.add_argument("--eval-limit", type=int, help="at most this many test sentences per language (default 0: all)")
    p.add_argument("--eval-batch-size", type=int, help="both sides (default 128, train.py's)")
    p.add_argument("--no-eval", action="store_true", help="time training only")
    p.add_argument("--peer-first", action="store_true",
                   help="run the peer before ours (the first side also warms the process: this shows that bias)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help=f"peak of the device for MFU (default {H100_BF16_TFLOPS:g} on CUDA, none on the CPU)")
    p.add_argument("--data-dir", default=os.environ.get("XPE_SIB200_DIR") or str(ROOT.parent / "shared" / "sib200"),
                   help="SIB-200 copy (default env XPE_SIB200_DIR or ../shared/sib200)")
    p.add_argument("--tokenizer", default=os.environ.get("XPE_E5_DIR") or str(ROOT / ".e5"),
                   help="a folder with XLM-R's tokenizer, e.g. e5-small's (default env XPE_E5_DIR or ./.e5)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default 0: torch's choice; 1 with --quick); 1 is steadier on a "
                        "busy machine")
    p.add_argument("--seed", type=int, default=42)
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
    try:
        import peft  # noqa: F401  (the peer side)
        from transformers import Trainer  # noqa: F401  (needs accelerate, which peft brings)
    except ImportError as e:
        print(f"bench.py: error: the peer side needs peft and accelerate ({e}): pip install peft", file=sys.stderr)
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
        test_rows = {lang: data.load_split([lang], "test", args.data_dir) for lang in eval_langs}
    except data.DataError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2
    if args.eval_limit:
        test_rows = {lang: rows[:args.eval_limit] for lang, rows in test_rows.items()}
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the Trainer puts the peer on the current device
    peak = args.peak_tflops if args.peak_tflops is not None else (H100_BF16_TFLOPS if device.type == "cuda" else None)
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

    # one random backbone for both sides: the peer's base model, whose .roberta (no pooler) is ours
    torch.manual_seed(0)
    base = XLMRobertaForSequenceClassification(enc_cfg).to(device)
    backbone = base.roberta.requires_grad_(False)
    cfg = train.TrainConfig(method=args.method, xpe_frac=1.0 if args.method == "xpe" else 0.0,
                            steps=args.warmup_steps + args.steps, batch_size=args.batch_size,
                            max_length=args.max_length, eval_batch_size=args.eval_batch_size, seed=args.seed)
    torch.manual_seed(args.seed)
    ours = xpe.build_classifier(backbone, train.prompt_config(cfg)).to(device)
    peer = make_peer(base, cfg)

    # the batch plan: train.py's epochs of data.train_batches, as many as the steps need
    train_ids = data.encode(train_rows, tokenizer, args.max_length)
    train_labels = torch.tensor([r.label for r in train_rows])
    lengths = [len(x) for x in train_ids]
    plan, epoch = [], 0
    while len(plan) < cfg.steps:
        plan += data.train_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        epoch += 1
    plan = plan[:cfg.steps]
    timed = plan[args.warmup_steps:]
    widths = [max(lengths[i] for i in b) for b in timed]
    text_tokens = sum(lengths[i] for b in timed for i in b)
    sentences = sum(len(b) for b in timed)
    n_xpe = cfg.prompt_len if cfg.method == "xpe" else 0
    d = enc_cfg.hidden_size
    mlp_weights = d * cfg.encoder_hidden + cfg.encoder_hidden ** 2 + cfg.encoder_hidden * d
    head_weights = d * d + d * len(data.LABELS)
    flops = step_flops(widths, [len(b) for b in timed], enc_cfg, cfg.prompt_len, n_xpe, mlp_weights, head_weights)

    shape = ", ".join(f"{k} {v}" for k, v in CONFIGS[args.config].items())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"bench.py: device {device} ({where}), torch {torch.__version__}, config {args.config} ({shape}), "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}")
    print(f"data: train {args.source} ({len(train_langs)} languages, {len(train_rows)} rows), batch {cfg.batch_size}, "
          f"max length {args.max_length}; {args.steps} timed steps after {args.warmup_steps} warm-up steps, "
          f"mean padded width {sum(widths) / len(widths):.1f} + {cfg.prompt_len} prompt")
    print(f"ours: {xpe.describe_parameters(ours)}; method {cfg.method}")
    print(f"peer: {describe_peer(peer)}")
    print("FLOPs per step = B*L*(16*T*d^2 + 8*T*d*f + 12*T^2*d) + 6*B*(P_x*M + H), T = padded width + P "
          "(frozen backbone: forward + input-gradient backward; trainable prompt MLP and head: 6 per weight); "
          f"{flops / len(timed) / 1e12:.4g} TFLOP per timed step on average")

    # ---- training
    # Whichever side runs first would also warm the process (allocator, kernels, caches) for the other: on
    # the CPU that alone moved the ratio by a third. So ours' training code first runs the whole plan once,
    # untimed, on a copy of the trainable parts; --peer-first swaps the order of the timed sides as a check.
    process_warmup(ours, cfg, plan, train_ids, train_labels, pad_id, device)
    results = {"ours": {}, "peer": {}}
    for side in (("peer", "ours") if args.peer_first else ("ours", "peer")):
        if side == "ours":
            results["ours"]["train"] = train_ours(ours, cfg, plan, train_ids, train_labels, pad_id, device,
                                                  args.warmup_steps, sync)
        else:
            trainer, results["peer"]["train"] = train_peer(peer, cfg, plan, train_ids, train_labels, tokenizer,
                                                           device, args, sync)
    for side in ("ours", "peer"):
        s = results[side]["train"]
        mfu = f"{100 * flops / s / (peak * 1e12):.1f} % of {peak:g} TFLOP/s" if peak else \
            "n/a (no --peak-tflops on the CPU)"
        print(f"{side} train: {args.steps / s:.4g} steps/s, {sentences / s:.4g} sentences/s, "
              f"{text_tokens / s:.4g} tokens/s (text, padding not counted), {flops / s / 1e12:.4g} TFLOP/s, "
              f"MFU {mfu}")

    # ---- zero-shot evaluation
    if test_rows:
        test_ids = {lang: data.encode(rows, tokenizer, args.max_length) for lang, rows in test_rows.items()}
        test_labels = {lang: [r.label for r in rows] for lang, rows in test_rows.items()}
        n = sum(len(x) for x in test_ids.values())
        static = ours.to_static()
        for side in (("peer", "ours") if args.peer_first else ("ours", "peer")):
            results[side]["eval"] = eval_ours(static, test_ids, pad_id, args.eval_batch_size, device, sync) \
                if side == "ours" else eval_peer(trainer, test_ids, test_labels, sync)
        for side in ("ours", "peer"):
            s = results[side]["eval"]
            print(f"{side} eval: {n} sentences ({len(test_ids)} languages, batch {args.eval_batch_size}) in "
                  f"{s:.3f} s, {n / s:.4g} sentences/s")

    if device.type == "cuda":  # the goals, set for one H100
        speedup = results["peer"]["train"] / results["ours"]["train"]
        mfu = 100 * flops / results["ours"]["train"] / (peak * 1e12)
        print(f"goals (one H100): train steps/s ours/peer {speedup:.2f}x >= 3x: "
              f"{'met' if speedup >= 3 else 'NOT met'}; "
              f"ours MFU {mfu:.1f} % >= 45 %: {'met' if mfu >= 45 else 'NOT met'} (peak {peak:g} TFLOP/s)")
    ratio = f"ratio ours/peer: train steps/s {results['peer']['train'] / results['ours']['train']:.3f}x"
    if test_rows:
        ratio += f", eval sentences/s {results['peer']['eval'] / results['ours']['eval']:.3f}x"
    print(ratio)
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


def process_warmup(model, cfg, plan, train_ids, train_labels, pad_id, device):
    """The plan once through ours' training code on a copy of the trainable parts (the frozen backbone is shared)."""
    import copy

    import xpe

    scratch = xpe.PromptClassifier(model.backbone, copy.deepcopy(model.prompt), copy.deepcopy(model.head))
    train_ours(scratch, cfg, plan, train_ids, train_labels, pad_id, device, 0, lambda: None)


def train_ours(model, cfg, plan, train_ids, train_labels, pad_id, device, warmup, sync):
    """train.py's loop body over the plan; seconds taken by the steps after the warm-up."""
    import torch

    import data
    import train

    optimizer, scheduler = train.make_optimizer(model, cfg)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_sum = torch.zeros((), device=device)
    model.train()
    for step, indices in enumerate(plan):
        if step == warmup:
            sync()
            start = time.perf_counter()
        batch = data.to_device([*data.collate(train_ids, indices, pad_id), train_labels[indices]], device)
        loss_sum += train.train_step(model, *batch, optimizer, scheduler, cfg, autocast)
    sync()
    seconds = time.perf_counter() - start
    if not math.isfinite(loss_sum.item()):
        raise RuntimeError("ours: the training loss is not finite")
    return seconds


def train_peer(peer, cfg, plan, train_ids, train_labels, tokenizer, device, args, sync):
    """The Trainer over the same plan; (trainer, seconds taken by the steps after the warm-up)."""
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
        logging_strategy="no", disable_tqdm=True, **grouping)
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


def eval_ours(static, test_ids, pad_id, batch_size, device, sync):
    """evaluate.py's way: every language's rows in one length-sorted pass."""
    from evaluate import predict

    langs = list(test_ids)
    predict(static, test_ids[langs[0]], pad_id, batch_size, device)  # warm-up, untimed
    sync()
    start = time.perf_counter()
    predict(static, [ids for lang in langs for ids in test_ids[lang]], pad_id, batch_size, device)
    sync()
    return time.perf_counter() - start


def eval_peer(trainer, test_ids, test_labels, sync):
    """Trainer.predict over the same pooled rows (its own batching: group_by_length applies to training only)."""
    langs = list(test_ids)
    rows = {lang: [dict(input_ids=ids, attention_mask=[1] * len(ids), labels=label)
                   for ids, label in zip(test_ids[lang], test_labels[lang])] for lang in langs}
    trainer.predict(rows[langs[0]])  # warm-up, untimed
    sync()
    start = time.perf_counter()
    trainer.predict([row for lang in langs for row in rows[lang]])
    sync()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
