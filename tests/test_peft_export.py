"""evaluate.py --export-peft: peft loads the export by the printed line alone and gives our logits; bad input."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file

import data
import evaluate
import train
import xpe
from conftest import FIXTURE_SIB200, ROOT

# Every field of peft 0.14.0's PromptTuningConfig (dataclasses.fields): what 0.14 reads without a warning.
PEFT_014_FIELDS = {"task_type", "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "inference_mode",
                   "num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads",
                   "num_layers", "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path",
                   "tokenizer_kwargs"}


def require_peft():
    if importlib.util.find_spec("peft") is None:
        message = "peft is not installed (pip install peft): the export is checked by loading it with peft"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("peft-export") / "run"
    code = train.main(["--model", str(tiny_model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", "eng_Latn",
                       "--steps", "8", "--batch-size", "4", "--eval-every", "4", "--lr", "1e-2",
                       "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out


def export(run, out, capsys):
    """Export through evaluate.main; return the Python line it prints for loading the folder."""
    code = evaluate.main(["--runs", str(run), "--export-peft", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    (line,) = printed.out.strip().splitlines()
    assert line.startswith(f"wrote {run} as a PEFT prompt-tuning adapter")
    return line.split("load it with: ", 1)[1]


def load_as_a_user(line):
    """Run the printed line, as a user pastes it: peft and transformers, none of our code. (model, peft's warnings)"""
    namespace = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(line, namespace)
    return namespace["model"], [str(w.message) for w in caught if "peft" in w.filename]


def assert_peft_gives_our_logits(run, line, languages, data_dir):
    tensors, config = xpe.read_artifact(run)
    theirs, peft_warnings = load_as_a_user(line)
    assert not theirs.training
    backbone, tokenizer = xpe.load_backbone(config["model"])
    ours, _ = xpe.load_artifact(run, backbone)
    rows = [r for lang in languages for r in data.load_split([lang], "test", data_dir)[:2]]
    # Neither side is handed a prompt: peft prepends its prompt_embeddings, ours its static prompt.
    batch = tokenizer([r.text for r in rows], padding=True, truncation=True, max_length=config["max_length"],
                      return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padded rows: both sides must extend the mask alike
    with torch.no_grad():
        mine = ours(batch["input_ids"], batch["attention_mask"])
        peft_logits = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(peft_logits, mine, atol=1e-4, rtol=0)
    prompt = theirs.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(prompt, tensors["prompt"], atol=0, rtol=0)
    return theirs, tensors, peft_warnings


def active(module):
    """The copy peft runs: a ModulesToSaveWrapper's own, else the module itself."""
    return module.modules_to_save["default"] if hasattr(module, "modules_to_save") else module


def test_tiny_xlmr_export_loads_in_peft_with_our_logits(tmp_path, tiny_run, capsys):
    require_peft()
    out = tmp_path / "adapter"
    line = export(tiny_run, out, capsys)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter) == PEFT_014_FIELDS  # XLM-R needs no later field: peft 0.14 reads it without a warning
    assert (adapter["peft_type"], adapter["task_type"], adapter["num_virtual_tokens"], adapter["token_dim"],
            adapter["num_layers"], adapter["num_attention_heads"]) == ("PROMPT_TUNING", "SEQ_CLS", 20, 32, 2, 4)
    assert set(load_file(str(out / "adapter_model.safetensors"))) == {
        "prompt_embeddings", "base_model.classifier.dense.weight", "base_model.classifier.dense.bias",
        "base_model.classifier.out_proj.weight", "base_model.classifier.out_proj.bias"}

    theirs, tensors, peft_warnings = assert_peft_gives_our_logits(tiny_run, line, ["eng_Latn", "fra_Latn", "nqo_Nkoo"],
                                                                  FIXTURE_SIB200)
    assert not [w for w in peft_warnings if "Unexpected keyword" in w], peft_warnings
    head = active(theirs.base_model.classifier)
    torch.testing.assert_close(head.out_proj.weight, tensors["head.out_proj.weight"], atol=0, rtol=0)

    # A previous export is overwritten in place.
    assert export(tiny_run, out, capsys) == line


def test_e5_bert_export_loads_in_peft_with_our_logits(tmp_path, e5_run, sib200_dir, capsys):
    """BERT: our dense becomes the pooler's (tanh included), out_proj the classifier; e5 ships no pooler."""
    require_peft()
    from peft import PromptTuningConfig

    run, _ = e5_run
    out = tmp_path / "adapter"
    line = export(run, out, capsys)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert set(adapter) == PEFT_014_FIELDS | {"modules_to_save"} and adapter["modules_to_save"] == ["pooler"]
    assert (adapter["token_dim"], adapter["num_layers"], adapter["num_attention_heads"]) == (384, 12, 12)
    assert set(load_file(str(out / "adapter_model.safetensors"))) == {
        "prompt_embeddings", "base_model.bert.pooler.dense.weight", "base_model.bert.pooler.dense.bias",
        "base_model.classifier.weight", "base_model.classifier.bias"}

    theirs, tensors, peft_warnings = assert_peft_gives_our_logits(run, line, ["eng_Latn", "fra_Latn", "kab_Latn",
                                                                              "zho_Hans"], sib200_dir)
    pooler, classifier = theirs.base_model.bert.pooler, theirs.base_model.classifier
    torch.testing.assert_close(active(pooler).dense.weight, tensors["head.dense.weight"], atol=0, rtol=0)
    torch.testing.assert_close(active(classifier).bias, tensors["head.out_proj.bias"], atol=0, rtol=0)
    if "modules_to_save" in PromptTuningConfig.__dataclass_fields__:  # peft 0.17 and later wrap what is listed
        assert hasattr(pooler, "modules_to_save"), type(pooler)
        assert not [w for w in peft_warnings if "Unexpected keyword" in w], peft_warnings
    else:  # 0.14 to 0.16 say they ignore the field, and load the pooler all the same (checked above)
        assert [w for w in peft_warnings if "['modules_to_save']" in w], peft_warnings


def test_export_imports_nothing_of_peft(tmp_path, tiny_run):
    fake = tmp_path / "fake" / "peft"
    fake.mkdir(parents=True)
    marker = tmp_path / "peft-was-imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('no peft here')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent)}
    out = subprocess.run([sys.executable, "evaluate.py", "--runs", str(tiny_run), "--export-peft", str(tmp_path / "a")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not marker.exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("case, words", [
    ("no artifact", "holds no inference artifact"),
    ("two runs", "--export-peft takes exactly one run in --runs, got 2"),
    ("folder of two runs", "--export-peft takes one run"),
    ("distilbert backbone", "--export-peft supports the backbones bert, roberta, xlm-roberta (model_type), not 'distilbert'"),
    ("foreign folder", "holds other files (notes.txt)"),
    ("file", "is a file"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_run, capsys, case, words):
    from transformers import DistilBertConfig

    out = tmp_path / "adapter"
    runs = [tiny_run]
    if case == "no artifact":
        runs = [tmp_path / "unfinished"]
        runs[0].mkdir()
        shutil.copy(tiny_run / "config.json", runs[0])
    elif case == "two runs":
        runs = [tiny_run, tiny_run]
    elif case == "folder of two runs":
        for name in ("a", "b"):
            shutil.copytree(tiny_run, tmp_path / "runs" / name)
        runs = [tmp_path / "runs"]
    elif case == "distilbert backbone":
        DistilBertConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64).save_pretrained(tmp_path / "distilbert")
        runs = [tmp_path / "other"]
        shutil.copytree(tiny_run, runs[0])
        config = json.loads((runs[0] / "config.json").read_text())
        (runs[0] / "config.json").write_text(json.dumps({**config, "model": str(tmp_path / "distilbert")}))
    elif case == "foreign folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    elif case == "file":
        out.write_text("mine\n")
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None

    code = evaluate.main(["--runs", *map(str, runs), "--export-peft", str(out)])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == ""
    (line,) = printed.err.strip().splitlines()
    assert line.startswith("evaluate.py: error: ") and words in line, line
    if case == "file":
        assert out.read_text() == "mine\n"
    else:
        assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


def test_an_adapter_that_export_did_not_write_is_never_overwritten(tmp_path, tiny_run, capsys):
    """A LoRA adapter in the folder stays as it is; an earlier export of ours is replaced."""
    lora = tmp_path / "lora"
    lora.mkdir()
    config = json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8})
    (lora / "adapter_config.json").write_text(config)
    (lora / "adapter_model.safetensors").write_bytes(b"lora weights")
    assert evaluate.main(["--runs", str(tiny_run), "--export-peft", str(lora)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not write (LORA)" in err[0], err
    assert (lora / "adapter_config.json").read_text() == config
    assert (lora / "adapter_model.safetensors").read_bytes() == b"lora weights"
    export(tiny_run, tmp_path / "ours", capsys)
    export(tiny_run, tmp_path / "ours", capsys)  # a previous export is ours to replace
