"""xpe.py on tiny random XLM-R and BERT encoders: prompt layout, freezing, counts, static prompt, artifact."""
import json

import pytest
import torch
from transformers import AutoModel, BertConfig, XLMRobertaConfig, XLMRobertaForSequenceClassification
from transformers.optimization import Adafactor

import train
import xpe
from conftest import cpu_bf16
from xpe import PromptConfig, build_classifier, load_artifact, save_artifact, split_prompt

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=80)


def tiny_backbone(kind="xlmr", seed=0):
    torch.manual_seed(seed)
    config = XLMRobertaConfig(**TINY, type_vocab_size=1) if kind == "xlmr" else BertConfig(**TINY)
    return AutoModel.from_config(config)


def batch(seed=1, n=3, length=9):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (n, length), generator=g)
    ids[:, 0] = 0  # <s>
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded row
    ids[1, 6:] = 1
    return ids, mask


def artifact_config(model_cfg):
    return {"model": "tiny", "labels": list("abcdefg"), "max_length": 164, **xpe.prompt_config_dict(model_cfg)}


@pytest.mark.parametrize("method, r, expected", [
    ("dual", 0.7, (6, 14)), ("dual", 0.3, (14, 6)), ("spt", 0.0, (20, 0)), ("xpe", 1.0, (0, 20)),
    ("dual", 0.01, (19, 1)), ("dual", 0.99, (1, 19)),
])
def test_split_prompt(method, r, expected):
    assert split_prompt(method, r, 20) == expected


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
def test_prompt_is_spt_part_then_xpe_part_before_the_tokens(kind):
    model = build_classifier(tiny_backbone(kind), PromptConfig(method="dual", xpe_frac=0.7)).eval()
    prompt = model.prompt(2)
    assert prompt.shape == (2, 20, 32)
    assert torch.equal(prompt[0, :6], model.prompt.spt)
    assert torch.equal(prompt[1, 6:], model.prompt.xpe.mlp(model.prompt.xpe.pseudo))

    # The logits are the head on position 0 of the backbone run over [prompt; embed(ids)].
    ids, mask = batch()
    embeds = torch.cat([model.prompt(3), model.backbone.get_input_embeddings()(ids)], dim=1)
    full_mask = torch.cat([torch.ones(3, 20, dtype=mask.dtype), mask], dim=1)
    hidden = model.backbone(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
    torch.testing.assert_close(model(ids, mask), model.head(hidden[:, 0]))


def test_each_example_gets_its_own_dropout_mask():
    model = build_classifier(tiny_backbone(), PromptConfig(method="xpe", xpe_frac=1.0)).train()
    prompt = model.prompt(2)
    assert not torch.equal(prompt[0], prompt[1])
    model.eval()
    prompt = model.prompt(2)
    assert torch.equal(prompt[0], prompt[1])


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
@pytest.mark.parametrize("method, r", [("spt", 0.0), ("xpe", 1.0), ("dual", 0.7)])
def test_backbone_never_changes_and_trainables_do(kind, method, r):
    model = build_classifier(tiny_backbone(kind), PromptConfig(method=method, xpe_frac=r)).train()
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable_before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    assert all(not k.startswith("backbone.") for k in trainable_before)
    optimizer = Adafactor([p for p in model.parameters() if p.requires_grad], lr=1e-2, scale_parameter=False,
                          relative_step=False, warmup_init=False, weight_decay=0.1)
    ids, mask = batch()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.tensor([0, 3, 6]))
        loss.backward()
        assert all(p.grad is None for p in model.backbone.parameters())
        optimizer.step()
        optimizer.zero_grad()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), k
    for k, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, trainable_before[k]), f"{k} did not change"
    expected = {"head.dense.weight", "head.out_proj.weight"}
    expected |= {"prompt.spt"} if method != "xpe" else set()
    expected |= {"prompt.xpe.pseudo", "prompt.xpe.mlp.0.weight", "prompt.xpe.mlp.6.weight"} if method != "spt" else set()
    assert expected <= set(trainable_before)


def test_backbone_dropout_follows_train_and_eval_mode():
    model = build_classifier(tiny_backbone(), PromptConfig())
    ids, mask = batch()
    model.train()
    assert model.backbone.training
    model.prompt.eval()  # only the backbone's (and head's) dropout left
    assert not torch.equal(model(ids, mask), model(ids, mask))
    model.eval()
    assert not model.backbone.training
    assert torch.equal(model(ids, mask), model(ids, mask))


@pytest.mark.parametrize("method, r, millions", [("xpe", 1.0, 1.67), ("dual", 0.7, 1.67), ("spt", 0.0, 1.08)])
def test_trainable_count_on_xlmr_large_shape(method, r, millions):
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)
    with torch.device("meta"):
        backbone = AutoModel.from_config(config)
        model = build_classifier(backbone, PromptConfig(method=method, xpe_frac=r))
    trainable, total, share = xpe.count_parameters(model)
    assert abs(trainable / 1e6 - millions) < 0.01
    assert share < 0.3
    assert f"{millions:.2f}M" in xpe.describe_parameters(model)
    if method != "spt":  # the paper's breakdown: MLP 591,360; prompt vectors 20,480; head 1,056,775
        assert sum(p.numel() for p in model.prompt.xpe.mlp.parameters()) == 591_360
    assert sum(p.numel() for p in model.head.parameters()) == 1_056_775


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
@pytest.mark.parametrize("method, r", [("spt", 0.0), ("xpe", 1.0), ("dual", 0.3)])
def test_static_prompt_and_artifact_give_the_trained_logits(tmp_path, kind, method, r):
    cfg = PromptConfig(method=method, xpe_frac=r)
    model = build_classifier(tiny_backbone(kind), cfg)
    with torch.no_grad():  # move the head and prompt away from their initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.train()  # static_prompt must switch dropout off by itself
    prompt = model.static_prompt()
    assert prompt.shape == (20, 32) and prompt.dtype == torch.float32
    assert model.prompt.training
    model.eval()
    ids, mask = batch()
    expected = model(ids, mask)
    static = model.to_static().eval()
    assert not hasattr(static.prompt, "xpe")
    torch.testing.assert_close(static(ids, mask), expected)

    save_artifact(xpe.artifact_tensors(model), tmp_path, artifact_config(cfg))
    loaded, config = load_artifact(tmp_path, tiny_backbone(kind))
    torch.testing.assert_close(loaded(ids, mask), expected)
    assert config["n_spt"] + config["n_xpe"] == 20 and config["method"] == method
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "prompt.safetensors"]


def test_artifact_classifies_without_our_code(tmp_path):
    """The two files and transformers' own XLM-R classifier give our logits (what PEFT's setup computes)."""
    from safetensors.torch import load_file

    cfg = PromptConfig(method="dual", xpe_frac=0.7)
    model = build_classifier(tiny_backbone(), cfg).eval()
    save_artifact(xpe.artifact_tensors(model), tmp_path, artifact_config(cfg))

    tensors = load_file(str(tmp_path / "prompt.safetensors"))
    config = json.loads((tmp_path / "config.json").read_text())
    hf = XLMRobertaForSequenceClassification(XLMRobertaConfig(**TINY, type_vocab_size=1, num_labels=7)).eval()
    hf.roberta.load_state_dict(model.backbone.state_dict(), strict=False)
    hf.classifier.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    ids, mask = batch()
    prompt = tensors["prompt"].expand(3, -1, -1)
    assert prompt.shape[1] == config["prompt_len"]
    embeds = torch.cat([prompt, hf.roberta.embeddings.word_embeddings(ids)], dim=1)
    full_mask = torch.cat([torch.ones(3, config["prompt_len"], dtype=mask.dtype), mask], dim=1)
    with torch.no_grad():
        theirs = hf(inputs_embeds=embeds, attention_mask=full_mask).logits
        torch.testing.assert_close(theirs, model(ids, mask))


@pytest.mark.parametrize("args, words", [
    (("xpe", 1.5, 20), "xpe_frac must lie in [0, 1]"),
    (("dual", -0.1, 20), "xpe_frac must lie in [0, 1]"),
    (("dual", float("nan"), 20), "xpe_frac must lie in [0, 1]"),
    (("dual", 0.0, 20), "dual needs 0 < xpe_frac < 1"),
    (("dual", 1.0, 20), "dual needs 0 < xpe_frac < 1"),
    (("xpe", 1.0, 0), "prompt length must be an integer from 1 to 1,048,576"),
    (("spt", 0.0, -3), "prompt length must be an integer from 1 to 1,048,576"),
    (("spt", 0.5, 20), "method spt is xpe_frac 0"),
    (("prefix", 1.0, 20), "unknown method 'prefix': use one of spt, xpe, dual"),
])
def test_bad_settings_raise_one_clear_value_error(args, words):
    with pytest.raises(ValueError) as info:
        build_classifier(tiny_backbone(), PromptConfig(method=args[0], xpe_frac=args[1], prompt_len=args[2]))
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_artifact_of_another_hidden_size_is_refused(tmp_path):
    cfg = PromptConfig()
    save_artifact(xpe.artifact_tensors(build_classifier(tiny_backbone(), cfg)), tmp_path, artifact_config(cfg))
    other = AutoModel.from_config(XLMRobertaConfig(**{**TINY, "hidden_size": 48}, type_vocab_size=1))
    with pytest.raises(ValueError, match=r"prompt is \(20, 32\) but the backbone's hidden size is 48"):
        load_artifact(tmp_path, other)
    with pytest.raises(ValueError, match="no inference artifact: prompt.safetensors is missing"):
        load_artifact(tmp_path / "nowhere", other)


def _saved_backbone(tmp_path, dtype):
    """A tiny XLM-R with a pooler, saved in `dtype`, with a word-level tokenizer beside it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, XLMRobertaModel

    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(**TINY, type_vocab_size=1)).to(dtype).save_pretrained(tmp_path)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "a", "b"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_backbone_stored_in_half_precision_loads_in_float32(tmp_path, dtype):
    backbone, _ = xpe.load_backbone(str(_saved_backbone(tmp_path, dtype)))
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    model = build_classifier(backbone, PromptConfig()).eval()
    assert model(*batch()).dtype == torch.float32  # on the CPU a half backbone fails: mat1 and mat2 dtypes


def test_backbone_loads_without_the_pooler_quietly(tmp_path, capfd):
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        backbone, _ = xpe.load_backbone(str(_saved_backbone(tmp_path, torch.float32)))
    finally:
        root.removeHandler(handler)
    assert getattr(backbone, "pooler", None) is None
    printed = " ".join(capfd.readouterr()) + " ".join(r.getMessage() for r in records)
    assert "LOAD REPORT" not in printed and "UNEXPECTED" not in printed and "not used" not in printed, printed


def test_the_frozen_model_is_called_the_backbone_in_the_code():
    """'encoder' is the paper's prompt encoder (the MLP) only; the frozen model is the backbone everywhere."""
    import ast
    import re
    from conftest import ROOT

    allowed = re.compile(r"^(encoder_hidden|encoder_dropout|CrossPromptEncoder|PromptEncoderConfig|prompt_encoder\w*)$")
    found = []
    for name in ("xpe.py", "train.py", "evaluate.py", "tools/bench.py", "data.py"):
        for node in ast.walk(ast.parse((ROOT / name).read_text())):
            ident = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                     else node.arg if isinstance(node, ast.arg) else node.name if isinstance(node, ast.FunctionDef)
                     else None)
            if ident and "encoder" in ident.lower() and not allowed.match(ident):
                found.append(f"{name}:{node.lineno} {ident}")
    assert not found, found
    model = build_classifier(tiny_backbone(), PromptConfig())
    assert isinstance(model.backbone, torch.nn.Module) and not hasattr(model, "encoder")


def test_pad_pads_right():
    input_ids, mask = xpe.pad([[0, 2], [0, 7, 8, 9, 2]], pad_id=1)
    assert input_ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert input_ids.tolist() == [[0, 2, 1, 1, 1], [0, 7, 8, 9, 2]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("kind", ["xlmr", "bert"])
def test_packed_logits_are_each_models_own(kind):
    """Several models in one backbone pass, each on its own copy of its batch (of another width), as alone."""
    backbone = tiny_backbone(kind).eval()
    models = [build_classifier(backbone, PromptConfig(method=m, xpe_frac=r)).eval()
              for m, r in (("spt", 0.0), ("dual", 0.7), ("xpe", 1.0))]
    short, long = batch(seed=1, length=5), batch(seed=2, length=9)
    batches = [short, long, short]
    passes = []
    backbone.register_forward_hook(lambda module, args, kwargs, out: passes.append(kwargs["inputs_embeds"].shape[:2]),
                                   with_kwargs=True)
    # (rows, width) of the one backbone pass: every model's rows, as wide as the widest prompt + batch
    w = models[0].prompt(1).shape[1]  # the prompt length
    with torch.no_grad():
        together = xpe.packed_logits(models, batches)
    assert passes == [(9, w + 9)]
    with torch.no_grad():
        for model, logits, (ids, mask) in zip(models, together, batches):
            torch.testing.assert_close(logits, model(ids, mask), atol=1e-5, rtol=0)


def test_predict_restores_the_order_and_shares_each_pass():
    backbone = tiny_backbone().eval()
    models = [build_classifier(backbone, PromptConfig(method=m, xpe_frac=r)) for m, r in (("spt", 0.0), ("xpe", 1.0))]
    g = torch.Generator().manual_seed(3)
    ids = [[0] + torch.randint(5, 120, (int(n),), generator=g).tolist() + [2] for n in torch.randint(1, 12, (11,), generator=g)]
    calls = []
    real = xpe.packed_logits
    try:
        xpe.packed_logits = lambda ms, bs: calls.append(len(ms)) or real(ms, bs)
        together = xpe.predict(models, ids, pad_id=1, batch_size=4, precision="fp32")
    finally:
        xpe.packed_logits = real
    assert calls and set(calls) == {2} and len(calls) == 6  # 2 text rows a pass (4 // 2 models), both models each pass
    for model, logits in zip(models, together):
        with torch.no_grad():
            expected = torch.cat([model(*xpe.pad([row], 1)) for row in ids])  # row by row, in the original order
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_max_text_length_leaves_room_for_the_prompt(e5_dir):
    from transformers import AutoConfig

    large = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)
    with torch.device("meta"):
        assert xpe.max_text_length(AutoModel.from_config(large), 20) == 492  # positions 2..513
        assert xpe.max_text_length(AutoModel.from_config(AutoConfig.from_pretrained(e5_dir)), 20) == 492  # 0..511
    assert xpe.max_text_length(tiny_backbone(), 20) == 80 - 2 - 20
    assert xpe.max_text_length(tiny_backbone("bert"), 20) == 80 - 20


# ---- a pack's step: per-run backward, precision ------------------------------------------------------

def pack_of_four(backbone):
    models = []
    for i, (method, r) in enumerate((("spt", 0.0), ("dual", 0.3), ("dual", 0.7), ("xpe", 1.0))):
        torch.manual_seed(10 + i)
        models.append(build_classifier(backbone, PromptConfig(method=method, xpe_frac=r, encoder_dropout=0.0,
                                                              head_dropout=0.0)).train())
    backbone.eval()  # the backbone's own dropout off: both sides draw the same (no) masks
    return models


def grads(models):
    return [[p.grad.clone() for p in m.parameters() if p.requires_grad] for m in models]


def test_backward_per_run_gives_the_one_backward_gradients():
    """Each pass backward as it ends (a pack in one run's memory) gives the gradients of one backward of the
    summed losses over the packed forward, run by run; two seeds' batches, one of them a short last batch."""
    backbone = tiny_backbone()
    models = pack_of_four(backbone)
    shared, other = batch(1, n=4, length=9), batch(2, n=3, length=7)
    batches = [shared, other, shared, other]
    labels = [torch.tensor([0, 3, 6, 1]), torch.tensor([2, 2, 5]), torch.tensor([0, 3, 6, 1]), torch.tensor([2, 2, 5])]
    logits = xpe.packed_logits(models, batches)  # one pass for the pack
    expected = [torch.nn.functional.cross_entropy(x.float(), y) for x, y in zip(logits, labels)]
    torch.stack(expected).sum().backward()
    before = grads(models)
    for m in models:
        m.zero_grad(set_to_none=True)
    losses = train.backward_pack(models, batches, labels, per_run=True)
    for got, want in zip(losses, expected):
        torch.testing.assert_close(got, want.detach())
    assert not any(loss.requires_grad for loss in losses)
    for got, want in zip(grads(models), before):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    for m in models:
        m.zero_grad(set_to_none=True)
    train.backward_pack(models, batches, labels, per_run=False)  # the GPU path: one pass, one backward
    for got, want in zip(grads(models), before):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("amx, avx512_bf16", [(True, True), (True, False), (False, True), (False, False)])
def test_auto_precision_is_bf16_on_cuda_and_float32_on_every_cpu(monkeypatch, amx, avx512_bf16):
    """A CPU with native bf16 (AMX, AVX512-BF16) too: three seeds could not show bf16 within a point of float32."""
    cpu_bf16(monkeypatch, amx, avx512_bf16)
    assert xpe.resolve_precision("auto", "cpu") == "fp32"
    assert xpe.resolve_precision("fp32", "cpu") == "fp32" and xpe.resolve_precision("bf16", "cpu") == "bf16"
    assert xpe.resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        xpe.resolve_precision("fp16", "cpu")


def test_bf16_keeps_the_trainable_parts_float32_and_trains():
    """Under bf16 the backbone's ops are cast one by one (autocast); the prompt, prompt encoder and head stay
    float32, get float32 gradients, and the logits stay close to float32's."""
    backbone = tiny_backbone()
    models = pack_of_four(backbone)
    ids, mask = batch(1, n=4)
    want = [m(ids, mask).detach() for m in models]
    assert backbone.get_input_embeddings().weight.dtype == torch.float32
    losses = train.backward_pack(models, [(ids, mask)] * 4, [torch.tensor([0, 1, 2, 3])] * 4, True, "bf16")
    assert all(torch.isfinite(loss) for loss in losses)
    for m, w in zip(models, want):
        trainable = [p for p in m.parameters() if p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable)
        with xpe.precision_context(backbone, "bf16"):
            got = m(ids, mask)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.float(), w, rtol=0.05, atol=0.05)


def test_under_bf16_autocast_the_prompt_encoder_and_the_head_compute_in_float32():
    """Only the frozen backbone's matmuls run in bf16: the prompt comes out of the MLP in float32, and the head is
    applied in float32 to the backbone's output."""
    backbone = tiny_backbone()
    model = pack_of_four(backbone)[3].eval()  # xpe: the whole prompt from the MLP
    ids, mask = batch(1, n=4)
    seen = {}
    hooks = [model.prompt.register_forward_hook(lambda _m, _a, out: seen.update(prompt=out)),
             model.head.register_forward_hook(lambda _m, args, out: seen.update(hidden=args[0], logits=out))]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.prompt(1).dtype == torch.bfloat16  # what the MLP gives under autocast, outside packed_logits
        model(ids, mask)
    for hook in hooks:
        hook.remove()
    assert seen["prompt"].dtype == torch.float32 and seen["logits"].dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(seen["prompt"], model.prompt(1).expand_as(seen["prompt"]), rtol=0, atol=0)
        torch.testing.assert_close(seen["logits"], model.head(seen["hidden"].float()), rtol=0, atol=0)


def test_the_float32_guard_is_a_no_op_where_there_is_no_autocast():
    """A meta device (a model built without weights) has no autocast to turn off: the guard must not raise."""
    with xpe.trainable_in_fp32(torch.device("meta")):
        assert torch.ones(2, device="meta").dtype == torch.float32


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_written_by_a_rename_get_the_mode_of_a_plain_open(tmp_path, umask):
    """mkstemp makes 0600 files: renamed into place as they were, a group's shared folder could not read an artifact.
    Each file gets the mode a plain open() gives under the umask, as a file made by open() here does."""
    import os
    import stat
    cfg = PromptConfig(method="xpe", xpe_frac=1.0)
    model = build_classifier(tiny_backbone(), cfg)
    old = os.umask(umask)
    try:
        open(tmp_path / "plain", "w").close()
        save_artifact(xpe.artifact_tensors(model), tmp_path / "artifact", artifact_config(cfg))
        xpe.atomic_write(tmp_path / "bytes", lambda tmp: open(tmp, "wb").write(b"x"))
    finally:
        os.umask(old)
    wanted = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert wanted == 0o666 & ~umask
    for path in [tmp_path / "bytes", *(tmp_path / "artifact").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path


# ---- decoders: the label-token read-out at each row's last real token ----------------------------------------

from conftest import DECODER_FAMILIES  # noqa: E402

DECODER_TEXTS = ["the cat sat on the mat in paris", "football match", "health of the people is good and travel long"]


def tiny_decoder(tiny_decoder_dirs, family, method="dual", r=0.5, prompt_len=4):
    import data
    backbone, tokenizer = xpe.load_backbone(str(tiny_decoder_dirs[family]))
    template = xpe.decoder_template(tokenizer, list(data.LABELS), xpe.DEFAULT_TEMPLATE, 164, name=family)
    torch.manual_seed(0)
    cfg = PromptConfig(method=method, xpe_frac=r, prompt_len=prompt_len, num_labels=7, encoder_dropout=0.0)
    return build_classifier(backbone, cfg, template).eval(), tokenizer, template


def test_causal_lms_are_recognised_and_encoders_are_not():
    import transformers
    decoders = [transformers.LlamaConfig(), transformers.Qwen2Config(), transformers.Gemma2Config(),
                transformers.Gemma3TextConfig(), transformers.BloomConfig(), transformers.GPT2Config(),
                transformers.OPTConfig(), transformers.MistralConfig()]
    encoders = [XLMRobertaConfig(), BertConfig(), transformers.RobertaConfig(), transformers.ModernBertConfig(),
                transformers.DebertaV2Config(), transformers.ElectraConfig(), transformers.T5Config()]
    assert [xpe.is_causal_lm(c) for c in decoders] == [True] * len(decoders)
    assert [xpe.is_causal_lm(c) for c in encoders] == [False] * len(encoders)
    assert not xpe.is_decoder(tiny_backbone("xlmr"))


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_a_decoder_row_scores_the_same_alone_as_in_a_padded_packed_batch(tiny_decoder_dirs, family):
    model, tokenizer, template = tiny_decoder(tiny_decoder_dirs, family)
    ids = xpe.template_ids(tokenizer, DECODER_TEXTS, template["text_template"], 164)
    other = build_classifier(model.backbone, PromptConfig(method="spt", xpe_frac=0.0, prompt_len=2, num_labels=7),
                             {**template, "label_token_ids": template["label_token_ids"]}).eval()
    with torch.no_grad():
        alone = torch.cat([model(*xpe.pad([row], tokenizer.pad_token_id)) for row in ids])
        batch = xpe.pad(ids, tokenizer.pad_token_id)
        padded = model(*batch)
        packed = xpe.packed_logits([other, model.to_static()], [batch, batch])  # another prompt length beside it
    assert len(set(map(len, ids))) == len(ids)  # every row padded to another width
    torch.testing.assert_close(padded, alone, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(packed[1], alone, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_the_text_and_the_prompt_reach_a_decoders_read_out(tiny_decoder_dirs, family):
    """The bug this read-out fixes: at position 0 a decoder sees only the first prompt vector, so every text scored
    alike. Here texts score differently, and a change of the prompt moves different texts differently."""
    model, tokenizer, template = tiny_decoder(tiny_decoder_dirs, family, method="spt", r=0.0)
    ids = xpe.template_ids(tokenizer, DECODER_TEXTS, template["text_template"], 164)
    with torch.no_grad():
        before = model(*xpe.pad(ids, tokenizer.pad_token_id)).log_softmax(-1)
        model.prompt.spt.add_(torch.randn_like(model.prompt.spt))
        after = model(*xpe.pad(ids, tokenizer.pad_token_id)).log_softmax(-1)
    assert (before[0] - before[1]).abs().max() > 1e-3 and (before[0] - before[2]).abs().max() > 1e-3
    moved = after - before
    assert (moved.abs().max() > 1e-3) and (moved[0] - moved[1]).abs().max() > 1e-4


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_decoder_label_logits_are_the_lm_heads_and_never_its_full_vocabulary(tiny_decoder_dirs, family):
    """Our label scores equal the full causal LM's logits of the label tokens at the last real token (with the prompt
    in front, as PEFT's CAUSAL_LM prompt tuning feeds it, Gemma 2's softcapping included), while scoring never calls
    the LM head (so that its memory does not grow with the vocabulary)."""
    model, tokenizer, template = tiny_decoder(tiny_decoder_dirs, family)
    ids = xpe.template_ids(tokenizer, DECODER_TEXTS, template["text_template"], 164)
    input_ids, mask = xpe.pad(ids, tokenizer.pad_token_id)
    lm = model.backbone
    with torch.no_grad():
        prompt = model.prompt(len(ids))
        embeds = torch.cat([prompt, lm.get_input_embeddings()(input_ids)], 1)
        full_mask = torch.cat([torch.ones(len(ids), prompt.shape[1], dtype=mask.dtype), mask], 1)
        full = lm(inputs_embeds=embeds, attention_mask=full_mask).logits
        last = full[torch.arange(len(ids)), full_mask.sum(1) - 1][:, template["label_token_ids"]]
        head = lm.get_output_embeddings()
        head.forward = lambda *a, **k: pytest.fail("the read-out computed the full vocabulary's logits")
        try:
            ours = model(input_ids, mask)
        finally:
            del head.forward
    torch.testing.assert_close(ours, last, atol=1e-5, rtol=1e-5)


def test_labels_that_share_their_first_token_are_refused(tiny_decoder_dirs):
    _, tokenizer, _ = tiny_decoder(tiny_decoder_dirs, "llama")
    with pytest.raises(xpe.UsageError, match="'health' and 'health travel' both begin with the token"):
        xpe.decoder_template(tokenizer, ["health", "sports", "health travel"], xpe.DEFAULT_TEMPLATE, 164)
    with pytest.raises(xpe.UsageError, match="must hold {text} once"):
        xpe.decoder_template(tokenizer, ["health", "sports"], "no placeholder", 164)
    with pytest.raises(xpe.UsageError, match="leaves no room for text"):
        xpe.decoder_template(tokenizer, ["health", "sports"], xpe.DEFAULT_TEMPLATE, 10)
    with pytest.raises(xpe.UsageError, match="has no chat template"):
        xpe.decoder_template(tokenizer, ["health", "sports"], xpe.DEFAULT_TEMPLATE, 164, chat=True)


def test_a_long_text_is_cut_so_that_the_template_end_stays(tiny_decoder_dirs):
    _, tokenizer, template = tiny_decoder(tiny_decoder_dirs, "llama")
    text_template = template["text_template"]
    short, cut = xpe.template_ids(tokenizer, [DECODER_TEXTS[2], DECODER_TEXTS[2] * 20], text_template, 40)
    ending = tokenizer(text_template.split("{text}")[1], add_special_tokens=False)["input_ids"]
    assert len(cut) == 40 and cut[-len(ending):] == ending and cut[0] == tokenizer.bos_token_id
    assert short == xpe.template_ids(tokenizer, [DECODER_TEXTS[2]], text_template, 10 ** 6)[0]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_decoder_artifact_is_its_prompt_and_scores_as_trained(tmp_path, tiny_decoder_dirs, family):
    model, tokenizer, template = tiny_decoder(tiny_decoder_dirs, family)
    tensors = xpe.artifact_tensors(model)
    assert set(tensors) == {"prompt"}
    config = {**artifact_config(PromptConfig(method="dual", xpe_frac=0.5, prompt_len=4)), "labels": list(
        __import__("data").LABELS), "readout": xpe.READOUT, **template}
    save_artifact(tensors, tmp_path, config)
    loaded, _ = load_artifact(tmp_path, model.backbone)
    expected = xpe.classify(model, tokenizer, DECODER_TEXTS, 164)
    torch.testing.assert_close(xpe.classify(loaded, tokenizer, DECODER_TEXTS, 164), expected)
    with pytest.raises(xpe.UsageError, match="trained on a decoder and the backbone is an encoder"):
        load_artifact(tmp_path, tiny_backbone("xlmr"))
    (tmp_path / "config.json").write_text(json.dumps({**config, "label_token_ids": [0] * 7}))
    with pytest.raises(xpe.UsageError, match="label_token_ids"):
        load_artifact(tmp_path, model.backbone)


def test_a_decoder_trains_only_its_prompt_and_loads_in_bf16(tiny_decoder_dirs):
    model, _, _ = tiny_decoder(tiny_decoder_dirs, "llama")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("prompt.") for name in trainable)
    assert not [k for k in model.state_dict() if k.startswith("head.")]
    backbone, _ = xpe.load_backbone(str(tiny_decoder_dirs["llama"]), precision="bf16")
    assert backbone.get_input_embeddings().weight.dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["gemma2", "gpt2"])
def test_the_docs_score_a_decoder_artifact_without_our_code(tmp_path, tiny_decoder_dirs, family, capsys):
    """docs/decoders.md's snippet (transformers and safetensors alone) gives our probabilities."""
    import ast
    from conftest import ROOT
    model, tokenizer, template = tiny_decoder(tiny_decoder_dirs, family)
    config = {**artifact_config(PromptConfig(method="dual", xpe_frac=0.5, prompt_len=4)), "labels": list(
        __import__("data").LABELS), "readout": xpe.READOUT, **template, "model": str(tiny_decoder_dirs[family])}
    save_artifact(xpe.artifact_tensors(model), tmp_path, config)
    doc = (ROOT / "docs" / "decoders.md").read_text()
    code = doc.split("## The artifact without this code")[1].split("```python\n")[1].split("```")[0]
    text = "Le match de football a eu lieu hier."
    assert text in code
    capsys.readouterr()
    exec(code.replace('"runs/xpe-joshi5-s1"', repr(str(tmp_path))), {})
    theirs = ast.literal_eval(capsys.readouterr().out.strip())
    ours = xpe.classify(model, tokenizer, [text], 164)[0]
    assert list(theirs) == config["labels"]
    torch.testing.assert_close(torch.tensor(list(theirs.values())), ours, atol=1e-5, rtol=0)


def test_a_multimodal_gemma3_is_read_through_its_language_model(tmp_path, tiny_decoder_dirs):
    """Gemma 3 from 4B up is Gemma3ForConditionalGeneration: recognised, read at the last real token as its own
    logits give (its checkpoints have no final softcapping), and its vision tower's position table limits no text."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import data

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dirs["gemma3"])
    text = transformers.Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=8, query_pre_attn_scalar=8, bos_token_id=0, eos_token_id=2,
                                         pad_token_id=1)
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=28, patch_size=14)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(transformers.Gemma3Config(text_config=text, vision_config=vision,
                                                               mm_tokens_per_image=4)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    backbone, tokenizer = xpe.load_backbone(str(tmp_path))
    assert type(backbone).__name__ == "Gemma3ForConditionalGeneration" and xpe.max_text_length(backbone, 4) is None
    template = xpe.decoder_template(tokenizer, list(data.LABELS), xpe.DEFAULT_TEMPLATE, 164)
    model = build_classifier(backbone, PromptConfig(method="spt", xpe_frac=0.0, prompt_len=4, num_labels=7),
                             template).eval()
    input_ids, mask = xpe.pad(xpe.template_ids(tokenizer, DECODER_TEXTS, template["text_template"], 164), 1)
    with torch.no_grad():
        ours = model(input_ids, mask)
        full_mask = torch.cat([torch.ones(len(input_ids), 4, dtype=mask.dtype), mask], 1)
        embeds = torch.cat([model.prompt(len(input_ids)), backbone.get_input_embeddings()(input_ids)], 1)
        full = backbone(inputs_embeds=embeds, attention_mask=full_mask).logits
    last = full[torch.arange(len(input_ids)), full_mask.sum(1) - 1][:, template["label_token_ids"]]
    torch.testing.assert_close(ours, last, atol=1e-5, rtol=1e-5)
