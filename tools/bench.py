"""Training and scoring speed of xpe: packed runs against the same runs one after another, one run against
PEFT under the Hugging Face Trainer, bf16 against float32, and a pack's peak memory against one run's.

    python -m tools.bench             # XLM-R-large shape (random weights, no download), cuda if there is one
    python -m tools.bench --quick     # a tiny backbone on the CPU, seconds (CI runs this)
    python -m tools.bench --config base --device cpu --steps 3 --warmup-steps 1 --eval-limit 16

Every figure comes from one process (the memory section: two child processes) and the very same batches
(data.batch_plan, which train.fit takes its batches from, over real SIB-200 text tokenised with XLM-R's
vocabulary) on one randomly initialised backbone of an XLM-R shape. Ours is always train.fit, the loop
train.py runs, bookkeeping included (the dev evaluation falls after the timed steps), and xpe.predict.
Compared sides run in turn, --rounds times, and each keeps its best time, so that a busy spell of a shared
machine falls on both. Each section is a function returning its ratios:

1. pack_section: the four methods (spt, dual:0.3, dual:0.7, xpe) of one seed as one pack against the same
   four runs one after another: run-steps per second and model FLOP utilisation.
1b. sweep_section: a sweep (xpe, four --lr-prompt values, one seed) as one pack against the same runs one after
   another, as train.py packs the values of a list flag.
2. seeds_section: two seeds of the four packed into the same steps (--pack-seeds) against one after the other.
3. eval_section: zero-shot scoring of the four runs' static prompts in one pass against one pass per run.
4. peer_section: one run (--method) against the peer (tools/bench_peer.py): PEFT P-tuning (PromptEncoderConfig,
   SEQ_CLS, 20 virtual tokens, MLP of hidden size 256; PromptTuningConfig for spt) on
   XLMRobertaForSequenceClassification over our backbone under transformers.Trainer with the authors' settings (Adafactor, group_by_length,
   DataCollatorWithPadding, bf16 as the Trainer does it: autocast), fed our batch plan, a fresh peer for
   each Trainer run: stock (its NaN filter reads the loss on the host every step) and with
   logging_nan_inf_filter=False. Then Trainer.predict against ours on the same rows.
5. precision_section: one run trained and scored in float32 and in bf16 (autocast), on the same batches.
6. memory_section (CPU): peak resident memory (ru_maxrss) of a process training the four methods as one
   pack of e5-small's shape against one training one run.

--decoder SHAPE times a causal LM instead (decoder_run): a Llama shape of random weights (1b: Llama-3.2-1B's), read
through its label tokens (xpe.LabelHead). One run, the four methods as one pack against one after another, and the
peak CUDA memory that scoring adds to the weights with a 32k vocabulary against a 256k one (the label-rows read-out
keeps them equal; the full-vocabulary logits it avoids are printed beside). Its label token ids are seven fixed ids
(random weights: any ids do), and the rows are the XLM-R tokenizer's ids modulo the vocabulary.

The first pack trains once untimed, to warm the process (allocator, kernels). On CUDA only the chosen GPU is
visible, so that the Trainer cannot spread the peer over several.

Model FLOPs of a run's step (B rows padded to W): B*L*(16*T*d^2 + 8*T*d*f + 12*T^2*d) + 6*B*(P_x*M + H), T = W + P
(d hidden, f feed-forward, L layers, P prompt length, P_x prompt rows through the MLP of M weights, H the head's
weights): the frozen backbone's forward and input-gradient backward, the trainable parts 6 per weight per row;
it equals torch's FlopCounterMode (tests/test_bench.py). MFU uses the GPU's dense bf16 peak read from its name
(PEAKS; --peak-tflops for others; "n/a" on the CPU unless given).

Goals on one H100 (issue 10): four methods packed >= 2.5x the run-steps per second of the same four runs one
after another, >= 40 % MFU; zero-shot evaluation of four runs over all 41,820 test sentences in <= 40 s.
The last line names every ratio as "A / B N.NNx".
"""
import argparse
import contextlib
import dataclasses
import io
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: xpe.py, data.py, train.py

CONFIGS = {  # XLM-R shapes; quick is a toy for CI
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536),  # e5-small
    "wide": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024),  # memory test
    "quick": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
}
# what --quick means, for every flag not given
QUICK = dict(config="quick", device="cpu", steps=3, warmup_steps=1, source="eng_Latn",
             eval_languages="eng_Latn,fra_Latn,zho_Hans", eval_limit=32, eval_batch_size=16, threads=1, rounds=1)
DEFAULTS = dict(config="large", device=None, steps=50, warmup_steps=10, source="joshi5",
                eval_languages="all", eval_limit=0, eval_batch_size=128, threads=0)
PACK = ("spt", "dual:0.3", "dual:0.7", "xpe")
DECODERS = {  # --decoder: Llama shapes (1b: Llama-3.2-1B's, GQA), random weights; quick is a toy for CI
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8),
    "quick": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
}
DECODER_VOCABS = (32768, 262144)  # Llama 2's and Gemma 3's vocabulary sizes: scoring memory at each
NUMPY_SEEDS = 2 ** 32 - 1  # numpy.random.seed's largest
PEAKS = [  # (words in torch.cuda.get_device_name, dense bf16 TFLOP/s), the first match wins
    (("H100", "NVL"), 835.0), (("H100", "PCIe"), 756.0), (("H100",), 989.0), (("H200", "NVL"), 835.0),
    (("H200",), 989.0), (("A100",), 312.0)]


def native_bf16(device):
    """Whether the device multiplies bf16 natively: CUDA, or a CPU with AMX or AVX512-BF16 (torch.cpu reports it).

    On a CPU without them (AVX2 only) torch emulates bf16 matmuls, several times slower than float32.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch 2.x; absent: no native bf16
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def own_values():
    """The bench's own number flags, each with the values it takes (train.Values, as train.py declares its settings);
    those that are train.py's settings take the values declared there."""
    import train  # here, not at the top: main sets TQDM_DISABLE before torch (which train imports) loads tqdm

    return {"warmup_steps": train.Values(int, 1, train.MAX_COUNT, why="the first steps allocate memory and pick "
                                                                      "kernels"),
            "eval_limit": train.Values(int, 0, train.MAX_COUNT, why="0: all"),
            "peak_tflops": train.Values(float, 0, low_open=True, why="TFLOP/s"),
            "threads": train.Values(int, 0, train.MAX_COUNT, why="0: torch's choice"),
            "rounds": train.Values(int, 1, train.MAX_COUNT, why="rounds of the compared sides"),
            **{key: train.values_of(key) for key in ("steps", "batch_size", "max_length", "eval_batch_size", "seed")}}


def parser():
    import train

    p, path = train.Parser(prog="tools.bench", description=__doc__.split("\n")[0]), train.path_text
    own = own_values()
    setting = lambda name: train.value_type(own[name])  # noqa: E731  (a number read as train.py reads its flags)
    p.add_argument("--quick", action="store_true",
                   help=f"tiny backbone on the CPU, a few steps, a small eval subset ({QUICK})")
    p.add_argument("--config", choices=sorted(CONFIGS), help="backbone shape (default large)")
    p.add_argument("--decoder", choices=sorted(DECODERS), help="time a causal LM of this Llama shape instead "
                                                               "(random weights; see the module doc)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cuda when there is one)")
    p.add_argument("--steps", type=setting("steps"),
                   help=f"timed training steps per measurement (default {DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=setting("warmup_steps"),
                   help=f"untimed steps before them (default {DEFAULTS['warmup_steps']})")
    p.add_argument("--batch-size", type=setting("batch_size"), default=32, help="rows per step and run (default 32)")
    p.add_argument("--max-length", type=setting("max_length"), default=None,
                   help="tokens of text per row (default 164, xpe.MAX_LENGTH)")
    p.add_argument("--method", choices=("xpe", "spt"), default="xpe",
                   help="the run set against the peer: xpe against P-tuning (MLP), spt against PEFT prompt tuning")
    p.add_argument("--source", help="training languages, a group or codes (default joshi5)")
    p.add_argument("--targets", default="swh_Latn,kab_Latn",
                   help="the target section's languages: a target run per language and seed, each on its own "
                        "language's rows, as train.py --target trains them (default swh_Latn,kab_Latn)")
    p.add_argument("--eval-languages", help="languages evaluated, a group or codes (default all: 205)")
    p.add_argument("--eval-limit", type=setting("eval_limit"),
                   help="at most this many test sentences per language (default 0: all)")
    p.add_argument("--eval-batch-size", type=setting("eval_batch_size"),
                   help="rows per backbone pass in evaluation, both sides (default 128, train.py's)")
    p.add_argument("--no-eval", action="store_true", help="time training only")
    p.add_argument("--no-peer", action="store_true", help="leave out the peer (PEFT + Trainer): no peft needed")
    p.add_argument("--peak-tflops", type=setting("peak_tflops"), default=None,
                   help="the device's peak for MFU (default: read from the GPU's name; none on the CPU)")
    p.add_argument("--data-dir", type=path,
                   default=os.environ.get("XPE_SIB200_DIR") or str(ROOT.parent / "shared" / "sib200"),
                   help="SIB-200 copy (default env XPE_SIB200_DIR or ../shared/sib200)")
    p.add_argument("--tokenizer", type=path, default=os.environ.get("XPE_E5_DIR") or str(ROOT / ".e5"),
                   help="a folder with XLM-R's tokenizer, e.g. e5-small's (default env XPE_E5_DIR or ./.e5)")
    p.add_argument("--threads", type=setting("threads"),
                   help="CPU threads for torch (default 0: torch's choice; 1 with --quick); 1 is steadier on a "
                        "busy machine")
    p.add_argument("--seed", type=setting("seed"), default=1,
                   help="the first seed; the seeds section adds the next (default 1)")
    p.add_argument("--precision", choices=train.values_of("precision").choices, default="auto",
                   help="of ours and the peer in every section but the precision one, which times both (default auto: "
                        "bf16 on CUDA and on a CPU with native bf16 (AMX or AVX512-BF16), fp32 elsewhere)")
    p.add_argument("--rounds", type=setting("rounds"),
                   help="rounds of the compared sides, in turn, the best of each kept (default 2 on a CPU, 1 on CUDA; "
                        "1 with --quick)")
    return p


def parse_args(argv=None):
    """The flags, each in its range (a UsageError); argparse's own refusals (types, choices) exit 2 themselves."""
    import train
    import xpe
    from xpe import UsageError

    args = parser().parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds is None:
        args.rounds = 1 if (args.device or "cuda").startswith("cuda") else 2
    for key, values in own_values().items():  # max_length None: xpe.MAX_LENGTH; peak_tflops None: from the GPU
        if getattr(args, key) is not None and not values.holds(getattr(args, key)):
            raise UsageError(f"--{key.replace('_', '-')} must be {values.words()}, got "
                             f"{xpe.value_text(getattr(args, key))}")
    if args.threads > (os.cpu_count() or 1):  # torch would start them at the first parallel step
        raise UsageError(f"--threads {args.threads}: this machine has {os.cpu_count() or 1} CPUs; use at most that")
    if not train.values_of("seed").holds(args.seed + 1):  # the seeds section trains the next seed too
        raise UsageError(f"--seed {args.seed}: the seeds section trains seed {args.seed + 1} too, and a seed must be "
                         f"{train.values_of('seed').words()}: use a smaller --seed")
    if not args.no_peer and args.seed > NUMPY_SEEDS:  # the Trainer seeds numpy with it
        raise UsageError(f"--seed {args.seed}: the peer's Trainer seeds numpy, and numpy takes at most {NUMPY_SEEDS}: "
                         f"use a smaller --seed, or --no-peer")
    return args


def peak_tflops(name):
    """The dense bf16 peak of a GPU from its name (torch.cuda.get_device_name), or None when unknown."""
    return next((peak for words, peak in PEAKS if all(w.lower() in name.lower() for w in words)), None)


def visible_devices(device, visible):
    """CUDA_VISIBLE_DEVICES that leaves only `device` (cuda, cuda:1) of those now visible (None: all)."""
    index = int(device.partition(":")[2] or 0)
    ids = visible.split(",") if visible else [str(i) for i in range(index + 1)]
    if index >= len(ids):
        from xpe import UsageError
        raise UsageError(f"--device {device}: only {len(ids)} GPU(s) are visible")
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
    os.environ["TQDM_DISABLE"] = "1"  # before tqdm's import (torch's brings it): train.fit's bars would interleave
    from xpe import UsageError

    try:
        args = parse_args(argv)
        return run(args, *prepare(args))
    except UsageError as e:
        print(f"tools.bench: error: {e}", file=sys.stderr)
        return 2


def prepare(args):
    """(device, peak, train_langs, train_rows, test_rows, target_rows): every input checked and read, before
    anything is built or timed."""
    one_gpu = re.fullmatch(r"cuda(:[0-9]+)?", args.device or "cuda")
    if one_gpu:
        # before torch sees CUDA: only the chosen GPU is visible (as cuda:0), to both sides alike
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(args.device or "cuda",
                                                             os.environ.get("CUDA_VISIBLE_DEVICES"))
    import torch

    import data
    import xpe
    device = xpe.pick_device("cuda" if args.device and one_gpu else args.device)
    peak = args.peak_tflops if args.peak_tflops is not None else \
        peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if device.type == "cuda" and peak is None:
        raise xpe.UsageError(f"no known peak for {torch.cuda.get_device_name(device)}: pass --peak-tflops with its "
                             f"dense bf16 TFLOP/s")
    if not args.no_peer:
        try:
            import peft  # noqa: F401  (the peer side)
            from transformers import Trainer  # noqa: F401  (needs accelerate, which peft brings)
        except ImportError as e:
            raise xpe.UsageError(f"the peer side needs peft and accelerate ({e}): pip install peft, or leave the "
                                 f"peer out with --no-peer") from None
    args.max_length = args.max_length or xpe.MAX_LENGTH
    if not any((Path(args.tokenizer) / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise xpe.UsageError(f"no tokenizer in {args.tokenizer}; pass --tokenizer with a folder holding XLM-R's "
                             f"tokenizer (e5-small's: ../shared/tools/e5small.py) or set XPE_E5_DIR")
    train_langs = data.resolve_languages(args.source)
    eval_langs = [] if args.no_eval else data.resolve_languages(args.eval_languages)
    train_rows = data.load_split(train_langs, "train", args.data_dir)
    target_rows = {lang: data.load_split([lang], "train", args.data_dir) for lang in
                   data.resolve_languages(args.targets)}
    test_rows = [r for lang in eval_langs for r in data.load_split([lang], "test", args.data_dir)
                 [:args.eval_limit or None]]
    if args.threads:
        torch.set_num_threads(args.threads)
    return device, peak, train_langs, train_rows, test_rows, target_rows


@dataclasses.dataclass
class Setup:
    """What every section shares: one random backbone, the data, the batch plan and the clock."""
    args: argparse.Namespace
    device: object
    peak: object
    train_langs: list
    tokenizer: object
    enc_cfg: object
    backbone: object
    common: object                  # train.TrainConfig of every run: steps, batch size, evaluation after the timed steps
    train_ids: list
    train_labels: object
    test_ids: list
    test_labels: list
    statics: list = None            # the pack section's four runs as static prompts, for the eval section
    template: dict = None           # a decoder's text template and label token ids (--decoder)
    target_splits: dict = None      # {language: (train ids, labels, dev ids, labels)} of the target section
    pack_mfu: float = None
    eval_packed: float = None

    @property
    def pad_id(self):
        return self.tokenizer.pad_token_id

    @property
    def steps(self):
        return self.args.warmup_steps + self.args.steps

    def now(self):
        """The one clock of every timing: seconds, once the device has finished what it was given."""
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def plan(self, seed, first=None):
        """The batches of a seed's timed steps (or of steps first..), as train.fit takes them (data.batch_plan)."""
        import data
        first = self.args.warmup_steps if first is None else first
        return list(itertools.islice(data.batch_plan([len(x) for x in self.train_ids], self.args.batch_size, seed,
                                                     first), self.steps - first))

    def configs(self, methods, seeds, **changes):
        import train
        return [dataclasses.replace(self.common, method=m, xpe_frac=r, seed=s, **changes)
                for s in seeds for m, r in train.parse_methods(",".join(methods), None)]


def setup(args, device, peak, train_langs, train_rows, test_rows):
    """The shared Setup; a UsageError when the tokenizer is not XLM-R's or --max-length leaves the backbone's
    positions."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    import data
    import train
    import xpe

    enc_cfg = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                               num_labels=len(data.LABELS), **CONFIGS[args.config])
    steps = args.warmup_steps + args.steps
    # eval_every = steps: the one dev evaluation comes after the timed steps; patience 0: nothing stops early
    common = train.TrainConfig(steps=steps, batch_size=args.batch_size, max_length=args.max_length,
                               eval_batch_size=args.eval_batch_size, eval_every=steps, patience=0, model="bench",
                               precision=xpe.resolve_precision(args.precision, device))
    with torch.device("meta"):  # the position table alone, before a weight is drawn
        shape = XLMRobertaModel(enc_cfg, add_pooling_layer=False)
    train.check_positions(dataclasses.replace(common, model=f"the {args.config} backbone"),
                          xpe.max_text_length(shape, common.prompt_len))
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if len(tokenizer) > enc_cfg.vocab_size or tokenizer.pad_token_id != enc_cfg.pad_token_id:
        raise xpe.UsageError(f"{args.tokenizer} is not XLM-R's tokenizer ({len(tokenizer)} tokens, pad id "
                             f"{tokenizer.pad_token_id})")
    torch.manual_seed(0)  # one random backbone for every measurement, ours and the peer's (bench_peer.make_peer)
    backbone = XLMRobertaModel(enc_cfg, add_pooling_layer=False).requires_grad_(False).to(device)
    test_ids = data.encode(test_rows, tokenizer, args.max_length) if test_rows else []
    return Setup(args, device, peak, train_langs, tokenizer, enc_cfg, backbone, common,
                 data.encode(train_rows, tokenizer, args.max_length), torch.tensor([r.label for r in train_rows]),
                 test_ids, [r.label for r in test_rows])


def fit_seconds(s, cfgs, splits=None):
    """(seconds of the timed steps, runs) of train.fit over fresh runs built from cfgs, as train.py builds them;
    splits: train.fit's rows of their own for target runs."""
    import data
    import train

    folder, marks = Path(tempfile.mkdtemp(prefix="xpe-bench-")), {}

    def on_step(step):
        if step in (s.args.warmup_steps, s.steps):
            marks[step] = s.now()

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # each run's parameter count and end
            # numbered: target runs without an --init folder share their run name
            runs = [train.start_run(cfg, folder / f"{i}-{train.run_name(cfg)}", s.backbone, data.LABELS,
                                    s.train_langs, s.device, template=s.template) for i, cfg in enumerate(cfgs)]
            rows = (s.train_ids, s.train_labels, s.train_ids[:64], s.train_labels[:64])
            splits = splits or {train.data_key(cfg): rows for cfg in cfgs}
            train.fit(runs, splits, s.pad_id, s.device, on_step)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if any(r.progress.ended is train.Ended.NOT_FINITE for r in runs):
        raise RuntimeError("ours: a training loss is not finite")
    return marks[s.steps] - marks[s.args.warmup_steps], runs


def best_of(s, sides):
    """{name: the shortest seconds over --rounds rounds}; sides: {name: () -> seconds}, run in turn each round,
    so that a busy spell of the machine falls on every side alike."""
    best = {}
    for _ in range(s.args.rounds):
        for name, side in sides.items():
            best[name] = min(best.get(name, math.inf), side())
    return best


def flops(s, cfgs):
    """Model FLOPs of the timed steps of these runs (module doc), each on its own seed's batches."""
    import data
    import xpe

    d, hidden = s.enc_cfg.hidden_size, s.common.encoder_hidden
    mlp_weights, head_weights = d * hidden + hidden ** 2 + hidden * d, d * d + d * len(data.LABELS)
    lengths, total = [len(x) for x in s.train_ids], 0
    for cfg in cfgs:
        plan = s.plan(cfg.seed)
        n_xpe = xpe.split_prompt(cfg.method, cfg.xpe_frac, cfg.prompt_len)[1]
        total += step_flops([max(lengths[i] for i in b) for b in plan], [len(b) for b in plan], s.enc_cfg,
                            cfg.prompt_len, n_xpe, mlp_weights, head_weights)
    return total


def utilisation(s, total, seconds):
    rate = total / seconds / 1e12
    mfu = f"{100 * rate / s.peak:.1f} % of {s.peak:g} TFLOP/s" if s.peak else "n/a (no --peak-tflops on the CPU)"
    return f"{rate:.4g} TFLOP/s, MFU {mfu}"


def pack_section(s):
    """The four methods of one seed as one pack against the same four runs one after another."""
    pack = s.configs(PACK, [s.args.seed])
    fit_seconds(s, pack)  # the process warm-up (allocator, kernels), untimed
    def packed():
        seconds, runs = fit_seconds(s, pack)
        s.statics = [r.model.to_static() for r in runs]
        return seconds

    times = best_of(s, {"packed": packed, "alone": lambda: sum(fit_seconds(s, [cfg])[0] for cfg in pack)})
    run_steps, work = len(pack) * s.args.steps, flops(s, pack)
    print(f"train packed ({len(pack)} runs, one step for all): {run_steps / times['packed']:.4g} run-steps/s, "
          f"{utilisation(s, work, times['packed'])}")
    print(f"train one after another ({len(pack)} runs): {run_steps / times['alone']:.4g} run-steps/s, "
          f"{utilisation(s, work, times['alone'])}")
    s.pack_mfu = 100 * work / times["packed"] / (s.peak * 1e12) if s.peak else None
    return {"packed / one after another": times["alone"] / times["packed"]}


SWEEP = (5e-3, 1e-3, 5e-4, 5e-5)  # --lr-prompt values of the sweep section: one method, four runs


def sweep_section(s):
    """A sweep (xpe, four --lr-prompt values, one seed) as one pack against the same runs one after another."""
    import xpe

    sweep = [dataclasses.replace(cfg, lr_prompt=lr, lr_spt=lr) for cfg in s.configs(["xpe"], [s.args.seed])
             for lr in SWEEP]
    times = best_of(s, {"packed": lambda: fit_seconds(s, sweep)[0],
                        "alone": lambda: sum(fit_seconds(s, [cfg])[0] for cfg in sweep)})
    n = len(sweep) * s.args.steps
    values = ",".join(map(xpe.value_text, SWEEP))
    print(f"sweep packed (xpe, --lr-prompt {values}): {n / times['packed']:.4g} run-steps/s")
    print(f"sweep one after another: {n / times['alone']:.4g} run-steps/s")
    return {"sweep pack / one after another": times["alone"] / times["packed"]}


def seeds_section(s):
    """Two seeds of the four methods packed into the same steps against one seed's pack after the other."""
    seeds = s.configs(PACK, [s.args.seed, s.args.seed + 1])
    together = fit_seconds(s, seeds)[0]
    in_turn = sum(fit_seconds(s, [c for c in seeds if c.seed == seed])[0] for seed in (s.args.seed, s.args.seed + 1))
    n = len(seeds) * s.args.steps
    print(f"seeds packed (2 seeds x {len(PACK)} runs, --pack-seeds): {n / together:.4g} run-steps/s")
    print(f"seeds in turn (2 seeds x {len(PACK)} runs, the default): {n / in_turn:.4g} run-steps/s")
    return {"seeds packed / in turn": in_turn / together}


def target_splits(s, target_rows):
    """Each target language's rows as train.fit takes them, cut to the shortest language's count (a pack's runs
    share their steps and evaluations, so their splits are one length, as SIB-200's are)."""
    import torch

    import data

    n = min(len(rows) for rows in target_rows.values())
    splits = {}
    for lang, rows in target_rows.items():
        ids, labels = data.encode(rows[:n], s.tokenizer, s.args.max_length), [r.label for r in rows[:n]]
        splits[lang] = (ids, torch.tensor(labels), ids[:64], torch.tensor(labels[:64]))
    return splits


def target_section(s):
    """Target runs (dual:0.7, a run per language and seed, each on its own language's rows) as one pack against
    the same runs one after another: the packs of train.py --target LANGS --init RUN RUN."""
    cfgs = [dataclasses.replace(c, target=lang) for lang in s.target_splits
            for c in s.configs(["dual:0.7"], [s.args.seed, s.args.seed + 1])]
    times = best_of(s, {"packed": lambda: fit_seconds(s, cfgs, s.target_splits)[0],
                        "alone": lambda: sum(fit_seconds(s, [c], s.target_splits)[0] for c in cfgs)})
    n, langs = len(cfgs) * s.args.steps, len(s.target_splits)
    print(f"target runs packed ({langs} languages x 2 seeds, each on its own rows, one step for all): "
          f"{n / times['packed']:.4g} run-steps/s")
    print(f"target runs one after another ({len(cfgs)} runs): {n / times['alone']:.4g} run-steps/s")
    return {"target pack / one after another": times["alone"] / times["packed"]}


def predict_seconds(s, models, ids, precision=None):
    import xpe
    xpe.predict(models, ids[:s.args.eval_batch_size], s.pad_id, s.args.eval_batch_size, precision=precision)  # warm
    start = s.now()
    xpe.predict(models, ids, s.pad_id, s.args.eval_batch_size, precision=precision)
    return s.now() - start


def eval_section(s, statics):
    """Zero-shot scoring of the four runs' static prompts in one pass over the test rows against a pass per run."""
    precision = s.common.precision
    packed = predict_seconds(s, statics, s.test_ids, precision)
    each = sum(predict_seconds(s, [m], s.test_ids, precision) for m in statics)
    n = len(s.test_ids)
    print(f"eval one pass ({len(statics)} runs, {n} sentences, batch {s.args.eval_batch_size}): {packed:.3f} s, "
          f"{n * len(statics) / packed:.4g} sentence-runs/s")
    print(f"eval a pass per run ({len(statics)} runs): {each:.3f} s, {n * len(statics) / each:.4g} sentence-runs/s")
    s.eval_packed = packed
    return {"eval one pass / a pass per run": each / packed}


def peer_section(s):
    """One run of ours against PEFT under the Trainer, stock and without its NaN filter, each a fresh peer."""
    from tools import bench_peer
    import xpe
    mine = s.configs([s.args.method], [s.args.seed])
    full_plan = s.plan(s.args.seed, first=0)
    kept = {}

    def ours():
        seconds, kept["runs"] = fit_seconds(s, mine)
        return seconds

    def peer(nan_filter):
        kept["trainer"], seconds = bench_peer.train_peer(bench_peer.make_peer(s, mine[0]), mine[0], full_plan, s,
                                                         nan_filter)
        return seconds

    times = best_of(s, {"ours": ours, "stock": lambda: peer(True), "unfiltered": lambda: peer(False)})
    print(f"ours ({s.args.method}): {xpe.describe_parameters(kept['runs'][0].model)}; peer: "
          f"{bench_peer.describe_peer(kept['trainer'].model)}")
    plan = s.plan(s.args.seed)
    sentences, tokens = sum(len(b) for b in plan), sum(len(s.train_ids[i]) for b in plan for i in b)
    for side, key in (("ours train (train.fit)", "ours"), ("peer train (Trainer, NaN filter on, as the authors "
                                                           "ran it)", "stock"),
                      ("peer train (Trainer, logging_nan_inf_filter=False)", "unfiltered")):
        seconds = times[key]
        print(f"{side}: {s.args.steps / seconds:.4g} steps/s, {sentences / seconds:.4g} sentences/s, "
              f"{tokens / seconds:.4g} tokens/s (text, padding not counted), {utilisation(s, flops(s, mine), seconds)}")
    ratios = {"ours / stock Trainer": times["stock"] / times["ours"],
              "ours / Trainer without NaN filter": times["unfiltered"] / times["ours"]}
    if s.test_ids:
        ours_eval = predict_seconds(s, [kept["runs"][0].model.to_static()], s.test_ids, s.common.precision)
        peer_eval = bench_peer.eval_peer(kept["trainer"], s)
        print(f"ours eval (1 run): {len(s.test_ids) / ours_eval:.4g} sentences/s; peer eval (Trainer.predict): "
              f"{len(s.test_ids) / peer_eval:.4g} sentences/s")
        ratios["ours eval / Trainer.predict"] = peer_eval / ours_eval
    return ratios


def precision_section(s):
    """One run's training and scoring in float32 and in bf16 (autocast), on the same batches."""
    import xpe
    one = {p: s.configs([s.args.method], [s.args.seed], precision=p) for p in ("fp32", "bf16")}
    rows = (s.test_ids or s.train_ids)[:s.args.eval_batch_size * (32 if s.device.type == "cuda" else 4)]

    def side(precision):
        seconds, runs = fit_seconds(s, one[precision])
        return seconds, predict_seconds(s, [runs[0].model.to_static()], rows, precision)

    best = {}
    for _ in range(s.args.rounds):
        for precision in ("fp32", "bf16"):
            timed = side(precision)
            best[precision] = tuple(min(a, b) for a, b in zip(best.get(precision, (math.inf,) * 2), timed))
    for name, (train_s, score_s) in best.items():
        print(f"precision {name}: train {s.args.steps / train_s:.4g} steps/s, scoring {len(rows) / score_s:.4g} "
              f"sentences/s")
    print(f"precision: --precision auto here is {xpe.resolve_precision('auto', s.device)}; native bf16 matmuls: "
          f"{native_bf16(s.device)}")
    return {"bf16 / fp32 train": best["fp32"][0] / best["bf16"][0],
            "bf16 / fp32 scoring": best["fp32"][1] / best["bf16"][1]}


def memory_section(s):
    """Peak resident memory of a process training the four methods as one pack against one training one run."""
    if s.device.type != "cpu":
        return {}
    shape = "quick" if s.args.config == "quick" else "small"
    peaks = {n: memory_probe_peak(s, n, shape) for n in (1, len(PACK))}
    print(f"peak memory ({'the toy' if shape == 'quick' else 'e5-small'} shape, a process "
          f"training {s.args.steps + s.args.warmup_steps} steps, {s.common.precision}): one run "
          f"{peaks[1] / 2**20:.3g} GiB, {len(PACK)} runs packed {peaks[len(PACK)] / 2**20:.3g} GiB")
    return {"peak memory pack / one run": peaks[len(PACK)] / peaks[1]}


def memory_probe_peak(s, runs, shape):
    """ru_maxrss (KiB) of a fresh process that trains `runs` of PACK on the `shape` backbone (memory_probe)."""
    a = s.args
    argv = [str(runs), shape, a.data_dir, a.tokenizer, a.source, str(a.steps + a.warmup_steps), s.common.precision,
            str(a.threads)]
    out = subprocess.run([sys.executable, "-c", "import sys; from tools import bench; bench.memory_probe(sys.argv[1:])", *argv],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({runs} runs) failed: {out.stderr.strip()[-2000:]}")
    return int(out.stdout.split()[-1])


def memory_probe(argv):
    """In its own process: train `runs` of PACK for `steps` on a random backbone of `shape`; print ru_maxrss."""
    import resource

    import torch
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    import data
    import train

    runs, shape, data_dir, tokenizer_dir, source, steps, precision, threads = argv
    if int(threads):
        torch.set_num_threads(int(threads))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    langs = data.resolve_languages(source)
    rows = data.load_split(langs, "train", data_dir)
    ids, labels = data.encode(rows, tokenizer), torch.tensor([r.label for r in rows])
    torch.manual_seed(0)
    backbone = XLMRobertaModel(XLMRobertaConfig(vocab_size=250037, max_position_embeddings=514, type_vocab_size=1,
                                                **CONFIGS[shape]), add_pooling_layer=False).requires_grad_(False)
    cfg = train.TrainConfig(steps=int(steps), eval_every=int(steps), patience=0, model="bench", precision=precision)
    folder = Path(tempfile.mkdtemp(prefix="xpe-bench-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cfgs = [dataclasses.replace(cfg, method=m, xpe_frac=r, seed=1)
                    for m, r in train.parse_methods(",".join(PACK[:int(runs)]), None)]
            members = [train.start_run(c, folder / train.run_name(c), backbone, data.LABELS, langs,
                                       torch.device("cpu")) for c in cfgs]
            splits = {train.data_key(cfg): (ids, labels, ids[:64], labels[:64])}
            train.fit(members, splits, tokenizer.pad_token_id, torch.device("cpu"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def decoder_backbone(args, device, vocab, precision):
    """A random causal LM of the --decoder shape, frozen, its weights in bf16 under bf16 (as xpe.load_backbone)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=True,
                         **DECODERS[args.decoder])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16 if precision == "bf16" else torch.float32)
    return model.requires_grad_(False).eval(), config


def decoder_run(args, device, peak, train_langs, train_rows, test_rows):
    """--decoder: one run, the four methods packed against one after another, and scoring's peak memory at a 32k and
    a 256k vocabulary."""
    import torch
    from transformers import AutoTokenizer

    import data
    import train
    import xpe

    precision = xpe.resolve_precision(args.precision, device)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    template = {"text_template": xpe.text_template(xpe.DEFAULT_TEMPLATE, data.LABELS), "chat_template": False,
                "label_token_ids": list(range(100, 100 + len(data.LABELS)))}
    rows = data.encode(train_rows, tokenizer, args.max_length, template)
    steps = args.warmup_steps + args.steps
    common = train.TrainConfig(steps=steps, batch_size=args.batch_size, max_length=args.max_length,
                               eval_batch_size=args.eval_batch_size, eval_every=steps, patience=0, model="bench",
                               precision=precision)
    vocab = DECODER_VOCABS[0]
    backbone, config = decoder_backbone(args, device, vocab, precision)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"tools.bench: decoder {args.decoder} (Llama, {', '.join(f'{k} {v}' for k, v in DECODERS[args.decoder].items())}"
          f", random weights), device {device} ({where}), torch {torch.__version__}, precision {precision}, best of "
          f"{args.rounds} round(s); batch {args.batch_size} per run, rows of at most {args.max_length} tokens "
          f"through the default template")
    s = Setup(args, device, peak, train_langs, tokenizer, config, backbone, common,
              [[i % vocab for i in r] for r in rows], torch.tensor([r.label for r in train_rows]), [], [],
              template=template)
    pack = s.configs(PACK, [args.seed])
    fit_seconds(s, pack[-1:])  # the process warm-up, untimed
    one = best_of(s, {"one": lambda: fit_seconds(s, pack[-1:])[0]})["one"]
    times = best_of(s, {"packed": lambda: fit_seconds(s, pack)[0],
                        "alone": lambda: sum(fit_seconds(s, [cfg])[0] for cfg in pack)})
    n = len(pack) * args.steps
    print(f"decoder train one run (xpe): {args.steps / one:.4g} steps/s")
    print(f"decoder train packed ({len(pack)} runs, one step for all): {n / times['packed']:.4g} run-steps/s")
    print(f"decoder train one after another ({len(pack)} runs): {n / times['alone']:.4g} run-steps/s")
    ratios = {"decoder packed / one after another": times["alone"] / times["packed"]}
    del backbone, s
    scoring = [r for r in (test_rows or train_rows)][:args.eval_limit or None]
    score_rows = data.encode(scoring, tokenizer, args.max_length, template)
    peaks = {}
    for vocab in DECODER_VOCABS:
        backbone, _ = decoder_backbone(args, device, vocab, precision)
        model = xpe.build_classifier(backbone, train.prompt_config(common), template).to_static()
        ids = [[i % vocab for i in r] for r in score_rows]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        xpe.predict([model], ids, tokenizer.pad_token_id, args.eval_batch_size, precision=precision)
        widest = max(map(len, ids)) + common.prompt_len
        full = min(args.eval_batch_size, len(ids)) * widest * vocab * 4  # float32 logits of every position
        if device.type == "cuda":
            peaks[vocab] = torch.cuda.max_memory_allocated(device) - base
            print(f"decoder scoring, vocabulary {vocab}: {peaks[vocab] / 2 ** 20:.1f} MiB above the weights at its "
                  f"peak ({len(ids)} rows, {args.eval_batch_size} a pass); the full-vocabulary logits of a pass "
                  f"would take {full / 2 ** 20:.1f} MiB more")
        else:
            print(f"decoder scoring, vocabulary {vocab}: peak memory is measured on CUDA only; the full-vocabulary "
                  f"logits of a pass, which the read-out never forms, would take {full / 2 ** 20:.1f} MiB")
        del backbone, model
    if peaks:
        ratios["decoder scoring memory 256k / 32k vocabulary"] = peaks[DECODER_VOCABS[1]] / peaks[DECODER_VOCABS[0]]
    print("ratios: " + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()))
    return 0


def run(args, device, peak, train_langs, train_rows, test_rows, target_rows):
    import torch

    if args.decoder:
        return decoder_run(args, device, peak, train_langs, train_rows, test_rows)
    s = setup(args, device, peak, train_langs, train_rows, test_rows)
    s.target_splits = target_splits(s, target_rows)
    shape = ", ".join(f"{k} {v}" for k, v in CONFIGS[args.config].items())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"tools.bench: device {device} ({where}), torch {torch.__version__}, config {args.config} ({shape}), "
          f"precision {s.common.precision} (--precision {args.precision}), best of {args.rounds} round(s)")
    plan, lengths = s.plan(args.seed), [len(x) for x in s.train_ids]
    print(f"data: train {args.source} ({len(train_langs)} languages, {len(train_rows)} rows), batch {args.batch_size} "
          f"per run, max length {args.max_length}; {args.steps} timed steps after {args.warmup_steps} untimed, mean "
          f"padded width {sum(max(lengths[i] for i in b) for b in plan) / len(plan):.1f} + {s.common.prompt_len} "
          f"prompt")
    print("FLOPs per run-step = B*L*(16*T*d^2 + 8*T*d*f + 12*T^2*d) + 6*B*(P_x*M + H), T = padded width + P "
          "(frozen backbone: forward + input-gradient backward; trainable prompt MLP and head: 6 per weight)")
    ratios = pack_section(s)
    ratios.update(sweep_section(s))
    ratios.update(seeds_section(s))
    ratios.update(target_section(s))
    if s.test_ids:
        ratios.update(eval_section(s, s.statics))
    if not args.no_peer:
        ratios.update(peer_section(s))
    ratios.update(precision_section(s))
    ratios.update(memory_section(s))
    if device.type == "cuda":  # issue 10's goals, set for one H100
        goals = [f"four methods packed {ratios['packed / one after another']:.2f}x the run-steps/s of one after "
                 f"another (>= 2.5x)", f"packed MFU {s.pack_mfu:.1f} % (>= 40 %)"]
        if s.test_ids and not args.eval_limit and args.eval_languages == "all":
            goals.append(f"four runs over all {len(s.test_ids)} test sentences in {s.eval_packed:.1f} s (<= 40 s)")
        print("goals (one H100): " + "; ".join(goals))
    print("ratios: " + ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
