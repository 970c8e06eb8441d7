"""Shared fixtures: the real SIB-200 copy and the e5-small folder, found through environment variables.

Outside CI a missing asset skips the tests that need it; under CI (CI set) it fails them.
"""
import csv
import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURE_SIB200 = ROOT / "tests" / "fixtures" / "sib200"
EXTRAS = {"peft": "pip install peft", "matplotlib": "pip install -r requirements-plot.txt"}


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
