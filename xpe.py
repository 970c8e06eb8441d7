"""Soft-prompt classifiers over a frozen encoder: SPT, XPE (cross-prompt encoder) and DUAL.

After "Cross-Prompt Encoder for Low-Performing Languages" (Mikaberidze et al., 2025). A prompt of
P vectors is prepended in front of the token embeddings of a frozen Hugging Face model (the backbone) and a
classification head reads the final hidden state at position 0. The prompt is built from two parts,
SPT first, then XPE:

- SPT: an n_spt x d matrix, trained directly.
- XPE: n_xpe pseudo-prompt vectors, each passed on its own through one shared MLP d -> h -> h -> d.

After training, the prompt is computed once (dropout off) and stored: inference needs only that
static P x d prompt and the head, so it costs the same as plain SPT.

A decoder (a causal LM: Llama, Qwen2, Gemma, BLOOM, GPT-2, ...) cannot be read at position 0, which under causal
attention sees only the first prompt vector. There the authors' first-token prediction reads it: the text goes
through a template that ends where the answer starts, the read-out position is each row's last real token (rows
are right-padded, so no pad sits between prompt and text), and the label scores are the frozen LM head's logits
of each label's first token there, computed from those rows of the LM head alone (LabelHead), never the full
vocabulary. Nothing is trained but the prompt.

This file imports only torch, transformers and safetensors (which transformers needs) so that it can
be copied into another project on its own.
"""
import contextlib
import copy
import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import load_file, save_file

METHODS = ("spt", "xpe", "dual")
MAX_LENGTH = 164  # tokens of text a row keeps, the paper's; the prompt comes on top
PROMPT_LEN_RANGE = (1, 2 ** 20)  # prompt vectors: no backbone has more positions
XPE_FRAC_RANGE = (0.0, 1.0)  # the prompt encoder's share: its low end is spt, its high end xpe, dual between


# what str.splitlines breaks a line at, written as escapes: a value the user typed ("--seed $'1\n2'") is quoted in
# the message, which stays one line
LINE_BREAKS = {ord(ch): repr(ch)[1:-1] for ch in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def unique_keys(pairs):
    """json.loads' object_pairs_hook for files a user may have written: a key given twice is a ValueError (json
    keeps the last one without a word)."""
    keys = [key for key, _ in pairs]
    twice = next((key for i, key in enumerate(keys) if key in keys[:i]), None)
    if twice is not None:
        raise ValueError(f"the key {twice!r} is given twice in one object")
    return dict(pairs)


class UsageError(ValueError):
    """Bad input from the user: the command lines print it as one line and exit with status 2."""

    def __init__(self, message=""):
        super().__init__(str(message).translate(LINE_BREAKS))
ARTIFACT_WEIGHTS = "prompt.safetensors"
ARTIFACT_CONFIG = "config.json"


def value_text(value):
    """A setting's value as labels and folder names print it: %g where that reads back as the very value (5e-05,
    0.005, 64), else the shortest text that does (0.0050000001), so that two values never print alike."""
    if not isinstance(value, float):
        return str(value)
    short = f"{value:g}"
    return short if not math.isfinite(value) or float(short) == value else repr(value)


def method_name(method, xpe_frac):
    """A method as one name, the grammar of train.py --method lists and evaluate.py: spt, xpe, dual:0.7."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return f"dual:{value_text(float(xpe_frac))}" if method == "dual" else method


def parse_method(name):
    """(method, xpe_frac) of a name as method_name writes it: spt -> (spt, 0.0), xpe -> (xpe, 1.0), dual:0.7."""
    text, (low, high) = str(name).strip(), XPE_FRAC_RANGE
    if text in ("spt", "xpe"):
        return text, high if text == "xpe" else low
    kind, _, frac = text.partition(":")
    try:  # ASCII, as a number is written: float() also reads "٠.٥" and "0.2_5"
        r = float(frac) if re.fullmatch(r"[0-9.eE+-]+", frac) else None
    except ValueError:
        r = None
    if kind != "dual" or r is None or not low < r < high:  # also refuses nan and inf
        raise UsageError(f"unknown method {name!r}: write spt, xpe or dual:R with {low:g} < R < {high:g}, e.g. "
                         f"dual:0.7")
    return "dual", r


@dataclass
class PromptConfig:
    method: str = "xpe"          # spt, xpe or dual
    xpe_frac: float = 1.0        # share of the prompt built by the cross-prompt encoder
    prompt_len: int = 20         # P
    encoder_hidden: int = 256    # h of the MLP d -> h -> h -> d
    encoder_dropout: float = 0.1  # 0.0 on a target language
    num_labels: int = 7
    head_dropout: float = 0.1


def split_prompt(method, xpe_frac, prompt_len=20):
    """Return (n_spt, n_xpe) for a method and an XPE fraction r; the SPT part comes first."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    shortest, longest = PROMPT_LEN_RANGE
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not shortest <= prompt_len <= longest:
        raise UsageError(f"prompt length must be an integer from {shortest} to {longest:,} (no backbone has more "
                         f"positions), got {str(prompt_len)[:20]}")
    r, (low, high) = float(xpe_frac), XPE_FRAC_RANGE  # spt is its low end, xpe its high end, dual between
    if not low <= r <= high or math.isnan(r):
        raise UsageError(f"xpe_frac must lie in [{low:g}, {high:g}] (0 = spt, 1 = xpe, between = dual), got "
                         f"{xpe_frac!r}")
    if method == "spt" and r != low:
        raise UsageError(f"method spt is xpe_frac {low:g}, got {xpe_frac!r}; use --method dual for a mix")
    if method == "xpe" and r != high:
        raise UsageError(f"method xpe is xpe_frac {high:g}, got {xpe_frac!r}; use --method dual for a mix")
    if method == "dual":
        if r in (low, high):
            raise UsageError(f"method dual needs {low:g} < xpe_frac < {high:g}, got {xpe_frac!r}; "
                             f"use --method spt for {low:g} or --method xpe for {high:g}")
        if prompt_len < 2:
            raise UsageError(f"method dual needs a prompt length of at least 2, got {prompt_len}")
        n_xpe = min(max(int(prompt_len * r), 1), prompt_len - 1)
    else:
        n_xpe = prompt_len if method == "xpe" else 0
    return prompt_len - n_xpe, n_xpe


class CrossPromptEncoder(nn.Module):
    """n pseudo-prompt vectors, each passed on its own through one shared MLP d -> h -> h -> d."""

    def __init__(self, n, d, hidden=256, dropout=0.1):
        super().__init__()
        self.pseudo = nn.Parameter(torch.randn(n, d))  # N(0, 1), as nn.Embedding initialises
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, d),
        )

    def forward(self, batch_size):
        # Expanded before the MLP so that each example draws its own dropout mask, as in the paper.
        return self.mlp(self.pseudo.unsqueeze(0).expand(batch_size, -1, -1))


class Prompt(nn.Module):
    """The trainable prompt: [SPT part; XPE part], P x d for every example of a batch."""

    def __init__(self, d, n_spt, n_xpe, hidden=256, dropout=0.1):
        super().__init__()
        self.spt = nn.Parameter(torch.randn(n_spt, d)) if n_spt else None
        self.xpe = CrossPromptEncoder(n_xpe, d, hidden, dropout) if n_xpe else None

    def forward(self, batch_size):
        parts = []
        if self.spt is not None:
            parts.append(self.spt.unsqueeze(0).expand(batch_size, -1, -1))
        if self.xpe is not None:
            parts.append(self.xpe(batch_size))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class StaticPrompt(nn.Module):
    """A fixed P x d prompt, the output of a trained Prompt: what inference uses."""

    def __init__(self, prompt):
        super().__init__()
        self.prompt = nn.Parameter(prompt.detach().clone().float(), requires_grad=False)

    def forward(self, batch_size):
        return self.prompt.unsqueeze(0).expand(batch_size, -1, -1)


class ClassificationHead(nn.Module):
    """XLM-R's sequence-classification head: dropout, dense, tanh, dropout, out_proj."""

    def __init__(self, d, num_labels, dropout=0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, num_labels)

    def forward(self, x):
        x = torch.tanh(self.dense(self.dropout(x)))
        return self.out_proj(self.dropout(x))


class LabelHead(nn.Module):
    """A decoder's read-out: the frozen LM head's rows (and bias) of the labels' first tokens, in float32, with the
    family's logit scale (Cohere's logit_scale, Granite's 1 / logits_scaling) and final logit softcapping (Gemma 2
    and 3): the label logits that the full LM head would give, without computing the others. Its tensors are
    buffers outside the state dict: nothing of it is trained or saved (the artifact's config.json names the token
    ids, and the backbone holds the rows)."""

    def __init__(self, weight, bias=None, softcap=None, scale=1.0):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)
        self.softcap, self.scale = softcap, scale

    def forward(self, x):
        logits = nn.functional.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


class PromptClassifier(nn.Module):
    """A frozen backbone with a prompt prepended before <s> and a head on position 0; on a decoder (LabelHead) the
    head reads each row's last real token. template: a decoder's text template ({"text_template": ...,
    "chat_template": bool}), which classify applies; None for an encoder."""

    def __init__(self, backbone, prompt, head, template=None):
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.prompt = prompt
        self.head = head
        self.template = template

    def forward(self, input_ids, attention_mask):
        return packed_logits([self], [(input_ids, attention_mask)])[0]

    @torch.no_grad()
    def static_prompt(self):
        """Run the prompt encoder once with dropout off; return the P x d prompt (float32)."""
        was_training = self.prompt.training
        self.prompt.eval()
        prompt = self.prompt(1)[0].float().clone()
        self.prompt.train(was_training)
        return prompt

    def to_static(self):
        """A classifier sharing this backbone, with the static prompt and a copy of the head."""
        device = self.head.weight.device if isinstance(self.head, LabelHead) else self.head.dense.weight.device
        prompt = StaticPrompt(self.static_prompt()).to(device)
        return PromptClassifier(self.backbone, prompt, copy.deepcopy(self.head), self.template).train(self.training)


def packed_logits(models, batches, token_embeds=None):
    """Logits of several PromptClassifiers that share one backbone, from a single backbone pass.

    batches[i] = (input_ids, attention_mask) is the batch of models[i]; models may share one batch. Each
    model's prompt goes in front of its own copy of its batch, and the copies are concatenated along the
    batch axis, right-padded to the widest (masked positions change no other position's output).
    token_embeds: the batches' token embeddings when the caller already has them (one batch for all models).
    On a decoder (the models' heads are LabelHeads) the head reads each row's last real token, and since rows are
    right-padded, a row scores the same alone as in any padded or packed batch.
    """
    backbone = models[0].backbone
    embed = backbone.get_input_embeddings()
    found, rows, masks = {}, [], []
    for model, (input_ids, attention_mask) in zip(models, batches):
        if id(input_ids) not in found:
            found[id(input_ids)] = embed(input_ids) if token_embeds is None else token_embeds
        embeds = found[id(input_ids)]
        with trainable_in_fp32(embeds.device):
            prompt = model.prompt(input_ids.shape[0]).to(embeds.dtype)
        rows.append(torch.cat([prompt, embeds], dim=1))
        masks.append(torch.cat([attention_mask.new_ones(attention_mask.shape[0], prompt.shape[1]), attention_mask], 1))
    width = max(r.shape[1] for r in rows)
    rows = [nn.functional.pad(r, (0, 0, 0, width - r.shape[1])) for r in rows]
    masks = [nn.functional.pad(m, (0, width - m.shape[1])) for m in masks]
    embeds, mask = torch.cat(rows), torch.cat(masks)
    # Position ids are left to the backbone (XLM-R counts them over inputs_embeds), as PEFT does.
    if isinstance(models[0].head, LabelHead):  # a decoder: its base model's final states (after the final norm),
        # read at each row's last real token; the LM head's full-vocabulary logits are never computed
        states = backbone.base_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        hidden = states[torch.arange(states.shape[0], device=states.device), mask.sum(1).to(states.device) - 1]
    else:
        hidden = backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, 0]
    with trainable_in_fp32(hidden.device):
        return [model.head(h.float()) for model, h in zip(models, hidden.split([r.shape[0] for r in rows]))]


def trainable_in_fp32(device):
    """Autocast off: the prompt encoder and the head compute in float32 even inside a bf16 forward, so that only
    the frozen backbone's matmuls run in bf16 (the trainable parts are tiny; their precision is the training's)."""
    if device.type not in ("cpu", "cuda", "mps", "xpu"):  # no autocast there (a meta tensor has none to turn off)
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


# ---- precision: float32, or bf16 where the device has it ---------------------------------------------

PRECISIONS = ("auto", "fp32", "bf16")
CPU_BF16 = ("on a CPU bf16 is one flag away (--precision bf16): with AMX it trained 1.56x and scored 2.35x as fast "
            "as fp32 on a 2-core Xeon, but three seeds could not show its accuracy within a point of fp32's")


def resolve_precision(precision, device):
    """"fp32" or "bf16" for --precision auto|fp32|bf16 on a device.

    auto is bf16 on CUDA, as the paper trained, and float32 on a CPU: there bf16's accuracy against float32's rests
    on three seeds whose per-language intervals are up to 7 points wide (docs/measured.md), which is not enough to
    make it the default (CPU_BF16).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def precision_context(backbone, precision):
    """What a forward over this float32 backbone runs under: bf16 autocast for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(backbone.get_input_embeddings().weight.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name=None, local_rank=None):
    """--device (cpu, cuda, cuda:N), or cuda when there is one; a process of several (torchrun, srun) takes its
    local rank's GPU."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: xpe runs on cpu or cuda; use cpu, cuda or cuda:N")
    if local_rank is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UsageError(f"--device {name or device}: no such CUDA device on this machine "
                         f"({torch.cuda.device_count()} found); use cpu or another --device")
    return device


def pad(rows, pad_id):
    """(input_ids, attention_mask), int64, token-id rows padded on the right to the longest."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([list(r) + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
    return input_ids, mask


def to_device(tensors, device):
    """Copy a batch to the device; on CUDA through pinned memory, so the copy does not stall the host."""
    if device.type == "cuda":
        return [t.pin_memory().to(device, non_blocking=True) for t in tensors]
    return [t.to(device) for t in tensors]


@torch.inference_mode()
def predict(models, ids, pad_id, batch_size=256, progress=None, precision=None):
    """Each model's logits (float32, on the CPU) for token-id rows, in the rows' original order.

    All models share each backbone pass; rows run longest first so that padding stays small, and a
    pass holds about batch_size rows (batch_size // len(models) rows of text, one copy per model).
    progress: optional wrapper of the batch list, such as tqdm. precision: "fp32" or "bf16" (see
    precision_context); None: as --precision auto resolves on the device (resolve_precision).
    """
    device = models[0].backbone.get_input_embeddings().weight.device
    for model in models:
        model.eval()
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    step = max(1, batch_size // len(models))
    batches = [order[k:k + step] for k in range(0, len(order), step)]
    chunks = [[] for _ in models]
    if precision is None:
        precision = resolve_precision("auto", device)
    for indices in progress(batches) if progress else batches:
        batch = to_device(pad([ids[i] for i in indices], pad_id), device)
        with precision_context(models[0].backbone, precision):
            for chunk, logits in zip(chunks, packed_logits(models, [batch] * len(models))):
                chunk.append(logits.float())
    restore = torch.argsort(torch.tensor(order))
    return [torch.cat(chunk).cpu()[restore] if chunk else torch.zeros(0, 0) for chunk in chunks]


def classify(model, tokenizer, texts, max_length=MAX_LENGTH, batch_size=256, precision=None):
    """Label probabilities (N x labels, float32) of an artifact's classifier for a list of texts (through its
    template on a decoder)."""
    if model.template:
        ids = template_ids(tokenizer, texts, model.template["text_template"], max_length,
                           model.template["chat_template"])
    else:
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    (logits,) = predict([model], ids, tokenizer.pad_token_id, batch_size, precision=precision)
    return logits.softmax(-1)


def max_text_length(backbone, prompt_len):
    """The most text tokens that fit beside a prompt of prompt_len in the backbone's position table.

    None when the backbone has no learned absolute positions. XLM-R-style embeddings count positions
    from padding_idx + 1, so two of XLM-R's 514 are never used. A decoder's rows are counted whole (template and
    special tokens too); its table is an embedding beside its token embedding in the module that holds that (GPT-2's
    wpe, OPT's embed_positions, which counts from its offset 2; not a vision tower's); RoPE and ALiBi families have
    none.
    """
    if is_decoder(backbone):
        words = backbone.get_input_embeddings()
        holder = next(m for m in backbone.modules() if any(c is words for c in m.children()))
        tables = [m for m in holder.children() if isinstance(m, nn.Embedding) and m is not words]
        if not tables:
            return None
        return min(t.num_embeddings - getattr(t, "offset", 0) for t in tables) - prompt_len
    embeddings = getattr(backbone, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        return None
    padding_idx = getattr(embeddings, "padding_idx", None)
    offset = padding_idx + 1 if padding_idx is not None else 0
    return table.num_embeddings - offset - prompt_len


def hidden_size(backbone):
    return backbone.get_input_embeddings().embedding_dim


def build_classifier(backbone, cfg: PromptConfig, template=None):
    """A trainable PromptClassifier on a backbone (any AutoModel: XLM-R, BERT, ...; or an AutoModelForCausalLM,
    whose read-out is its LM head's label rows: template then holds the labels' "label_token_ids", the
    "text_template" and "chat_template" (decoder_template))."""
    n_spt, n_xpe = split_prompt(cfg.method, cfg.xpe_frac, cfg.prompt_len)
    d = hidden_size(backbone)
    prompt = Prompt(d, n_spt, n_xpe, cfg.encoder_hidden, cfg.encoder_dropout)
    if is_decoder(backbone):
        if template is None or len(template["label_token_ids"]) != cfg.num_labels:
            raise UsageError("a decoder backbone needs the labels' token ids (decoder_template)")
        head = label_head(backbone, template["label_token_ids"])
        template = {k: template[k] for k in ("text_template", "chat_template")}
    else:
        head, template = ClassificationHead(d, cfg.num_labels, cfg.head_dropout), None
    device = backbone.get_input_embeddings().weight.device
    if device.type != "meta":
        prompt.to(device)
        head.to(device)
    return PromptClassifier(backbone, prompt, head, template)


# ---- decoders: recognition, the label rows, templates --------------------------------------------------

DEFAULT_TEMPLATE = "What is the topic of the following text? Answer with one of: {labels}.\nText: {text}\nTopic:"
READOUT = "label_tokens"  # a decoder artifact's config.json "readout": the LM head's label-token logits


def is_causal_lm(config):
    """Whether a model config is a decoder-only causal LM: its type has a causal-LM class and no masked-LM class
    (XLM-R, BERT and RoBERTa have both: encoders), or, for a type transformers does not list, its architectures
    say so (*ForCausalLM, *LMHeadModel)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    kind = getattr(config, "model_type", None)
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in getattr(config, "architectures", None) or ())


def is_decoder(backbone):
    """A backbone loaded as a causal LM (load_backbone): it has an LM head to read the labels with."""
    get_head = getattr(backbone, "get_output_embeddings", None)
    return is_causal_lm(getattr(backbone, "config", None)) and get_head is not None and get_head() is not None


def label_head(backbone, token_ids):
    """The LabelHead of a decoder for the labels' first token ids: its LM head's rows, bias and softcapping."""
    lm_head = backbone.get_output_embeddings()
    index = torch.tensor(token_ids, dtype=torch.long, device=lm_head.weight.device)
    bias = getattr(lm_head, "bias", None)
    config = backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config
    scale = float(getattr(config, "logit_scale", None) or 1.0) / float(getattr(config, "logits_scaling", None) or 1.0)
    return LabelHead(lm_head.weight.detach()[index], None if bias is None else bias.detach()[index],
                     getattr(config, "final_logit_softcapping", None), scale)


def check_template(template):
    if template.count("{text}") != 1:
        raise UsageError(f"--template {template!r} must hold {{text}} once, where the text goes (and may hold "
                         f"{{labels}}, the label words); it ends where the answer starts")


def text_template(template, labels):
    """A template with the label words in place of {labels}: what remains to fill is {text}."""
    check_template(template)
    return template.replace("{labels}", ", ".join(labels))


def special_prefix(tokenizer):
    """The special tokens the tokenizer puts in front of a text (Llama's and Gemma's <bos>; none for GPT-2 and
    BLOOM). Those it would put after (an </s>) are left out: the answer follows the template."""
    sample = "a b"
    plain = tokenizer(sample, add_special_tokens=False)["input_ids"]
    full = tokenizer(sample, add_special_tokens=True)["input_ids"]
    at = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
    return list(full[:at])


def filled(tokenizer, template, texts, chat):
    """The texts in the template, through the tokenizer's chat template as the user's turn when chat."""
    texts = [template.replace("{text}", t) for t in texts]
    if not chat:
        return texts
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


def template_ids(tokenizer, texts, template, max_length, chat=False):
    """Token ids of the texts in a decoder's template, each row at most max_length tokens: the text is cut (by its
    own tokens) so that the template's end, where the answer starts, stays."""
    prefix = [] if chat else special_prefix(tokenizer)

    def encode(batch):
        return [prefix + list(ids) for ids in tokenizer(filled(tokenizer, template, batch, chat),
                                                      add_special_tokens=False)["input_ids"]]

    rows = encode(list(texts)) if texts else []
    for i, text in enumerate(texts):
        words = None
        while len(rows[i]) > max_length:
            words = tokenizer(text, add_special_tokens=False)["input_ids"] if words is None else words
            words = words[:max(0, len(words) - (len(rows[i]) - max_length))]
            rows[i] = encode([tokenizer.decode(words) if words else ""])[0]
            if not words:
                break
    return rows


def decoder_template(tokenizer, labels, template, max_length, chat=False, name="the backbone"):
    """{"text_template", "chat_template", "label_token_ids"} of a decoder run: the labels' first tokens as the
    answer after the template (with a space unless the template ends in one, as lm-evaluation-harness joins
    context and continuation); UsageError where two labels share their first token or the template leaves no room
    for text in max_length tokens."""
    template = text_template(template, labels)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"--chat-template: the tokenizer of {name} has no chat template; leave the flag out")
    prefix = [] if chat else special_prefix(tokenizer)
    (context,) = filled(tokenizer, template, ["x"], chat)
    context_ids = prefix + tokenizer(context, add_special_tokens=False)["input_ids"]
    empty = len(template_ids(tokenizer, [""], template, 10 ** 9, chat)[0])
    if empty >= max_length:
        raise UsageError(f"the template takes {empty} tokens, so --max-length {max_length} leaves no room for "
                         f"text: raise --max-length above {empty} or shorten --template")
    ids, first = [], {}
    for label in labels:
        answer = label if context[-1:].isspace() else " " + label
        whole = prefix + tokenizer(context + answer, add_special_tokens=False)["input_ids"]
        if whole[:len(context_ids)] == context_ids and len(whole) > len(context_ids):
            token = whole[len(context_ids)]
        else:  # the tokenizer merged the answer into the context's last token: the answer's own first token
            token = tokenizer(answer, add_special_tokens=False)["input_ids"][0]
        if token in first:
            raise UsageError(f"labels {first[token]!r} and {label!r} both begin with the token "
                             f"{tokenizer.convert_ids_to_tokens(token)!r} under the tokenizer of {name}, and a decoder "
                             f"scores a label by its first token: rename one (labels.txt) so that they begin "
                             f"differently")
        first[token] = label
        ids.append(int(token))
    return {"text_template": template, "chat_template": bool(chat), "label_token_ids": ids}


def count_parameters(model):
    """(trainable, total, trainable share of total in %)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total, 100.0 * trainable / total


def describe_parameters(model):
    trainable, total, share = count_parameters(model)
    return f"trainable parameters: {trainable / 1e6:.2f}M of {total / 1e6:.1f}M ({share:.3f} %)"


def check_backbone_path(name):
    """A backbone named by a path that is no folder is a UsageError saying so, not a hub error about repo ids."""
    if str(name).startswith((".", "/", "~")) and not Path(name).expanduser().is_dir():
        relative = "" if Path(name).expanduser().is_absolute() else (
            ": a relative path is read from the working folder, so run from the one it was given in, or name the "
            "folder where it is now")
        raise UsageError(f"cannot load the backbone {name!r}: it is a path, and "
                         f"{Path(name).expanduser().absolute()} is no folder{relative}")


def load_backbone(name, device="cpu", precision="fp32"):
    """(frozen backbone in float32 on device, its tokenizer); a UsageError in one line when `name` cannot be loaded.

    float32 whatever dtype the checkpoint was stored in (transformers 5 would keep bf16 or fp16; on CUDA
    autocast does the bf16 work). The pooler is never used: it is left out where the architecture
    allows, and the checkpoint's pooler weights are dropped without transformers' load report.
    A decoder (is_causal_lm) loads as AutoModelForCausalLM, for its LM head's label rows (never its full logits),
    and in bf16 when precision is "bf16", so that a 7-8B model's frozen weights take 2 bytes a parameter; a
    tokenizer without a pad token pads with its end-of-text token (right padding, masked: any id does).
    """
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    dtype = {dtype_key: torch.float32}
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the report lists the unused pooler as if it were a fault
    transformers.logging.disable_progress_bar()  # a bar of a second would break one-line error messages
    check_backbone_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        if is_causal_lm(AutoConfig.from_pretrained(name)):
            dtype = {dtype_key: torch.bfloat16 if precision == "bf16" else torch.float32}
            backbone, info = AutoModelForCausalLM.from_pretrained(name, output_loading_info=True, **dtype)
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        else:
            try:
                backbone, info = AutoModel.from_pretrained(name, add_pooling_layer=False, output_loading_info=True,
                                                           **dtype)
            except TypeError:  # an architecture without a pooler option
                backbone, info = AutoModel.from_pretrained(name, output_loading_info=True, **dtype)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot load the backbone {name!r} ({first}); name a local folder or a hub name that "
                         f"this machine can reach (train.py --model)") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    missing = sorted(k for k in info.get("missing_keys", ()) if "pooler" not in k)
    if missing:  # unexpected keys (a pooler, a masked-LM head) are normal; missing ones are random weights
        warnings.warn(f"{name}: {len(missing)} backbone weights are not in the checkpoint and were initialised "
                      f"at random ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})", stacklevel=2)
    return backbone.requires_grad_(False).to(device), tokenizer


# ---- the inference artifact: prompt.safetensors + config.json --------------------------------

def check_writable(path, what, kind="folder"):
    """A folder (or file) that this process can make or write: not a file (a folder), not below a file, not a
    link to nothing, and below a folder it may write in. what names it in the message, e.g. "--out"."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{what} {path} is a link to {os.readlink(path)}, which does not exist: name another {kind}")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file: name a folder")
    if kind == "file" and path.is_dir():
        raise UsageError(f"{what} {path} is a folder: name a file")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{what} {path} is below {parent}, which is a file: name a {kind} elsewhere")
    # what is written lands by a rename in a folder: that folder (or the nearest one there) must be writable
    there = next(p for p in ((path,) if kind == "folder" else ()) + tuple(path.parents) if p.exists())
    if not os.access(there, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {there} is read-only for this process: name a {kind} elsewhere")


def plain_mode():
    """The mode open() gives a new file under this process's umask (0644 under umask 022). mkstemp makes its
    files 0600, which a group's shared folder cannot read: what is renamed into place gets this mode instead."""
    mask = os.umask(0o077)  # the only way to read the umask; for the moment between, the stricter one
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write):
    """Call write(tmp_path), then rename into place: a kill never leaves a torn file. The file gets the mode a
    plain open() would give it (plain_mode)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, plain_mode())  # after write: a writer that makes the file anew must not undo it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    atomic_write(path, write)


def artifact_tensors(model):
    """What inference needs of a classifier: its prompt, computed once (dropout off), and its head; float32, CPU."""
    prompt = model.prompt.prompt if isinstance(model.prompt, StaticPrompt) else model.static_prompt()
    tensors = {"prompt": prompt.detach().float().cpu().contiguous()}
    return tensors | {f"head.{k}": v.detach().float().cpu().clone().contiguous() for k, v in model.head.state_dict().items()}


def save_artifact(tensors, out_dir, config):
    """Write prompt.safetensors (artifact_tensors) and then config.json into out_dir, each by a rename.

    config must name at least: model, labels, method, xpe_frac, n_spt, n_xpe, prompt_len, max_length.
    """
    missing = [k for k in ("model", "labels", "method", "xpe_frac", "n_spt", "n_xpe", "prompt_len", "max_length")
               if k not in config]
    if missing:
        raise UsageError(f"artifact config lacks {', '.join(missing)}")
    check_finite(tensors, out_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / ARTIFACT_WEIGHTS, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(out_dir / ARTIFACT_CONFIG, config)


def read_artifact(artifact_dir):
    """(tensors, config) of an artifact folder; a UsageError says what is missing."""
    artifact_dir = Path(artifact_dir)
    weights, config_path = artifact_dir / ARTIFACT_WEIGHTS, artifact_dir / ARTIFACT_CONFIG
    for path in (weights, config_path):
        if not path.is_file():
            raise UsageError(f"{artifact_dir} holds no inference artifact: {path.name} is missing "
                             f"(a finished or evaluated training run writes it)")
    try:
        tensors = load_file(str(weights))
        config = json.loads(config_path.read_text(), object_pairs_hook=unique_keys)
    except Exception as e:  # safetensors and json raise several kinds; the user needs one line
        raise UsageError(f"{artifact_dir}: cannot read the artifact ({type(e).__name__}: {e})") from None
    expected = {"prompt", "head.dense.weight", "head.dense.bias", "head.out_proj.weight", "head.out_proj.bias"}
    if isinstance(config, dict) and config.get("readout") == READOUT:  # a decoder's: its LM head reads
        expected = {"prompt"}
    if set(tensors) != expected:
        raise UsageError(f"{weights}: expected the tensors {sorted(expected)}, found {sorted(tensors)}")
    check_finite(tensors, weights)
    return tensors, config


def check_finite(tensors, where):
    """An artifact's prompt and head hold numbers: a NaN or an infinity would score as chance and predict NaN."""
    bad = sorted(name for name, t in tensors.items() if not torch.isfinite(t).all())
    if bad:
        raise UsageError(f"{where}: {', '.join(bad)} hold{'s' if len(bad) == 1 else ''} values that are not finite "
                         f"(NaN or infinite): not a usable prompt")


def load_artifact(artifact_dir, backbone):
    """A PromptClassifier with the static prompt and head of an artifact, on `backbone`, in eval mode."""
    tensors, config = read_artifact(artifact_dir)
    prompt, d = tensors["prompt"], hidden_size(backbone)
    if prompt.ndim != 2 or prompt.shape[1] != d:
        raise UsageError(f"{artifact_dir}: the prompt is {tuple(prompt.shape)} but the backbone's hidden size "
                         f"is {d}; use the backbone the artifact was trained with ({config.get('model', '?')})")
    device = backbone.get_input_embeddings().weight.device
    if config.get("readout") == READOUT or is_decoder(backbone):
        return load_decoder_artifact(artifact_dir, backbone, prompt, config), config
    num_labels = tensors["head.out_proj.weight"].shape[0]
    head = ClassificationHead(d, num_labels)
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
    return PromptClassifier(backbone, StaticPrompt(prompt), head).to(device).eval(), config


def load_decoder_artifact(artifact_dir, backbone, prompt, config):
    """A decoder artifact's classifier: its prompt, and the backbone's LM head rows of config's label token ids."""
    if config.get("readout") != READOUT or not is_decoder(backbone):
        trained, given = ("a decoder" if config.get("readout") else "an encoder",
                          "a decoder" if is_decoder(backbone) else "an encoder")
        raise UsageError(f"{artifact_dir}: the artifact was trained on {trained} and the backbone is {given}; use the "
                         f"backbone it was trained with ({config.get('model', '?')})")
    ids, vocabulary = config.get("label_token_ids"), backbone.get_output_embeddings().weight.shape[0]
    labels = config.get("labels") or []
    if (not isinstance(ids, list) or len(ids) != len(labels) or len(set(ids)) != len(ids)
            or not all(type(i) is int and 0 <= i < vocabulary for i in ids)
            or not isinstance(config.get("text_template"), str) or "{text}" not in config["text_template"]):
        raise UsageError(f"{artifact_dir}: config.json's label_token_ids and text_template do not fit its labels and "
                         f"the backbone's vocabulary of {vocabulary}: not a decoder artifact of this backbone")
    template = {"text_template": config["text_template"], "chat_template": bool(config.get("chat_template"))}
    device = backbone.get_input_embeddings().weight.device
    return PromptClassifier(backbone, StaticPrompt(prompt), label_head(backbone, ids), template).to(device).eval()


def prompt_config_dict(cfg: PromptConfig):
    n_spt, n_xpe = split_prompt(cfg.method, cfg.xpe_frac, cfg.prompt_len)
    return {**asdict(cfg), "n_spt": n_spt, "n_xpe": n_xpe}
