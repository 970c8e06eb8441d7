"""Shared fixtures: the real SIB-200 copy and the e5-small folder, found through environment variables; the tiers.

Outside CI a missing asset skips the tests that need it; under CI (CI set) it fails them.

Two tiers: the fast one is the README's test command (`-m "not slow"`, a few minutes on 2 CPU cores); the slow one
(`-m slow`), which CI runs too, holds every test of the real encoder (it trains e5-small) and the long kill chains
and multi-process calls listed in SLOW, each of whose behaviours a faster test in the fast tier also holds.
"""
import csv
import importlib
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURE_SIB200 = ROOT / "tests" / "fixtures" / "sib200"
# Tests of the slow tier besides those of e5-small, by node id (a parametrised test's id names one case), with the
# seconds each took on the 2-core AMD EPYC (2026-12-07) and the fast test that keeps its behaviour in the fast tier.
SLOW = {
    "test_train.py::test_killed_pack_resumes_to_the_same_prompts": "53 s + 13 s; test_killed_run_resumes_to_the_same_prompt",
    "test_train.py::test_a_sweep_trains_every_value_in_packs_each_run_as_it_would_alone": "48 s; test_each_packed_run_trains_as_it_would_alone",
    "test_train.py::test_a_call_spread_over_torchrun_processes_writes_the_runs_of_one_process": "2 x 20 s; test_rank_and_world_come_from_torchrun_or_an_srun_step and the share tests",
    "test_train.py::test_a_run_whose_loss_overflows_leaves_the_pack_and_the_others_go_on": "17 s; the kill walk's overflow cases",
    "test_train.py::test_a_kill_after_any_write_resumes_to_the_same_runs[sweep]": "16 s; [seeds-packed]",
    "test_train.py::test_a_kill_after_any_write_resumes_to_the_same_runs[seeds-in-turn]": "14 s; [seeds-packed]",
    "test_train.py::test_a_kill_after_any_write_of_a_packed_target_call_resumes_to_the_same_runs": "13 s; the source walk",
    "test_train.py::test_patience_0_turns_early_stopping_off": "12 s; test_early_stopping_follows_the_authors_callback",
    "test_train.py::test_the_run_records_the_precision_it_trained_in[False-auto-fp32]": "11 s; the bf16 cases",
    "test_train.py::test_the_run_records_the_precision_it_trained_in[True-auto-fp32]": "9 s; the bf16 cases",
    "test_train.py::test_target_call_in_two_processes_writes_the_runs_of_one": "10 s; test_rank_and_world_come_from_torchrun_or_an_srun_step",
    "test_train.py::test_killed_packed_target_call_resumes_to_the_same_prompts": "8 s; test_killed_run_resumes_to_the_same_prompt",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[llama]": "28 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of llama",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[qwen2]": "35 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of qwen2",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[gemma2]": "12 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of gemma2",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[bloom]": "26 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of bloom",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[opt]": "15 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of opt",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[gemma3]": "30 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of gemma3",
    "test_train.py::test_a_decoder_trains_resumes_identical_after_a_kill_and_scores[cohere]": "35 s; its [gpt2], and test_xpe.py's and test_peft_adapters.py's decoder tests of cohere",
}
E5_FIXTURES = {"e5_dir", "e5_run"}  # a test that takes one of these is in the slow tier
EXTRAS = {"peft": "pip install peft", "matplotlib": "pip install -r requirements-plot.txt",
          "tensorboard": "pip install -r requirements-plot.txt"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the slow tier (e5-small training, long kill chains): pytest -m slow")


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier: the tests of e5-small and those SLOW names; a name in SLOW that matches no test is an
    error, so that a renamed test cannot drop into the fast tier unnoticed."""
    matched = set()
    for item in items:
        node = item.nodeid.split("tests/", 1)[-1]
        names = [name for name in SLOW if node == name or node.startswith(name + "[")]
        matched.update(names)
        if names or E5_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    whole_files = {i.nodeid.split("::")[0] for i in items} if not config.option.keyword and not any(
        "::" in arg for arg in config.args) else set()  # only where every test of a file was collected
    unmatched = [name for name in SLOW if "tests/" + name.split("::")[0] in whole_files and name not in matched]
    if unmatched:
        raise pytest.UsageError(f"tests/conftest.py SLOW names no test: {', '.join(unmatched)}")


def require_extra(module):
    """An optional extra's module: without it the test skips, and under CI, which installs the extras, it fails."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = module.split(".")[0]
        message = f"{extra} is not installed ({EXTRAS[extra]})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)


def cpu_bf16(monkeypatch, amx, avx512_bf16):
    """Make torch.cpu report these bf16 capabilities."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


def outside(values, as_text=False):
    """Values just out of a train.Values' range, for the walks that it drives: each bound's neighbour on the far
    side, nan and inf (a float), a choice it lacks, a blank or a text its grammar refuses (a text); as JSON values also
    the wrong types. as_text: as a flag or a CSV cell writes them (no wrong types)."""
    found = []
    if values.kind is int:
        found += [values.low - 1] if math.isfinite(values.low) else []
        found += [values.high + 1] if math.isfinite(values.high) else []
        found += [] if as_text else [1.5, True, "1"]
    elif values.kind is float:
        found += [math.nan, math.inf]
        if math.isfinite(values.low):
            found.append(values.low if values.low_open else values.low - max(abs(values.low), 1) * 1e-9)
        if math.isfinite(values.high):
            found.append(values.high if values.high_open else values.high + max(abs(values.high), 1) * 1e-9)
        found += [] if as_text else [True, "0.5", None]
    elif values.kind is str:
        found += (["nope"] if values.choices else [" "] if values.filled else ["no placeholder"] if values.grammar
                  else []) + ([] if as_text else [5, None])
    else:
        found += [] if as_text else ["true", 1, None]
    return [repr(v) if as_text and isinstance(v, float) else str(v) if as_text else v for v in found]


def inside(values):
    """The values at a train.Values' edges that it holds, and one between."""
    if values.kind is bool:
        return [False, True]
    if values.kind is str:
        return list(values.choices) or (["{text}", "topic of {text}:"] if values.grammar else ["x", "a b"]) + (
            [] if values.filled else [""])
    low = values.low if math.isfinite(values.low) else -1e9
    high = values.high if math.isfinite(values.high) else 1e9
    ends = [low] * (not values.low_open) + [high] * (not values.high_open) + [values.kind((low + high) / 2)
                                                                             if values.kind is float else low + 1]
    return [values.kind(x) if values.kind is float else int(x) for x in ends]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _asset(variable, default, probe, what):
    path = Path(os.environ.get(variable) or default)
    if not (path / probe).exists():
        message = f"{what} not found at {path} (set {variable})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def sib200_dir():
    return _asset("XPE_SIB200_DIR", ROOT.parent / "shared" / "sib200", "eng_Latn/train.tsv", "SIB-200 copy")


@pytest.fixture(scope="session")
def e5_dir():
    return _asset("XPE_E5_DIR", ROOT / ".e5", "model.safetensors", "e5-small folder (../shared/tools/e5small.py)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random XLM-R with a word-level tokenizer over the fixture's words, saved as a hub folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    words = set()
    for path in sorted(FIXTURE_SIB200.glob("*/*.tsv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                words.update(row[-1].lower().split())
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"] + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    out = tmp_path_factory.mktemp("tiny-xlmr")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2)
    model = XLMRobertaModel(config)
    # Weights drawn here, not by transformers' initialiser, so that they are the same in every version.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "LayerNorm.weight" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    return out


# Tiny random decoders, one a family whose quirks the read-out must meet: RoPE (Llama, Qwen2), inputs_embeds scaled
# inside the model and final logit softcapping (Gemma 2), ALiBi without a position table (BLOOM), an absolute position
# table (GPT-2; OPT's counts from an offset of 2); Gemma 3's text model (Gemma-3-1B) and Cohere (Aya Expanse: its
# logits are scaled).
DECODER_FAMILIES = ("llama", "qwen2", "gemma2", "bloom", "gpt2", "opt", "gemma3", "cohere")
DECODER_BOS = {"llama", "gemma2", "gemma3"}  # tokenizers that put <s> in front, as Llama's and Gemma's do


def decoder_config(family, vocab_size):
    import transformers

    small = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    if family in ("llama", "qwen2", "gemma2", "gemma3", "cohere"):
        kind = dict(llama=transformers.LlamaConfig, qwen2=transformers.Qwen2Config, gemma2=transformers.Gemma2Config,
                    gemma3=transformers.Gemma3TextConfig, cohere=transformers.CohereConfig)
        extra = (dict(head_dim=8, final_logit_softcapping=3.0, query_pre_attn_scalar=8) if family.startswith("gemma")
                 else dict(logit_scale=0.25) if family == "cohere" else {})
        return kind[family](hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=512, **extra, **small)
    if family == "bloom":
        return transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **small)
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **small)
    return transformers.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                  word_embed_proj_dim=32, max_position_embeddings=128, **small)


def save_tiny_decoder(family, out, dropout=0.0):
    """A tiny random causal LM of a family, saved as a hub folder with a tokenizer over the fixture's texts, the labels
    and the default template: word-level with <s> in front for Llama and Gemma, byte-level BPE (trained here) as
    GPT-2, BLOOM, OPT and Qwen2 have it (transformers 5 rebuilds a Qwen2 tokenizer as byte-level BPE whatever
    tokenizer.json holds). Weights are drawn here, the same in every transformers version."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    import data
    import xpe

    template = xpe.text_template(xpe.DEFAULT_TEMPLATE, data.LABELS)
    texts = [template] * 20 + [" ".join(data.LABELS)] * 50  # so that each label word is one token
    for path in sorted(FIXTURE_SIB200.glob("*/*.tsv")):
        with open(path, newline="", encoding="utf-8") as f:
            texts += [row[-1] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    if family in DECODER_BOS:
        words = sorted({w for t in texts for w in t.lower().split()})
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<unk>"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(out)
    vocab = tok.get_vocab()
    config = decoder_config(family, len(vocab))
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # norms: around 1 (Gemma's norms add 1 themselves; 0 there is 1)
                p.fill_(0.0 if family.startswith("gemma") else 1.0)
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))  # large enough that the text moves the logits
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_decoder_dirs(tmp_path_factory):
    """{family: folder} of the tiny random decoders, each made once a session when first asked for."""
    class Folders(dict):
        def __missing__(self, family):
            self[family] = save_tiny_decoder(family, tmp_path_factory.mktemp(f"tiny-{family}"))
            return self[family]
    return Folders()


@pytest.fixture(scope="session")
def e5_run(tmp_path_factory, e5_dir, sib200_dir):
    """The issue's 300-step run on e5-small (lr raised to 1e-3 so it learns in 300 steps); shared by tests."""
    import time

    import train

    out = tmp_path_factory.mktemp("e5") / "xpe-eng_Latn-s42"
    start = time.time()
    code = train.main(["--model", str(e5_dir), "--data-dir", str(sib200_dir), "--method", "xpe", "--source",
                       "eng_Latn", "--steps", "300", "--lr", "1e-3", "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out, time.time() - start


@pytest.fixture(scope="session")
def quiet_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny XLM-R with its own dropout off: with --encoder-dropout 0 --head-dropout 0, training is deterministic
    whatever else shares the random stream (packed runs)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("tiny-xlmr-quiet")
    for path in tiny_model_dir.iterdir():
        shutil.copy(path, out / path.name)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return out


def argparse_refusals(parser, before=()):
    """[(argv, flag)]: every refusal that argparse itself makes of parser's flags: an unknown flag, every flag that
    takes a value given none, every typed or choice flag given a value it does not take, every file or folder
    given an empty name (argv after `before`, e.g. a subcommand and its positionals)."""
    import train

    cases = [([*before, "--no-such-flag"], "--no-such-flag")]
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:  # positionals; switches and --help take no value
            continue
        flag = action.option_strings[-1]
        if action.nargs not in ("*", "?"):
            cases.append(([*before, flag], flag))
        if action.choices or action.type not in (None, str, train.path_text):
            cases.append(([*before, flag, "no-such-value"], flag))
        if action.type is train.path_text:
            cases += [([*before, flag, ""], flag), ([*before, flag, " "], flag)]
    return cases


def refused_in_one_line(main, argv, capsys, prog):
    """main(argv) exits 2 with one line `prog: error: ...` (prog: the command's name, or the start of it); that line."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(prog) and ": error: " in err[0], (argv, err)
    return err[0]


def flags_not_given(line, argv):
    """The flags a message names that argv does not give (a message names the cause the user can act on, never a
    flag the call did not use, but for what to add: each command's ADVICE)."""
    import re

    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)) - given
