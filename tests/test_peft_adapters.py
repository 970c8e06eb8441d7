"""python -m tools.peft_adapters: an export loads in peft by the printed line alone and gives our logits; adapters
trained by peft (and one in the authors' layout) import and score as peft's own model; bad input.
"""
import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import data
import evaluate
import train
import xpe
from tools import peft_adapters
from conftest import (FIXTURE_SIB200, ROOT, argparse_refusals, flags_not_given, outside, refused_in_one_line,
                      require_extra)

# Every field of peft 0.14.0's PromptTuningConfig (dataclasses.fields): what 0.14 reads without a warning.
PEFT_014_FIELDS = {"task_type", "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "inference_mode",
                   "num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads",
                   "num_layers", "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path",
                   "tokenizer_kwargs"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("peft-export") / "run"
    code = train.main(["--model", str(tiny_model_dir), "--data-dir", str(FIXTURE_SIB200), "--source", "eng_Latn",
                       "--steps", "8", "--batch-size", "4", "--eval-every", "4", "--lr", "1e-2",
                       "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out


def export(run, out, capsys):
    """Export through the command line; return the Python line it prints for loading the folder."""
    code = peft_adapters.main(["export", str(run), str(out)])
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
    require_extra("peft")
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
    require_extra("peft")
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
    out = subprocess.run([sys.executable, "-m", "tools.peft_adapters", "export", str(tiny_run), str(tmp_path / "a")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not marker.exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_an_export_imports_back_as_the_same_run_without_naming_its_labels(tmp_path, tiny_run, capsys):
    export(tiny_run, tmp_path / "peft", capsys)
    back = peft_adapters.import_adapter(tmp_path / "peft", tmp_path / "back", source="eng_Latn",
                                        source_languages=["eng_Latn"], seed=1)
    ours, theirs = xpe.read_artifact(tiny_run), xpe.read_artifact(back)
    assert theirs[1]["labels"] == ours[1]["labels"]
    assert set(theirs[0]) == set(ours[0]) and all(torch.equal(theirs[0][k], ours[0][k]) for k in ours[0])


@pytest.mark.parametrize("case, words", [
    ("no artifact", "holds no inference artifact"),
    ("folder of two runs", "export takes one run"),
    ("distilbert backbone", "export supports the backbones bert, roberta, xlm-roberta (model_type), not 'distilbert'"),
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

    code = peft_adapters.main(["export", str(runs[0]), str(out)])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == ""
    (line,) = printed.err.strip().splitlines()
    assert line.startswith("tools.peft_adapters export: error: ") and words in line, line
    if case == "file":
        assert out.read_text() == "mine\n"
    else:
        assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else None) == before


IMPORT_FLAGS = [  # every flag of import with a value out of its range: one line, exit 2, no run folder
    (["--template", "{text} topic:"], "--template is for a CAUSAL_LM adapter, and"),  # tiny_run is an encoder's
    (["--chat-template"], "--chat-template is for a CAUSAL_LM adapter"),
    (["--labels", "a,b"], "2 labels (a, b) for a head of 7 outputs"),
    (["--model", "{tmp}/nowhere"], "cannot load the backbone '{tmp}/nowhere': it is a path, and {tmp}/nowhere is "
                                   "no folder"),
    (["--source", "xyz_Latn"], "xyz_Latn"),
    (["--seed", "-1"], "--seed -1: use a number"),
    (["--seed", "1-2"], "--seed 1-2: an adapter is one run, so one seed"),
    (["--seed", "18446744073709551616"], "a seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
    (["--source", "eng_Latn", "--groups-file", "{tmp}/nowhere.json"], "group file {tmp}/nowhere.json not found"),
    (["--source", "eng_Latn", "--data-dir", "{tmp}/nowhere"], "data directory {tmp}/nowhere does not exist"),
    (["--max-length", "100000"], "positions for text, fewer than max_length 100000"),
] + [([f"--max-length={text}"], f"--max-length must be {train.values_of('max_length').words()}")  # its declaration
     for text in outside(train.values_of("max_length"), as_text=True)]


@pytest.mark.parametrize("args, words", IMPORT_FLAGS)
def test_every_import_flag_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_run, capsys, args, words):
    export(tiny_run, tmp_path / "peft", capsys)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = peft_adapters.main(["import", str(tmp_path / "peft"), str(tmp_path / "back"), *args])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and words.replace("{tmp}", str(tmp_path)) in line, line
    assert flags_not_given(line, args) <= {"--model", "--labels"}, line  # what to add to go on
    assert not (tmp_path / "back").exists()


def test_every_import_flag_is_walked():
    (_, into) = [a for a in peft_adapters.parser()._actions if a.dest == "command"][0].choices.items()
    flags = {opt for action in into[1]._actions for opt in action.option_strings if opt.startswith("--")}
    assert flags - {a.split("=")[0] for args, _ in IMPORT_FLAGS for a in args if a.startswith("--")} == {"--help"}


def test_argparse_refusals_are_one_line_naming_the_flag(tmp_path, monkeypatch, capsys):
    """Of both commands: a missing command or folder, an unknown flag, a missing value, an empty folder name (an
    empty run folder read as the working folder): one line, exit 2, no usage, nothing written."""
    monkeypatch.chdir(tmp_path)
    prog = "python -m tools.peft_adapters"
    (command,) = [a for a in peft_adapters.parser()._actions if a.dest == "command"]
    assert "the following arguments are required: command" in refused_in_one_line(peft_adapters.main, [], capsys, prog)
    for name, sub in command.choices.items():
        for argv, flag in argparse_refusals(sub, before=[name, "a", "b"]):
            assert flag in refused_in_one_line(peft_adapters.main, argv, capsys, prog)
        assert "required: " in refused_in_one_line(peft_adapters.main, [name], capsys, f"{prog} {name}")
        for blank in range(2):  # each positional folder, empty
            argv = [name, "a", "b"]
            argv[1 + blank] = ""
            words = [a.dest for a in sub._actions if not a.option_strings][blank]
            assert f"argument {words}: '' is an empty name" in refused_in_one_line(peft_adapters.main, argv, capsys,
                                                                                   f"{prog} {name}")
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_that_export_did_not_write_is_never_overwritten(tmp_path, tiny_run, capsys):
    """A LoRA adapter in the folder stays as it is; an earlier export of ours is replaced."""
    lora = tmp_path / "lora"
    lora.mkdir()
    config = json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 8})
    (lora / "adapter_config.json").write_text(config)
    (lora / "adapter_model.safetensors").write_bytes(b"lora weights")
    assert peft_adapters.main(["export", str(tiny_run), str(lora)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not write (LORA)" in err[0], err
    assert (lora / "adapter_config.json").read_text() == config
    assert (lora / "adapter_model.safetensors").read_bytes() == b"lora weights"
    export(tiny_run, tmp_path / "ours", capsys)
    export(tiny_run, tmp_path / "ours", capsys)  # a previous export is ours to replace




def files_of(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_no_file_export_or_import_writes_replaces_one_of_the_users(tmp_path, tiny_run, capsys):
    """Walked over every file export and import write (found by a clean call of each): a folder holding the user's
    own file of that name alone is refused in one line, the file as it was; nor does either write into the folder it
    reads. A user's adapter_model.safetensors or prompt.safetensors alone was written over, exit 0."""
    export(tiny_run, tmp_path / "clean-export", capsys)
    assert peft_adapters.main(["import", str(tmp_path / "clean-export"), str(tmp_path / "clean-import")]) == 0
    capsys.readouterr()
    walked = []
    for command, source, clean in (("export", tiny_run, "clean-export"), ("import", tmp_path / "clean-export",
                                                                            "clean-import")):
        for name in sorted(files_of(tmp_path / clean)):
            out = tmp_path / command / name
            out.mkdir(parents=True)
            (out / name).write_bytes(b"the user's own " + name.encode())
            assert peft_adapters.main([command, str(source), str(out)]) == 2, (command, name)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and name in err[0], err
            assert files_of(out) == {name: b"the user's own " + name.encode()}
            walked.append(name)
        before = files_of(source)
        for out in (source, source / "inside"):  # the folder it reads, or a folder in it, where it is a stranger's
            assert peft_adapters.main([command, str(source), str(out)]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "the folder this call reads" in err[0], err
            assert files_of(source) == before
    assert sorted(walked) == sorted(peft_adapters.EXPORT_FILES + peft_adapters.RUN_FILES)


def test_peft_s_own_save_of_a_prompt_tuning_adapter_is_not_taken_for_an_export(tmp_path, tiny_run, capsys):
    """peft's save_pretrained writes the very fields of our export, but no labels in the weights' metadata: an
    adapter trained elsewhere and saved so was replaced as "a previous export"."""
    theirs = tmp_path / "theirs"
    export(tiny_run, theirs, capsys)
    weights = theirs / peft_adapters.ADAPTER_WEIGHTS
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt"})  # as peft saves it
    before = files_of(theirs)
    assert peft_adapters.main(["export", str(tiny_run), str(theirs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "that export did not write" in err[0], err
    assert files_of(theirs) == before


def test_every_file_export_and_import_write_has_the_mode_of_a_plain_open(tmp_path, tiny_run, capsys):
    """mkstemp's 0600 left an export and an import unreadable to a group's shared folder under umask 022."""
    import stat
    old = os.umask(0o022)
    try:
        export(tiny_run, tmp_path / "peft", capsys)
        assert peft_adapters.main(["import", str(tmp_path / "peft"), str(tmp_path / "back")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for folder in ("peft", "back")
             for p in (tmp_path / folder).iterdir()}
    assert len(modes) == 4 and set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("key, value", [("labels", 7), ("seed", "one"), ("settings", None)])
def test_export_of_a_run_whose_config_is_out_of_range_is_one_line(tmp_path, tiny_run, capsys, key, value):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # train.read_run_config, walked in test_train.py
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), key: value}))
    assert peft_adapters.main(["export", str(run), str(tmp_path / "peft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"config.json's {key} is {json.dumps(value)}" in err[0], err
    assert not (tmp_path / "peft").exists()

# ---- import: adapters trained by peft, and the authors' layout --------------------------------------------------------

LANGS = ["eng_Latn", "fra_Latn", "nqo_Nkoo"]


def seq_cls(model_dir, num_labels=7):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)  # a head (and for e5 a pooler) that the checkpoint lacks is drawn here
    return AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=num_labels)


def train_and_save(model_dir, peft_config, out, steps=3, base=None, tokenizer=None, rows=8):
    """A few Adam steps of peft on fixture rows, then peft's save_pretrained."""
    from peft import get_peft_model
    from transformers import AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
    model = get_peft_model(copy.deepcopy(base) if base is not None else seq_cls(model_dir), peft_config)
    rows = data.load_split(["eng_Latn"], "train", FIXTURE_SIB200)[:rows]
    batch = tokenizer([r.text for r in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([r.label for r in rows])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(str(out))
    return tokenizer


def peft_logits(model_dir, adapter, texts, tokenizer, max_length=164, base=None):
    from peft import PeftModel

    theirs = PeftModel.from_pretrained(copy.deepcopy(base) if base is not None else seq_cls(model_dir),
                                       str(adapter)).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padded rows: both sides must extend the mask alike
    with torch.no_grad():
        return theirs(**batch).logits, batch


def our_logits(run, batch, backbone=None):
    _, config = xpe.read_artifact(run)
    backbone = backbone or xpe.load_backbone(config["model"])[0]
    ours, _ = xpe.load_artifact(run, backbone)
    with torch.no_grad():
        return ours(batch["input_ids"], batch["attention_mask"])


def per_language_accuracy(logits, rows):
    right = {}
    for ok, r in zip((logits.argmax(-1) == torch.tensor([x.label for x in rows])).tolist(), rows):
        right.setdefault(r.lang, []).append(ok)
    return {lang: round(sum(v) / len(v), 6) for lang, v in right.items()}


def evaluate_run(run, tmp_path, capsys):
    """evaluate.py's per-language accuracy of the imported run over LANGS."""
    out = tmp_path / "results"
    code = evaluate.main(["--runs", str(run), "--data-dir", str(FIXTURE_SIB200), "--group", ",".join(LANGS),
                          "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    with open(out / "per_language.csv", newline="") as f:
        return {r["language"]: float(r["accuracy"]) for r in csv.DictReader(f)}


def peft_configs():
    from peft import PromptEncoderConfig, PromptTuningConfig

    return {"prompt-tuning": PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=6),
            "p-tuning-mlp": PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=6, encoder_hidden_size=16),
            "p-tuning-lstm": PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=6, encoder_hidden_size=16,
                                                 encoder_reparameterization_type="LSTM")}


@pytest.mark.parametrize("kind", ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm"])
def test_peft_trained_adapter_scores_as_peft(tmp_path, tiny_model_dir, capsys, kind):
    require_extra("peft")
    adapter, run = tmp_path / "adapter", tmp_path / "run"
    tokenizer = train_and_save(tiny_model_dir, peft_configs()[kind], adapter)
    # through the command line, as a user imports one
    assert peft_adapters.main(["import", str(adapter), str(run), "--labels", ",".join(data.LABELS)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["ended"] == {"why": "imported", "step": 0} and config["imported_from"]["layout"].startswith("peft")
    assert (config["method"], config["prompt_len"]) == (("spt" if kind == "prompt-tuning" else "xpe"), 6)

    rows = [r for lang in LANGS for r in data.load_split([lang], "test", FIXTURE_SIB200)]
    theirs, batch = peft_logits(tiny_model_dir, adapter, [r.text for r in rows], tokenizer)
    torch.testing.assert_close(our_logits(run, batch), theirs, atol=1e-4, rtol=0)
    assert evaluate_run(run, tmp_path, capsys) == per_language_accuracy(theirs, rows)


class TheirCrossPromptEncoder(torch.nn.Module):
    """The authors' CrossPromptEncoder (nlpka/models/cross_prompt_encoder.py) with its MLP head, transcribed:
    its module names, gen_mlp_head's layers, and forward's [SPT; xpe_head(xpe_embedding)]."""

    def __init__(self, total, dim, hidden, num_layers, ratio, dropout=0.1):
        super().__init__()
        self.ratio = ratio
        self.n_xpe = 0 if ratio == 0 else total if ratio == 1 else max(1, min(total - 1, int(total * ratio)))
        self.n_spt = total - self.n_xpe
        if self.n_spt:
            self.embedding = torch.nn.Embedding(self.n_spt, dim)
        if self.n_xpe:
            self.xpe_embedding = torch.nn.Embedding(self.n_xpe, dim)
            hidden_layers = []
            for _ in range(num_layers - 1):
                hidden_layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
            self.xpe_head = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                                                *hidden_layers, torch.nn.Linear(hidden, dim))

    def forward(self, indices):
        if self.ratio == 0:
            return self.embedding(indices)
        if self.ratio == 1:
            return self.xpe_head(self.xpe_embedding(indices))
        # Their published forward looks the XPE part up at positions n_spt..P-1 of an n_xpe-row table, which
        # raises an IndexError for 0 < ratio < 1 (their published adapters are ratio 0 and 1): its rows in order.
        return torch.cat([self.embedding(indices[:, :self.n_spt]),
                          self.xpe_head(self.xpe_embedding(indices[:, self.n_spt:] - self.n_spt))], dim=1)


def authors_adapter(out, model_dir, ratio, num_layers=2):
    """An adapter as their xpe_get_peft_model_state_dict saves it: modules_to_save keys, adapter name dropped."""
    torch.manual_seed(1)
    encoder = TheirCrossPromptEncoder(10, 32, 16, num_layers, ratio)
    head = seq_cls(model_dir).classifier
    tensors = {f"prompt_encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors.update({f"base_model.classifier.{k}": v for k, v in head.state_dict().items()})
    out.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "adapter_model.safetensors"))
    config = dict(  # their published keys (upload.py's patch_adapter_config leaves these)
        peft_type="P_TUNING", task_type="SEQ_CLS", base_model_name_or_path=str(model_dir), num_virtual_tokens=10,
        token_dim=32, num_transformer_submodules=1, num_attention_heads=4, num_layers=2,
        encoder_reparameterization_type="MLP", encoder_hidden_size=16, encoder_num_layers=num_layers,
        encoder_dropout=0.1, encoder_ratio=ratio, encoder_embedding_init_type="hf_default",
        encoder_init_state_dict_path=None, encoder_freeze=False, encoder_embedding_freeze=False,
        encoder_embedding_normalize=None, encoder_embedding_normalize_max_norm=None, encoder_input_size=None,
        encoder_num_heads=8, modules_to_save=sorted({"classifier", "embedding", "xpe_embedding", "xpe_head"}),
        inference_mode=True)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return encoder.eval(), head.eval()


@pytest.mark.parametrize("ratio, method, layers", [(1, "xpe", 2), (0, "spt", 2), (0.3, "dual", 3)])
def test_authors_layout_scores_as_their_encoder(tmp_path, tiny_model_dir, ratio, method, layers):
    from transformers import AutoTokenizer

    adapter, run = tmp_path / "adapter", tmp_path / "run"
    encoder, head = authors_adapter(adapter, tiny_model_dir, ratio, layers)
    peft_adapters.import_adapter(adapter, run, source="joshi5", seed=3)  # labels: SIB-200's, as their configs
    config = json.loads((run / "config.json").read_text())
    assert (config["method"], config["xpe_frac"], config["n_spt"], config["labels"], config["source"]) == (
        method, float(ratio), encoder.n_spt, list(data.LABELS), "joshi5")
    assert config["imported_from"]["layout"] == peft_adapters.AUTHORS

    # their forward through peft's path: prompt in front of the word embeddings, mask extended, head on position 0
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = [r for lang in LANGS for r in data.load_split([lang], "test", FIXTURE_SIB200)[:3]]
    batch = tokenizer([r.text for r in rows], padding=True, return_tensors="pt")
    model = seq_cls(tiny_model_dir).eval()
    model.classifier.load_state_dict(head.state_dict())
    with torch.no_grad():
        prompt = encoder(torch.arange(10).unsqueeze(0).expand(len(rows), -1))
        embeds = torch.cat([prompt, model.get_input_embeddings()(batch["input_ids"])], 1)
        mask = torch.cat([torch.ones(len(rows), 10, dtype=torch.long), batch["attention_mask"]], 1)
        theirs = model(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(our_logits(run, batch), theirs, atol=1e-4, rtol=0)
    # the prompt itself, exactly: position 0 of a tiny backbone hears the later prompt vectors only faintly
    torch.testing.assert_close(xpe.read_artifact(run)[0]["prompt"], prompt[0], atol=1e-6, rtol=0)


def test_e5_adapters_score_as_peft(tmp_path, e5_dir, sib200_dir):
    """BERT: the pooler (kept through modules_to_save, as e5 ships none) is our dense, classifier our out_proj."""
    require_extra("peft")
    from peft import PromptEncoderConfig, PromptTuningConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(e5_dir))
    base, (backbone, _) = seq_cls(e5_dir), xpe.load_backbone(str(e5_dir))  # each loaded once: 470 MB
    rows = [r for lang in ["eng_Latn", "fra_Latn", "kab_Latn", "zho_Hans"]
            for r in data.load_split([lang], "test", sib200_dir)[:2]]
    for name, config in [("pt", PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=8,
                                                   modules_to_save=["classifier", "pooler"])),
                         ("ptune", PromptEncoderConfig(task_type="SEQ_CLS", num_virtual_tokens=8, encoder_hidden_size=32,
                                                       modules_to_save=["classifier", "pooler"]))]:
        adapter, run = tmp_path / f"{name}-adapter", tmp_path / f"{name}-run"
        train_and_save(e5_dir, config, adapter, steps=1, base=base, tokenizer=tokenizer, rows=4)
        peft_adapters.import_adapter(adapter, run, labels=data.LABELS)
        theirs, batch = peft_logits(e5_dir, adapter, [r.text for r in rows], tokenizer, base=base)
        torch.testing.assert_close(our_logits(run, batch, backbone), theirs, atol=1e-4, rtol=0)


def tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64), add_pooling_layer=False).save_pretrained(folder)
    return folder


def write_adapter(folder, config, tensors):
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(config))


PROMPT = dict(peft_type="PROMPT_TUNING", task_type="SEQ_CLS", num_virtual_tokens=4)


def xlmr_head(labels=7):
    return {"base_model.classifier.dense.weight": torch.randn(32, 32), "base_model.classifier.dense.bias": torch.zeros(32),
            "base_model.classifier.out_proj.weight": torch.randn(labels, 32),
            "base_model.classifier.out_proj.bias": torch.zeros(labels)}


@pytest.mark.parametrize("case, words", [
    ("lora", "peft_type 'LORA' is not a prompt"),
    ("extra key", "cannot map the adapter's base_model.roberta.encoder.layer.0.output.dense.weight"),
    ("no head", "lacks base_model.classifier.out_proj.weight"),
    ("no labels", "names no labels (id2label)"),
    ("model config id2label list", "names no labels (id2label)"),  # a config.json beside it: read as id2label is
    ("model config list", "names no labels (id2label)"),
    ("wrong labels", "2 labels (a, b) for a head of 7 outputs"),
    ("width", "has hidden size 32"),
    ("bert without pooler", "lacks base_model.bert.pooler.dense.weight and the backbone"),
    ("authors lstm", "encoder_reparameterization_type 'LSTM'"),
    ("foreign out", "holds files of another run or of yours (notes.txt)"),
    ("config.json 5", "holds files of another run or of yours (config.json)"),  # a JSON 5: no import of ours
    ("config.json text", "holds files of another run or of yours (config.json)"),  # "imported_from", a text
    ("distilbert", "is 'distilbert'; the import maps the heads of bert, roberta, xlm-roberta (model_type)"),
    ("prefix", "a CAUSAL_LM adapter, but"),  # on XLM-R, an encoder
    ("seq2seq", "task_type 'SEQ_2_SEQ_LM' is neither SEQ_CLS nor CAUSAL_LM"),
])
def test_refusals_name_the_key_and_write_nothing(tmp_path, tiny_model_dir, case, words):
    adapter, out = tmp_path / "adapter", tmp_path / "run"
    config = {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)}
    tensors = {"prompt_embeddings": torch.randn(4, 32), **xlmr_head()}
    labels = data.LABELS
    if case == "lora":
        config["peft_type"] = "LORA"
    elif case == "extra key":
        tensors["base_model.roberta.encoder.layer.0.output.dense.weight"] = torch.zeros(32, 32)
    elif case == "no head":
        del tensors["base_model.classifier.out_proj.weight"]
    elif case in ("no labels", "model config id2label list", "model config list"):
        labels = None
    elif case == "wrong labels":
        labels = ["a", "b"]
    elif case == "width":
        tensors["prompt_embeddings"] = torch.randn(4, 16)
    elif case == "bert without pooler":
        config["base_model_name_or_path"] = str(tiny_bert(tmp_path))
        tensors = {"prompt_embeddings": torch.randn(4, 32), "base_model.classifier.weight": torch.randn(7, 32),
                   "base_model.classifier.bias": torch.zeros(7)}
    elif case == "authors lstm":
        config = {**config, "peft_type": "P_TUNING", "encoder_ratio": 1, "encoder_reparameterization_type": "LSTM"}
    elif case == "distilbert":
        from transformers import DistilBertConfig

        DistilBertConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=64).save_pretrained(tmp_path / "distilbert")
        config["base_model_name_or_path"] = str(tmp_path / "distilbert")
    elif case == "prefix":
        config["task_type"] = "CAUSAL_LM"
    elif case == "seq2seq":
        config["task_type"] = "SEQ_2_SEQ_LM"
    elif case == "foreign out":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    elif case.startswith("config.json"):
        out.mkdir()
        (out / "config.json").write_text("5" if case.endswith("5") else '"imported_from"')
    write_adapter(adapter, config, tensors)
    if case.startswith("model config"):
        (adapter / "config.json").write_text('{"id2label": ["science"]}' if "id2label" in case else "[1]")
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    with pytest.raises(xpe.UsageError) as caught:
        peft_adapters.import_adapter(adapter, out, labels=labels)
    (line,) = str(caught.value).splitlines()
    assert words in line, line
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_bert_head_maps_pooler_and_classifier(tmp_path):
    """A BERT adapter's pooler.dense is our dense and its classifier our out_proj, tanh between, as in BERT."""
    backbone = tiny_bert(tmp_path)
    pooler_w, pooler_b, cls_w, cls_b = torch.randn(32, 32), torch.randn(32), torch.randn(7, 32), torch.randn(7)
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(backbone)},
                  {"prompt_embeddings": torch.randn(4, 32), "base_model.bert.pooler.dense.weight": pooler_w,
                   "base_model.bert.pooler.dense.bias": pooler_b, "base_model.classifier.weight": cls_w,
                   "base_model.classifier.bias": cls_b})
    run = peft_adapters.import_adapter(tmp_path / "adapter", tmp_path / "run", labels=data.LABELS)
    tensors, _ = xpe.read_artifact(run)
    for ours, theirs in [("dense.weight", pooler_w), ("dense.bias", pooler_b), ("out_proj.weight", cls_w),
                         ("out_proj.bias", cls_b)]:
        assert torch.equal(tensors[f"head.{ours}"], theirs)
    # without the pooler in the adapter, peft's model keeps the checkpoint's own pooler: so does the import
    from transformers import BertModel

    with_pooler = BertModel.from_pretrained(backbone, add_pooling_layer=True)  # drawn: the folder has none
    with_pooler.save_pretrained(tmp_path / "bert-with-pooler")
    write_adapter(tmp_path / "no-pooler", {**PROMPT, "base_model_name_or_path": str(tmp_path / "bert-with-pooler")},
                  {"prompt_embeddings": torch.randn(4, 32), "base_model.classifier.weight": cls_w,
                   "base_model.classifier.bias": cls_b})
    tensors, _ = xpe.read_artifact(peft_adapters.import_adapter(tmp_path / "no-pooler", tmp_path / "run2",
                                                                labels=data.LABELS))
    assert torch.equal(tensors["head.dense.weight"], with_pooler.pooler.dense.weight)
    # and the run folder is one evaluate.py takes: an earlier import may be overwritten in place
    assert evaluate.find_runs([str(run)], print) == [run] and evaluate.read_run(run)["mode"] == "zero-shot"
    assert peft_adapters.import_adapter(tmp_path / "adapter", run, labels=data.LABELS) == run


def test_import_needs_no_peft(tmp_path, tiny_model_dir):
    fake = tmp_path / "fake" / "peft"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no peft here')\n")
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": torch.randn(4, 32), **xlmr_head()})
    code = ("import sys; sys.path.insert(0, {root!r}); from tools import peft_adapters; import data; "
            "print(peft_adapters.import_adapter({a!r}, {o!r}, labels=data.LABELS))").format(
        root=str(ROOT), a=str(tmp_path / "adapter"), o=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(fake.parent)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "prompt.safetensors"]


def test_labels_from_the_model_config_beside_the_adapter(tmp_path, tiny_model_dir):
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": torch.randn(4, 32), **xlmr_head(3)})
    names = {"0": "neg", "1": "neutral", "2": "pos"}
    (tmp_path / "adapter" / "config.json").write_text(json.dumps({"id2label": {"2": "pos", "0": "neg", "1": "neutral"}}))
    run = peft_adapters.import_adapter(tmp_path / "adapter", tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["labels"] == [names[k] for k in "012"]


def test_import_writes_into_a_run_folder_named_like_the_scoring_default(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """results is a run folder like any other for import (evaluate.py --import-peft refused it as if --out were missing)."""
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": torch.randn(4, 32), **xlmr_head()})
    monkeypatch.chdir(tmp_path)
    assert peft_adapters.main(["import", str(tmp_path / "adapter"), "results", "--labels",
                          ",".join(data.LABELS)]) == 0, capsys.readouterr().err
    assert (tmp_path / "results" / "prompt.safetensors").is_file()


def test_an_adapter_whose_prompt_is_not_finite_is_refused_before_anything_is_written(tmp_path, tiny_model_dir,
                                                                                      capsys):
    prompt = torch.randn(4, 32)
    prompt[1, 3] = float("nan")
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": prompt, **xlmr_head()})
    assert peft_adapters.main(["import", str(tmp_path / "adapter"), str(tmp_path / "run"), "--labels",
                          ",".join(data.LABELS)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompt holds values that are not finite" in err[0], err
    assert not (tmp_path / "run").exists()


def test_an_adapter_config_that_is_not_an_object_is_one_line(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("[1, 2]")
    assert peft_adapters.main(["import", str(tmp_path / "adapter"), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter_config.json" in err[0] and "JSON object" in err[0], err
    assert not (tmp_path / "run").exists()


# ---- import: every field of adapter_config.json it reads, the file as a whole and the weights, each bad ------------

MISSING = object()  # the field left out
SIB_LABELS = {str(i): name for i, name in enumerate(data.LABELS)}


def valid_adapter(folder, model_dir, layout):
    """An adapter the import takes without flags: peft's PROMPT_TUNING with its id2label, or the authors' (ratio 1)."""
    if layout == "authors":
        authors_adapter(folder, model_dir, 1)
    else:
        write_adapter(folder, {**PROMPT, "base_model_name_or_path": str(model_dir), "token_dim": 32,
                               "num_transformer_submodules": 1, "encoder_hidden_size": 16, "id2label": SIB_LABELS},
                      {"prompt_embeddings": torch.randn(4, 32), **xlmr_head()})
    return folder


COUNT = f"must be {train.COUNT.words()}, got "
CONFIG_WALK = [  # (layout, field, bad value, words): one field changed at a time
    ("prompt", "peft_type", MISSING, "peft_type None is not a prompt"),
    ("prompt", "peft_type", None, "peft_type None is not a prompt"),
    ("prompt", "peft_type", ["PROMPT_TUNING"], 'peft_type must be a string, got ["PROMPT_TUNING"]'),
    ("prompt", "peft_type", "PREFIX_TUNING", "peft_type 'PREFIX_TUNING' is not a prompt"),
    ("prompt", "task_type", MISSING, "task_type None is neither SEQ_CLS nor CAUSAL_LM"),
    ("prompt", "task_type", 7, "task_type must be a string, got 7"),
    ("prompt", "task_type", "TOKEN_CLS", "task_type 'TOKEN_CLS' is neither SEQ_CLS nor CAUSAL_LM"),
    ("prompt", "base_model_name_or_path", MISSING, "names no base_model_name_or_path: give the backbone (--model)"),
    ("prompt", "base_model_name_or_path", "", "names no base_model_name_or_path: give the backbone (--model)"),
    ("prompt", "base_model_name_or_path", ["x"], 'base_model_name_or_path must be a string, got ["x"]'),
    ("prompt", "base_model_name_or_path", "{tmp}/nowhere", "it is a path, and {tmp}/nowhere is no folder"),
    ("prompt", "num_virtual_tokens", MISSING, "lacks num_virtual_tokens"),
    ("prompt", "num_virtual_tokens", None, "lacks num_virtual_tokens"),
    ("authors", "num_virtual_tokens", MISSING, "lacks num_virtual_tokens"),
    ("authors", "num_virtual_tokens", 11, "prompt_encoder.xpe_embedding.weight is (10, 32), expected 11 x any"),
    ("prompt", "token_dim", 64, "token_dim is 64, but"),
    ("prompt", "token_dim", "32", 'token_dim ' + COUNT + '"32"'),
    ("prompt", "token_dim", 0, "token_dim " + COUNT + "0"),
    ("prompt", "num_transformer_submodules", 2, "num_transformer_submodules 2 is not 1"),
    ("authors", "num_transformer_submodules", 2, "num_transformer_submodules 2 is not 1"),
    ("prompt", "num_transformer_submodules", 0, "num_transformer_submodules " + COUNT + "0"),
    ("prompt", "num_transformer_submodules", "1", 'num_transformer_submodules ' + COUNT + '"1"'),
    ("authors", "encoder_reparameterization_type", "LSTM", "encoder_reparameterization_type 'LSTM'"),
    ("authors", "encoder_reparameterization_type", 5, "encoder_reparameterization_type must be a string, got 5"),
    ("prompt", "id2label", list(data.LABELS), "id2label must be an object of label names"),
    ("prompt", "id2label", "science", 'id2label must be an object of label names, got "science"'),
    ("prompt", "id2label", {k: i for i, k in enumerate(SIB_LABELS)}, "id2label must be an object of label names"),
    ("prompt", "id2label", {"0": "science"}, "1 labels (science) for a head of 7 outputs"),
    ("prompt", "id2label", {str(int(k) + 1): v for k, v in SIB_LABELS.items()}, "id2label is keyed"),
] + [(layout, field, value, f"{field} must be {train.values_of(name).words()}, got {json.dumps(value)}")
     for layouts, field, name in ((("prompt", "authors"), "num_virtual_tokens", "prompt_len"),
                                  (("prompt",), "encoder_hidden_size", "encoder_hidden"),
                                  (("authors",), "encoder_ratio", "xpe_frac"))  # train.py's settings: their Values
     for layout in layouts for value in outside(train.values_of(name)) if value is not None]  # null: not there


def refused(adapter, run, capsys):
    """The import's one line; it exits 2 and writes no run folder."""
    capsys.readouterr()  # what building the adapter printed
    code = peft_adapters.main(["import", str(adapter), str(run)])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == "", printed
    (line,) = printed.err.strip().splitlines()
    assert line.startswith("tools.peft_adapters import: error: "), line
    assert not run.exists()
    return line


@pytest.mark.parametrize("layout", ["prompt", "authors"])
def test_the_walks_adapters_import(tmp_path, tiny_model_dir, capsys, layout):
    """What each walk below changes is the one thing wrong with it."""
    adapter = valid_adapter(tmp_path / "adapter", tiny_model_dir, layout)
    assert peft_adapters.main(["import", str(adapter), str(tmp_path / "run")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("layout, field, value, words", CONFIG_WALK)
def test_every_config_field_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_model_dir, capsys, layout,
                                                                        field, value, words):
    adapter = valid_adapter(tmp_path / "adapter", tiny_model_dir, layout)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert field in config  # a field of a valid adapter changed, not one added
    if value is MISSING:
        del config[field]
    else:
        config[field] = value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    line = refused(adapter, tmp_path / "run", capsys)
    assert words.replace("{tmp}", str(tmp_path)) in line, line


def test_every_config_field_the_import_reads_is_walked(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """The import reads exactly peft_adapters.CONFIG_FIELDS (recorded on a valid adapter of each layout), and the
    walk changes each of them."""
    read = set()

    class Recorded(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            read.add(key)
            return super().__contains__(key)

    real = peft_adapters.read_adapter
    monkeypatch.setattr(peft_adapters, "read_adapter", lambda folder: (Recorded(real(folder)[0]), real(folder)[1]))
    for layout in ("prompt", "authors"):
        adapter = valid_adapter(tmp_path / f"{layout}-adapter", tiny_model_dir, layout)
        assert peft_adapters.main(["import", str(adapter), str(tmp_path / f"{layout}-run")]) == 0, \
            capsys.readouterr().err
    assert read == set(peft_adapters.CONFIG_FIELDS)
    assert {field for _, field, _, _ in CONFIG_WALK} == set(peft_adapters.CONFIG_FIELDS)


@pytest.mark.parametrize("text, words", [
    ("", "adapter_config.json is not JSON"),
    ("{", "adapter_config.json is not JSON"),
    (b"\xff\xfe{}", "adapter_config.json is not JSON"),
    ("[1, 2]", "holds a JSON list, not the JSON object PEFT writes"),
    ('"PROMPT_TUNING"', "holds a JSON str, not the JSON object PEFT writes"),
    (None, "is not a PEFT adapter: adapter_config.json is missing"),
])
def test_an_adapter_config_that_is_no_object_is_one_line(tmp_path, tiny_model_dir, capsys, text, words):
    adapter = valid_adapter(tmp_path / "adapter", tiny_model_dir, "prompt")
    path = adapter / "adapter_config.json"
    if text is None:
        path.unlink()
    else:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = refused(adapter, tmp_path / "run", capsys)
    assert words in line, line


@pytest.mark.parametrize("change, words", [
    (dict(prompt_embeddings=torch.randn(4, 32, 1)), "prompt_embeddings is (4, 32, 1), expected 4 x any"),
    (dict(prompt_embeddings=torch.randn(5, 32)), "prompt_embeddings is (5, 32), expected 4 x any"),
    ({"base_model.classifier.dense.weight": torch.randn(32, 16)}, "are not a dense d x d and an out_proj labels x d"),
    ({"base_model.classifier.out_proj.bias": torch.zeros(3)}, "are not a dense d x d and an out_proj labels x d"),
    ({"base_model.classifier.out_proj.bias": torch.full((7,), float("inf"))},
     "head.out_proj.bias holds values that are not finite"),
    (dict(prompt_embeddings=torch.full((4, 32), float("nan"))), "prompt holds values that are not finite"),
    (dict(prompt_embeddings=None), "lacks prompt_embeddings"),
    ({"base_model.classifier.dense.bias": None}, "lacks base_model.classifier.dense.bias"),
    ("not safetensors", "cannot read the adapter's weights"),
    ("no file", "holds no adapter_model.safetensors (nor adapter_model.bin)"),
])
def test_bad_adapter_weights_are_one_line_and_write_nothing(tmp_path, tiny_model_dir, capsys, change, words):
    adapter = valid_adapter(tmp_path / "adapter", tiny_model_dir, "prompt")
    weights = adapter / "adapter_model.safetensors"
    if change == "not safetensors":
        weights.write_bytes(b"\x00" * 64)
    elif change == "no file":
        weights.unlink()
    else:
        tensors = {**load_file(str(weights)), **change}
        save_file({k: v.contiguous() for k, v in tensors.items() if v is not None}, str(weights))
    line = refused(adapter, tmp_path / "run", capsys)
    assert words in line, line


# ---- issue 42: every label and language counted once; generated labels read as data.py reads them --------------

@pytest.mark.parametrize("args, words", [
    (["--source", "eng_Latn,"], "empty item in the language spec 'eng_Latn,'"),
    (["--source", "joshi5-"], "empty term in 'joshi5-'"),
    (["--source", "eng_Latn,eng_Latn"], "names 'eng_Latn' twice"),
    (["--labels", "a,b,c,d,e,f,a"], "name 'a' twice"),
    (["--labels", "a,b,c,d,e,f, a "], "name 'a' twice"),
    (["--labels", "a,b,c,d,e,f,"], "hold an empty one"),
])
def test_an_import_flag_that_names_a_thing_twice_or_nothing_is_one_line(tmp_path, tiny_run, capsys, args, words):
    test_every_import_flag_out_of_range_is_one_line_and_writes_nothing(tmp_path, tiny_run, capsys, args, words)


def test_an_import_records_its_source_in_the_one_spelling_train_py_records(tmp_path, tiny_run, capsys):
    export(tiny_run, tmp_path / "peft", capsys)
    assert peft_adapters.main(["import", str(tmp_path / "peft"), str(tmp_path / "back"), "--source",
                               " fra_Latn , eng_Latn", "--labels", ", ".join(data.LABELS)]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["source"] == "eng_Latn,fra_Latn" and config["labels"] == list(data.LABELS)


def test_id2label_with_spaces_or_twice_is_read_stripped_or_refused(tmp_path, tiny_model_dir):
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": torch.randn(4, 32), **xlmr_head(3)})
    config = tmp_path / "adapter" / "config.json"
    config.write_text(json.dumps({"id2label": {"0": "neg ", "1": " neutral", "2": "pos"}}))
    run = peft_adapters.import_adapter(tmp_path / "adapter", tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["labels"] == ["neg", "neutral", "pos"]
    config.write_text(json.dumps({"id2label": {"0": "pos", "1": "neutral", "2": "pos "}}))
    with pytest.raises(xpe.UsageError) as info:
        peft_adapters.import_adapter(tmp_path / "adapter", tmp_path / "run2")
    assert "name 'pos' twice" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run2").exists()


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=6), min_size=1, max_size=8))
def test_any_labels_are_read_stripped_or_one_line(labels):
    try:
        read = peft_adapters.adapter_labels(labels, {}, "adapter", len(labels), peft_adapters.AUTHORS, "adapter")
    except xpe.UsageError as e:
        assert str(e).startswith("adapter: the labels") and "\n" not in str(e), e
        stripped = [x.strip() for x in labels]
        assert "" in stripped or len(set(stripped)) < len(stripped)
        return
    assert read == [x.strip() for x in labels] and all(read) and len(set(read)) == len(read)


def test_an_adapter_config_with_a_key_twice_is_one_line(tmp_path, tiny_model_dir, capsys):
    write_adapter(tmp_path / "adapter", {**PROMPT, "base_model_name_or_path": str(tiny_model_dir)},
                  {"prompt_embeddings": torch.randn(4, 32), **xlmr_head()})
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(config.read_text().replace('"num_virtual_tokens":', '"num_virtual_tokens": 8, '
                                                                          '"num_virtual_tokens":', 1))
    code = peft_adapters.main(["import", str(tmp_path / "adapter"), str(tmp_path / "run"), "--labels",
                               ",".join(data.LABELS)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "the key 'num_virtual_tokens' is given twice" in line, line
    assert not (tmp_path / "run").exists()


# ---- decoders: CAUSAL_LM prompt tuning out and in --------------------------------------------------------------

from conftest import DECODER_FAMILIES  # noqa: E402


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_a_decoder_run_exports_as_a_causal_lm_adapter_with_our_label_logits_and_imports_back(
        tmp_path, tiny_decoder_dirs, family, capsys):
    """PeftModel.from_pretrained(AutoModelForCausalLM...) of the export, fed the run's templated rows right-padded,
    gives at each row's last token the label tokens' logits that our read-out gives (float32, 1e-5); the import
    takes the export back as the same run."""
    require_extra("peft")
    run = tmp_path / "run"
    assert train.main(["--model", str(tiny_decoder_dirs[family]), "--data-dir", str(FIXTURE_SIB200), "--source",
                       "eng_Latn", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--method", "dual:0.5",
                       "--prompt-len", "4", "--max-length", "100", "--lr-prompt", "0.5", "--lr", "0.1",
                       "--out", str(run), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert peft_adapters.main(["export", str(run), str(tmp_path / "peft")]) == 0
    line, harness = capsys.readouterr().out.strip().splitlines()
    assert f"--model_args pretrained={tiny_decoder_dirs[family]},peft={tmp_path / 'peft'}" in harness
    adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert set(adapter) == PEFT_014_FIELDS and adapter["task_type"] == "CAUSAL_LM"
    theirs, _ = load_as_a_user(line.split("load it with: ", 1)[1])
    tensors, config = xpe.read_artifact(run)
    backbone, tokenizer = xpe.load_backbone(config["model"])
    ours, _ = xpe.load_artifact(run, backbone)
    texts = [r.text for lang in ("eng_Latn", "fra_Latn", "nqo_Nkoo") for r in data.load_split([lang], "test",
                                                                                                FIXTURE_SIB200)[:2]]
    ids = xpe.template_ids(tokenizer, texts, config["text_template"], config["max_length"])
    input_ids, mask = xpe.pad(ids, tokenizer.pad_token_id)
    assert (mask == 0).any()
    with torch.no_grad():
        mine = ours(input_ids, mask)
        logits = theirs(input_ids=input_ids, attention_mask=mask).logits
    last = logits[torch.arange(len(ids)), mask.sum(1) + len(tensors["prompt"]) - 1][:, config["label_token_ids"]]
    torch.testing.assert_close(last, mine, atol=1e-5, rtol=0)
    assert (mine[0] - mine[1]).abs().max() > 1e-4  # texts score apart: the prompt and text reach the read-out

    assert peft_adapters.main(["import", str(tmp_path / "peft"), str(tmp_path / "back")]) == 0
    back_tensors, back = xpe.read_artifact(tmp_path / "back")
    assert torch.equal(back_tensors["prompt"], tensors["prompt"]) and set(back_tensors) == {"prompt"}
    same = ("readout", "text_template", "chat_template", "label_token_ids", "labels", "max_length", "prompt_len")
    assert {k: back[k] for k in same} == {k: config[k] for k in same}
    again, _ = xpe.load_artifact(tmp_path / "back", backbone)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids, mask), mine, atol=0, rtol=0)


def test_a_causal_lm_prompt_that_leaves_too_few_positions_for_text_is_one_line(tmp_path, tiny_decoder_dirs, capsys):
    """max_length, when the import takes what fits beside the prompt, is held to the range train.py declares for it
    (a tiny GPT-2 has 128 positions: 126 prompt vectors leave 2)."""
    adapter = tmp_path / "adapter"
    write_adapter(adapter, {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 126,
                            "base_model_name_or_path": str(tiny_decoder_dirs["gpt2"]), "token_dim": 32,
                            "num_transformer_submodules": 1}, {"prompt_embeddings": torch.randn(126, 32)})
    line = refused(adapter, tmp_path / "run", capsys)
    assert ("126 prompt vectors leave 2 of" in line and f"max_length must be {train.values_of('max_length').words()}"
            in line), line
