"""PEFT adapters in and out: the one place that knows PEFT's file layouts (peft itself stays optional).

    python -m tools.peft_adapters export runs/xpe-joshi5-s1 peft/xpe-joshi5-s1
    python -m tools.peft_adapters import peft/their-adapter runs/their-adapter --source joshi5 --seed 1

export_peft writes a run's artifact as a PROMPT_TUNING adapter that peft loads as it is (export).

import_adapter turns a PEFT prompt adapter for sequence classification into a run folder that every
other command takes (config.json and prompt.safetensors, a train.py run's inference artifact),
reading the two files PEFT writes without importing peft:

- PROMPT_TUNING: `prompt_embeddings` is the prompt.
- P_TUNING, as peft saves it: peft runs its prompt encoder (MLP or LSTM) at save time and stores only
  the output as `prompt_embeddings`, which is what PeftModel.from_pretrained prepends: the same prompt.
- P_TUNING in the layout of the paper's authors (github.com/bmikaberidze/XPE,
  nlpka/models/cross_prompt_encoder.py; their config adds `encoder_ratio`): the SPT part
  `prompt_encoder.embedding.weight`, the pseudo-prompts `prompt_encoder.xpe_embedding.weight` and their
  MLP `prompt_encoder.xpe_head.*`, whose output follows the SPT part. The MLP runs once, dropout off, as
  our XPE's prompt encoder does when a run is saved.

A decoder run (a causal LM read through its LM head's label tokens, xpe.READOUT) goes out as a PROMPT_TUNING
adapter for CAUSAL_LM, whose PeftModel gives the same label-token logits at each row's last token under the run's
template; the template, the label words and their token ids ride in the weights' metadata, so that an import
takes them back. A CAUSAL_LM prompt adapter of someone else's comes in with --labels and --template (default
xpe.DEFAULT_TEMPLATE), the label token ids found with the backbone's tokenizer.

The head: XLM-R's RobertaClassificationHead (`classifier.dense`, `classifier.out_proj`) is our head as it
is; BERT's is tanh(pooler.dense(h[:, 0])) then one Linear, so `bert.pooler.dense` becomes our dense and
`classifier` our out_proj. Whatever cannot be mapped is refused with an UsageError naming the key.
"""
import json
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import data
import evaluate
import train
import xpe
from xpe import UsageError

ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_BIN = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
RUN_FILES = (xpe.ARTIFACT_CONFIG, xpe.ARTIFACT_WEIGHTS)
AUTHORS = "the authors' cross prompt encoder (bmikaberidze/XPE)"
# where each backbone's *ForSequenceClassification keeps the parts of our head, by model_type
HEADS = {"xlm-roberta": {"dense": "classifier.dense", "out_proj": "classifier.out_proj"},
         "roberta": {"dense": "classifier.dense", "out_proj": "classifier.out_proj"},
         "bert": {"dense": "bert.pooler.dense", "out_proj": "classifier"}}
# BERT's classifier is tanh(pooler.dense(h[:, 0])) then one Linear, so our dense becomes the pooler's: an
# export lists the pooler as a module peft must keep besides the classifier
EXPORT_MODULES = {"bert": ["pooler"]}
EXPORT_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
LABELS_KEY = "xpe_labels"  # an export's labels, in the weights' metadata
TEMPLATE_KEY = "xpe_template"  # a decoder export's text template, chat switch and label token ids, there too
TEXT = ("a string", lambda v: isinstance(v, str))
COUNT = (train.COUNT.words(), train.COUNT.holds)
# Every field of adapter_config.json that the import reads, with what it must hold when it is there (null: not
# there), so that a wrong type is one line and not a traceback further on; a field that is one of train.py's settings
# (the prompt's length, the encoder's size, the authors' ratio) takes the values declared for it (train.Values), and
# what the others mean (a prompt's peft_type, one submodule) is checked where it is used.
CONFIG_FIELDS = {
    "peft_type": TEXT, "task_type": TEXT, "base_model_name_or_path": TEXT, "token_dim": COUNT,
    "num_transformer_submodules": COUNT,
    **{field: (train.values_of(name).words(), train.values_of(name).holds) for field, name in (
        ("num_virtual_tokens", "prompt_len"), ("encoder_hidden_size", "encoder_hidden"),
        ("encoder_ratio", "xpe_frac"))},
    "encoder_reparameterization_type": TEXT,
    "id2label": ("an object of label names",
                 lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
}


def read_adapter(adapter_dir):
    """(adapter config, tensors) of a PEFT adapter folder, the tensors' keys as PEFT's saver leaves them."""
    folder = Path(adapter_dir)
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise UsageError(f"{folder} is not a PEFT adapter: {ADAPTER_CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text(), object_pairs_hook=xpe.unique_keys)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{config_path} is not JSON ({e})") from None
    if not isinstance(config, dict):
        raise UsageError(f"{config_path} holds a JSON {type(config).__name__}, not the JSON object PEFT writes")
    for field, (kind, holds) in CONFIG_FIELDS.items():
        if config.get(field) is not None and not holds(config[field]):
            raise UsageError(f"{config_path}: {field} must be {kind}, got {json.dumps(config[field])}")
    try:
        if (folder / ADAPTER_WEIGHTS).is_file():
            tensors = load_file(str(folder / ADAPTER_WEIGHTS))
        elif (folder / ADAPTER_BIN).is_file():
            tensors = torch.load(folder / ADAPTER_BIN, map_location="cpu", weights_only=True)
        else:
            raise UsageError(f"{folder} holds no {ADAPTER_WEIGHTS} (nor {ADAPTER_BIN})")
    except UsageError:
        raise
    except Exception as e:  # safetensors and torch raise several kinds; the user needs one line
        raise UsageError(f"{folder}: cannot read the adapter's weights ({type(e).__name__}: {e})") from None
    # The authors' saver drops "modules_to_save." and ".default" from its keys; a raw state dict keeps them.
    tensors = {re.sub(r"\.(modules_to_save\.)?default(?=\.)", "", k): v.float() for k, v in tensors.items()}
    return config, tensors


def mlp_output(tensors, prefix, x, stride, where):
    """Run the Linear layers prefix.{0, stride, 2*stride, ...} with ReLU between them (dropout off)."""
    found = sorted({int(m.group(1)) for k in tensors for m in [re.match(re.escape(prefix) + r"(\d+)\.weight$", k)] if m})
    if not found or found != list(range(0, stride * len(found), stride)):
        raise UsageError(f"{where}: {prefix}* holds the layers {found or 'none'}, not Linear layers at "
                           f"0, {stride}, {2 * stride}, ... as its encoder builds them")
    for n, i in enumerate(found):
        weight, bias = tensors[f"{prefix}{i}.weight"], tensors.get(f"{prefix}{i}.bias")
        if weight.ndim != 2 or weight.shape[1] != x.shape[-1] or bias is None or bias.shape != weight.shape[:1]:
            raise UsageError(f"{where}: {prefix}{i}.weight {tuple(weight.shape)} (or its bias) does not take "
                               f"the {x.shape[-1]} features that reach it")
        x = torch.nn.functional.linear(x, weight, bias)
        if n < len(found) - 1:
            x = torch.relu(x)
    return x, [f"{prefix}{i}.{kind}" for i in found for kind in ("weight", "bias")]


def authors_prompt(config, tensors, where):
    """(prompt, method, xpe_frac, keys used) of the authors' CrossPromptEncoder, as its forward builds it."""
    ratio = float(config["encoder_ratio"])
    kind = (config.get("encoder_reparameterization_type") or "MLP").split(".")[-1].upper()
    if kind not in ("MLP", "NONE") and ratio > 0:
        raise UsageError(f"{where}: encoder_reparameterization_type {kind!r} of {AUTHORS} is not supported "
                           f"(MLP and NONE are)")
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise UsageError(f"{where}: num_transformer_submodules {config['num_transformer_submodules']} is not 1: "
                           f"an encoder-decoder prompt")
    total = config["num_virtual_tokens"]
    method = "spt" if ratio == 0 else "xpe" if ratio == 1 else "dual"
    try:  # their split: n_xpe = max(1, min(P - 1, int(P * ratio))), ours by the same rule
        n_spt, n_xpe = xpe.split_prompt(method, ratio, total)
    except ValueError as e:
        raise UsageError(f"{where}: encoder_ratio {ratio} and num_virtual_tokens {total}: {e}") from None
    parts, used = [], []
    if n_spt:
        used.append("prompt_encoder.embedding.weight")
        parts.append(tensor_of(tensors, used[-1], (n_spt, None), where))
    if n_xpe:
        name = "prompt_encoder.xpe_embedding.weight"
        if name not in tensors and n_spt == 0 and "prompt_encoder.embedding.weight" in tensors:
            name = "prompt_encoder.embedding.weight"  # older XPE checkpoints, which their loader maps the same way
        used.append(name)
        pseudo = tensor_of(tensors, name, (n_xpe, None), where)
        if kind == "NONE":
            parts.append(pseudo)
        else:
            out, layers = mlp_output(tensors, "prompt_encoder.xpe_head.", pseudo, 3, where)
            parts.append(out)
            used += layers
    if "prompt_embeddings" in tensors:  # peft's own saver's copy of an encoder output; their loader drops it
        used.append("prompt_embeddings")
    return torch.cat(parts), method, ratio, used


def tensor_of(tensors, key, shape, where):
    """tensors[key], checked against shape (None: any size); refused naming the key."""
    if key not in tensors:
        raise UsageError(f"{where} lacks {key}")
    t = tensors[key]
    if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = " x ".join("any" if s is None else str(s) for s in shape)
        raise UsageError(f"{where}: {key} is {tuple(t.shape)}, expected {want}")
    return t


def adapter_prompt(config, tensors, where):
    """(P x d prompt, method, xpe_frac, layout, keys used) of a prompt adapter."""
    peft_type = (config.get("peft_type") or "").split(".")[-1]
    task = (config.get("task_type") or "").split(".")[-1]
    if task not in ("SEQ_CLS", "CAUSAL_LM"):
        raise UsageError(f"{where}: task_type {task or None!r} is neither SEQ_CLS nor CAUSAL_LM: only "
                           f"sequence-classification adapters (a head) and causal-LM ones (its label tokens) score")
    if peft_type not in ("PROMPT_TUNING", "P_TUNING"):
        raise UsageError(f"{where}: peft_type {peft_type or None!r} is not a prompt (PROMPT_TUNING or P_TUNING); "
                           f"prefix tuning and LoRA change the backbone itself")
    if config.get("num_virtual_tokens") is None:
        raise UsageError(f"{where}: {ADAPTER_CONFIG} lacks num_virtual_tokens, the prompt's length, which PEFT "
                           f"writes and needs to load it")
    if peft_type == "P_TUNING" and config.get("encoder_ratio") is not None:
        prompt, method, frac, used = authors_prompt(config, tensors, where)
        return prompt, method, frac, AUTHORS, used
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise UsageError(f"{where}: num_transformer_submodules {config['num_transformer_submodules']} is not 1: "
                           f"an encoder-decoder prompt")
    prompt = tensor_of(tensors, "prompt_embeddings", (config["num_virtual_tokens"], None), where)
    # P-tuning's prompt_embeddings are its prompt encoder's output, as peft's own model prepends them.
    method, frac = ("spt", 0.0) if peft_type == "PROMPT_TUNING" else ("xpe", 1.0)
    return prompt, method, frac, f"peft {peft_type}", ["prompt_embeddings"]


def adapter_head(tensors, model_type, backbone_name, where):
    """(our head's tensors dense.*, out_proj.*, keys used) from the adapter's classifier (BERT: and pooler)."""
    if model_type not in HEADS:
        raise UsageError(f"{where}: the backbone {backbone_name} is {model_type!r}; the import maps the heads of "
                           f"{', '.join(sorted(HEADS))} (model_type)")
    head, used = {}, []
    for part, path in HEADS[model_type].items():
        for kind in ("weight", "bias"):
            key = f"base_model.{path}.{kind}"
            if key in tensors:
                head[f"{part}.{kind}"] = tensors[key]
                used.append(key)
    missing = [f"base_model.{p}.{k}" for part, p in HEADS[model_type].items() for k in ("weight", "bias")
               if f"{part}.{k}" not in head]
    if model_type == "bert" and missing and all(".pooler." in k for k in missing):
        head.update(checkpoint_pooler(backbone_name, missing[0], where))
    elif missing:
        raise UsageError(f"{where} lacks {missing[0]}: the adapter does not carry the classification head "
                           f"(peft saves it as a module of modules_to_save)")
    d = head["dense.weight"].shape[1] if head["dense.weight"].ndim == 2 else -1
    shapes_ok = (head["dense.weight"].shape == (d, d) and head["dense.bias"].shape == (d,)
                 and head["out_proj.weight"].ndim == 2 and head["out_proj.weight"].shape[1] == d
                 and head["out_proj.bias"].shape == head["out_proj.weight"].shape[:1])
    if not shapes_ok:
        raise UsageError(f"{where}: the head's weights ({', '.join(f'{k} {tuple(v.shape)}' for k, v in head.items())}) "
                           f"are not a dense d x d and an out_proj labels x d")
    return head, used


def checkpoint_pooler(backbone_name, key, where):
    """BERT's pooler from the backbone's own checkpoint, as peft's model has it when the adapter does not."""
    import transformers
    from transformers import AutoModel

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report would list the head of a task as missing
    try:
        model, info = AutoModel.from_pretrained(backbone_name, output_loading_info=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{where} lacks {key}, and the backbone {backbone_name} cannot be loaded for its "
                           f"pooler ({first})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if any("pooler" in k for k in info.get("missing_keys", ())) or getattr(model, "pooler", None) is None:
        raise UsageError(f"{where} lacks {key} and the backbone {backbone_name} has no pooler in its checkpoint: "
                           f"peft's own model would draw it at random; save the adapter with 'pooler' in "
                           f"modules_to_save")
    dense = model.pooler.dense
    return {"dense.weight": dense.weight.detach().float().clone(), "dense.bias": dense.bias.detach().float().clone()}


def backbone_config(name, where):
    from transformers import AutoConfig

    xpe.check_backbone_path(name)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{where}: cannot read the backbone's config {name!r} ({first}); name a local folder "
                           f"or a reachable hub name (--model)") from None


def exported_labels(adapter_dir):
    """The labels an export of ours put in the weights' metadata (LABELS_KEY), else None."""
    path = Path(adapter_dir) / ADAPTER_WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as f:
            labels = json.loads((f.metadata() or {}).get(LABELS_KEY, "null"))
    except Exception:  # no such file, another format, or metadata of someone else's: no labels from here
        return None
    return labels if isinstance(labels, list) and labels else None


def adapter_labels(labels, config, adapter_dir, num_labels, layout, where):
    """The run's labels: given, else the adapter's id2label, else SIB-200's for the authors' 7-way heads."""
    if labels is None:
        saved = config.get("id2label")
        model_config = Path(adapter_dir) / "config.json"  # a model config saved beside the adapter
        if saved is None and model_config.is_file():
            try:
                model = json.loads(model_config.read_text())
            except (ValueError, UnicodeDecodeError):
                model = None
            saved = model.get("id2label") if isinstance(model, dict) else None
            holds = CONFIG_FIELDS["id2label"][1]  # read as the adapter's own id2label is, or not at all
            saved = saved if holds(saved) else None
        if saved and not all(re.fullmatch(r"LABEL_\d+", str(v)) for v in saved.values()):  # not transformers' default
            if sorted(map(str, saved)) != sorted(map(str, range(len(saved)))):
                raise UsageError(f"{where}: id2label is keyed {sorted(saved)[:3]}, not 0 to {len(saved) - 1}: "
                                   f"give the labels in the head's order (--labels)")
            labels = [saved[k] for k in sorted(saved, key=int)]
        elif exported_labels(adapter_dir):
            labels = exported_labels(adapter_dir)
        elif layout == AUTHORS and num_labels == len(data.LABELS):
            labels = list(data.LABELS)  # their configs list SIB-200's names in this order (sib200_hybrid.xpe.yml)
        else:
            raise UsageError(f"{where}: the head has {num_labels} outputs and the adapter names no labels "
                               f"(id2label): give them in the head's order (--labels)")
    labels = [str(x).strip() for x in labels]  # as data.py reads a label: "travel " is travel
    twice = next((x for x in labels if labels.count(x) > 1), None)
    if "" in labels or twice is not None:
        raise UsageError(f"{where}: the labels {', '.join(map(repr, labels[:8]))}{', ...' if len(labels) > 8 else ''} "
                           + (f"name {twice!r} twice" if twice is not None else "hold an empty one")
                           + ": give each of the head's outputs a label of its own (--labels)")
    if len(labels) != num_labels:
        raise UsageError(f"{where}: {len(labels)} labels ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''}) "
                           f"for a head of {num_labels} outputs; give one distinct label an output")
    return labels


def check_out(out_dir):
    """A new or empty folder, or an earlier import (only our files): nothing else is overwritten."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: name a new folder, an empty one or an earlier import")
    if not out.is_dir():
        return out
    ours = tuple(f".{name}." for name in RUN_FILES)  # xpe.atomic_write's temporary names, left by a kill
    foreign = sorted(p.name for p in out.iterdir()
                     if p.name not in RUN_FILES and not (p.name.startswith(ours) and p.name.endswith(".tmp")))
    earlier = out / xpe.ARTIFACT_CONFIG
    if not foreign and earlier.is_file():
        try:
            config = json.loads(earlier.read_text())
        except (ValueError, UnicodeDecodeError):
            config = None
        foreign = [] if isinstance(config, dict) and "imported_from" in config else [earlier.name]
    elif not foreign and (out / xpe.ARTIFACT_WEIGHTS).exists():  # no config.json of an import says it is ours
        foreign = [xpe.ARTIFACT_WEIGHTS]
    if foreign:
        raise UsageError(f"{out} holds files of another run or of yours ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}): name a new folder, an empty one or an earlier import")
    return out


def import_adapter(adapter_dir, out_dir, labels=None, model=None, source="imported", source_languages=(), seed=0,
                   max_length=None, template=None, chat_template=None):
    """Write a PEFT prompt adapter as a run folder (config.json, prompt.safetensors); return its path.

    labels: the head's labels in order (default: the adapter's id2label; SIB-200's for the authors' 7-way
    heads). model: the backbone (default: the adapter's base_model_name_or_path). template, chat_template: a
    CAUSAL_LM adapter's (default: those an export of ours recorded, else xpe.DEFAULT_TEMPLATE without the chat
    template). max_length: default xpe.MAX_LENGTH (a CAUSAL_LM adapter: an export's own, else as many as fit
    beside the prompt, at most xpe.MAX_LENGTH). source, source_languages,
    seed: what the run was trained on, for evaluate.py's zero-shot split and its means over seeds (an
    adapter does not record them). Everything is checked before anything is written.
    """
    where = str(adapter_dir)
    config, tensors = read_adapter(adapter_dir)
    prompt, method, frac, layout, used = adapter_prompt(config, tensors, where)
    name = model or config.get("base_model_name_or_path")
    if not name:
        raise UsageError(f"{where}: the adapter names no base_model_name_or_path: give the backbone (--model)")
    backbone = backbone_config(name, where)
    if (config.get("task_type") or "").split(".")[-1] == "CAUSAL_LM":
        return import_decoder_adapter(adapter_dir, out_dir, config, tensors, prompt, method, frac, layout, used,
                                      backbone, name, labels, source, source_languages, seed, max_length, template,
                                      chat_template)
    max_length = max_length or xpe.MAX_LENGTH
    if template is not None or chat_template is not None:
        raise UsageError(f"--{'template' if template is not None else 'chat-template'} is for a CAUSAL_LM adapter, "
                         f"and {where} is a {(config.get('task_type') or '?').split('.')[-1]} one: leave it out")
    head, head_keys = adapter_head(tensors, backbone.model_type, name, where)
    left = sorted(set(tensors) - set(used) - set(head_keys))
    if left:
        raise UsageError(f"{where}: cannot map the adapter's {left[0]}" + (f" (and {len(left) - 1} more)" if len(left) > 1
                           else "") + f"; the import knows {layout}'s prompt and the classification head")
    d = backbone.hidden_size
    if prompt.shape[1] != d or head["dense.weight"].shape[1] != d or (config.get("token_dim") or d) != d:
        raise UsageError(f"{where}: the prompt is {tuple(prompt.shape)}, the head takes "
                           f"{head['dense.weight'].shape[1]} features and token_dim is {config.get('token_dim')}, but "
                           f"{name} has hidden size {d}: give the backbone the adapter was trained on (--model)")
    offset = backbone.pad_token_id + 1 if backbone.model_type in ("xlm-roberta", "roberta") else 0
    room = backbone.max_position_embeddings - offset - prompt.shape[0]
    if max_length > room:
        raise UsageError(f"{where}: {prompt.shape[0]} prompt vectors leave {room} of {name}'s positions for text, "
                           f"fewer than max_length {max_length}")
    num_labels = head["out_proj.weight"].shape[0]
    labels = adapter_labels(labels, config, adapter_dir, num_labels, layout, where)
    out = check_out(out_dir)
    write_run(out, prompt, head, run_config(config, adapter_dir, layout, name, labels, method, frac, prompt,
                                            source, source_languages, seed, max_length))
    return out


def import_decoder_adapter(adapter_dir, out_dir, config, tensors, prompt, method, frac, layout, used, backbone, name,
                           labels, source, source_languages, seed, max_length, template, chat_template):
    """A CAUSAL_LM prompt adapter as a decoder run: its prompt, and the label token ids of the template under the
    backbone's tokenizer (those an export recorded must come out the same)."""
    from transformers import AutoTokenizer

    where = str(adapter_dir)
    if not xpe.is_causal_lm(backbone):
        raise UsageError(f"{where}: a CAUSAL_LM adapter, but {name} is no causal LM ({backbone.model_type}): give the "
                         f"decoder it was trained on (--model)")
    left = sorted(set(tensors) - set(used))
    if left:
        raise UsageError(f"{where}: cannot map the adapter's {left[0]}: a CAUSAL_LM import takes the prompt alone")
    text = backbone.get_text_config() if hasattr(backbone, "get_text_config") else backbone
    d = text.hidden_size
    if prompt.shape[1] != d or (config.get("token_dim") or d) != d:
        raise UsageError(f"{where}: the prompt is {tuple(prompt.shape)} and token_dim {config.get('token_dim')}, but "
                         f"{name} has hidden size {d}: give the backbone the adapter was trained on (--model)")
    positions = getattr(text, "max_position_embeddings", None)
    recorded = exported_template(adapter_dir)
    max_length = max_length or (recorded or {}).get("max_length") or min(
        xpe.MAX_LENGTH, xpe.MAX_LENGTH if positions is None else positions - prompt.shape[0])
    if positions is not None and max_length > positions - prompt.shape[0]:
        raise UsageError(f"{where}: {prompt.shape[0]} prompt vectors leave {positions - prompt.shape[0]} of {name}'s "
                         f"positions for text, fewer than max_length {max_length}")
    if not train.values_of("max_length").holds(max_length):  # what fits beside the prompt: too few for a run
        raise UsageError(f"{where}: {prompt.shape[0]} prompt vectors leave {max_length} of {name}'s positions for "
                         f"text, and max_length must be {train.values_of('max_length').words()}: give a backbone "
                         f"with more positions (--model)")
    labels = labels or exported_labels(adapter_dir)
    if not labels:
        raise UsageError(f"{where}: a CAUSAL_LM adapter names no labels: give the label words in order (--labels)")
    labels = [str(x) for x in labels]
    if len(set(labels)) != len(labels):
        raise UsageError(f"{where}: the labels {', '.join(labels)} name one twice")
    text_template = template or (recorded or {}).get("text_template") or xpe.DEFAULT_TEMPLATE
    chat = chat_template if chat_template is not None else bool((recorded or {}).get("chat_template"))
    xpe.check_backbone_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise UsageError(f"{where}: cannot load the tokenizer of {name} ({str(e).strip().splitlines()[0]})") from None
    found = xpe.decoder_template(tokenizer, labels, text_template, max_length, chat, name)
    if recorded and not template and found["label_token_ids"] != recorded.get("label_token_ids"):
        raise UsageError(f"{where}: the export recorded the label token ids {recorded.get('label_token_ids')}, "
                         f"{name}'s tokenizer gives {found['label_token_ids']}: give the backbone it was exported from")
    out = check_out(out_dir)
    run = run_config(config, adapter_dir, layout, name, labels, method, frac, prompt, source, source_languages, seed,
                     max_length)
    run = {**{k: run[k] for k in ("model", "labels", "max_length")}, "readout": xpe.READOUT, **found, **run}
    write_run(out, prompt, {}, run)
    return out


def exported_template(adapter_dir):
    """The template, chat switch and label token ids an export of ours recorded (TEMPLATE_KEY), else None."""
    try:
        with safe_open(str(Path(adapter_dir) / ADAPTER_WEIGHTS), framework="pt") as f:
            found = json.loads((f.metadata() or {}).get(TEMPLATE_KEY, "null"))
    except Exception:  # as exported_labels: anything else is no template of ours
        return None
    if not isinstance(found, dict) or not isinstance(found.get("text_template"), str):
        return None
    if not train.values_of("max_length").holds(found.get("max_length")):  # as train.py takes it, or none
        found.pop("max_length", None)
    return found


def run_config(adapter, adapter_dir, layout, name, labels, method, frac, prompt, source, source_languages, seed,
               max_length):
    """config.json of an imported run: the artifact's keys, then what evaluate.py reads, then where it came from."""
    prompt_cfg = xpe.PromptConfig(method=method, xpe_frac=frac, prompt_len=prompt.shape[0],
                                  encoder_hidden=int(adapter.get("encoder_hidden_size") or 0),
                                  encoder_dropout=0.0, num_labels=len(labels), head_dropout=0.0)
    settings = {"steps": 0}  # the rest are the artifact's keys at the top level, each written once
    return {"model": name, "labels": labels, "max_length": max_length, **xpe.prompt_config_dict(prompt_cfg),
            "source": source, "target": "", "seed": seed,
            "source_languages": list(source_languages), "target_languages": [], "settings": settings,
            "imported_from": {"adapter": str(Path(adapter_dir).resolve()), "layout": layout,
                              "peft_type": str(adapter.get("peft_type")),
                              "base_model_name_or_path": adapter.get("base_model_name_or_path")},
            # not trained here: finished as it is, so evaluate.py scores it and train.py --resume leaves it alone
            "ended": {"why": "imported", "step": 0}}


def write_run(out, prompt, head_tensors, config):
    """The artifact, prompt.safetensors before config.json (whose "ended" says imported: nothing to train)."""
    tensors = {"prompt": prompt.detach().float().contiguous()}
    xpe.save_artifact(tensors | {f"head.{k}": v.float().contiguous() for k, v in head_tensors.items()}, out, config)


# ---- out: a run's artifact as a PEFT prompt-tuning adapter (export) ------------------

def export_peft(run_dir, out_dir):
    """Write run_dir's artifact into out_dir as a PEFT adapter, PROMPT_TUNING for SEQ_CLS; (adapter config, N).

    Without importing peft: the two files are laid out as peft 0.14 and later save them, so that
    PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=N), out_dir)
    gives our logits. A UsageError in one line, before anything is written, for what the user can fix.
    """
    tensors, _ = xpe.read_artifact(run_dir)
    config = train.read_run_config(run_dir, str(run_dir))
    backbone = backbone_config(config["model"], run_dir)
    if config.get("readout") == xpe.READOUT:
        return export_decoder(run_dir, out_dir, tensors, config, backbone)
    if backbone.model_type not in HEADS:
        raise UsageError(f"export supports the backbones {', '.join(sorted(HEADS))} (model_type), "
                         f"not {backbone.model_type!r} of {config['model']}")
    prompt, num_labels = tensors["prompt"], len(config["labels"])
    head_labels = tensors["head.out_proj.weight"].shape[0]
    if prompt.ndim != 2 or prompt.shape[1] != backbone.hidden_size or head_labels != num_labels:
        raise UsageError(f"{run_dir}: the prompt {tuple(prompt.shape)} and the head for {head_labels} labels do not "
                         f"fit {config['model']} (hidden size {backbone.hidden_size}) and the {num_labels} labels "
                         f"of its config.json")
    out = check_export_out(out_dir)

    heads, extra_modules = HEADS[backbone.model_type], EXPORT_MODULES.get(backbone.model_type, [])
    # PEFT saves the prompt as prompt_embeddings and the modules it keeps under base_model.<module path>.
    weights = {"prompt_embeddings": prompt}
    for part, path in heads.items():
        for kind in ("weight", "bias"):
            weights[f"base_model.{path}.{kind}"] = tensors[f"head.{part}.{kind}"]
    weights = {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}
    adapter = prompt_tuning_config("SEQ_CLS", config["model"], prompt.shape[0], backbone)
    if extra_modules:
        # The pooler loads without this (its weights are plain keys of the state dict), but only a listed
        # module is wrapped by peft 0.17 and later: trained on and saved again. peft 0.14 to 0.16 have no such
        # field; they warn that they ignore it and load the same weights.
        adapter["modules_to_save"] = extra_modules
    write_export(out, adapter, weights, config["labels"])
    return adapter, num_labels


def prompt_tuning_config(task_type, model, num_virtual_tokens, text_config):
    """adapter_config.json of an export: the fields of peft 0.14's PromptTuningConfig, with the values its
    save_pretrained writes; no later field, which 0.14 to 0.16 would warn about (export_peft adds modules_to_save
    where a backbone needs it)."""
    return dict(peft_type="PROMPT_TUNING", task_type=task_type, base_model_name_or_path=model, revision=None,
                auto_mapping=None, inference_mode=True, num_virtual_tokens=num_virtual_tokens,
                token_dim=text_config.hidden_size, num_transformer_submodules=1,
                num_attention_heads=text_config.num_attention_heads, num_layers=text_config.num_hidden_layers,
                prompt_tuning_init="RANDOM", prompt_tuning_init_text=None, tokenizer_name_or_path=None,
                tokenizer_kwargs=None)


def write_export(out, adapter, weights, labels, extra_metadata=None):
    """The two files of an export into out, once check_earlier_export has taken it: the weights first (a kill
    between leaves them, still ours), then the config. The labels ride in the weights' metadata (peft reads none of
    it), so that an import takes them back."""
    from safetensors.torch import save_file

    check_earlier_export(out, adapter)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", LABELS_KEY: json.dumps(list(labels)), **(extra_metadata or {})}
    xpe.atomic_write(out / EXPORT_FILES[1], lambda tmp: save_file(weights, tmp, metadata=metadata))
    xpe.atomic_write_json(out / EXPORT_FILES[0], adapter)


def check_export_out(out_dir):
    """export's folder: new, empty, or holding only our two files (and the temporary names of a killed export)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"export: {out} is a file: name a new folder, an empty one or a previous export")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_FILES and not
                     (p.name.startswith(".adapter_") and p.name.endswith(".tmp"))) if out.is_dir() else []
    if foreign:
        raise UsageError(f"export: {out} holds other files ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): name a new folder, an empty one or a previous "
                         f"export")
    return out


def export_decoder(run_dir, out_dir, tensors, config, backbone):
    """A decoder run as a PROMPT_TUNING adapter for CAUSAL_LM: PeftModelForCausalLM prepends the prompt to the
    token embeddings as we do, so its logits of the label tokens at a row's last token are ours."""
    if not xpe.is_causal_lm(backbone):
        raise UsageError(f"{run_dir} is a decoder run, but {config['model']} is no causal LM ({backbone.model_type})")
    text = backbone.get_text_config() if hasattr(backbone, "get_text_config") else backbone
    prompt = tensors["prompt"]
    if prompt.ndim != 2 or prompt.shape[1] != text.hidden_size:
        raise UsageError(f"{run_dir}: the prompt {tuple(prompt.shape)} does not fit {config['model']} (hidden size "
                         f"{text.hidden_size})")
    out = check_export_out(out_dir)
    adapter = prompt_tuning_config("CAUSAL_LM", config["model"], prompt.shape[0], text)
    recorded = {k: config[k] for k in ("text_template", "chat_template", "label_token_ids", "max_length")}
    weights = {"prompt_embeddings": prompt.detach().float().cpu().contiguous()}
    write_export(out, adapter, weights, config["labels"], {TEMPLATE_KEY: json.dumps(recorded)})
    return adapter, len(config["labels"])


def check_earlier_export(out, adapter):
    """The files of an export already in out are replaced only where they are one export wrote: an
    adapter_config.json with exactly the fields of a PROMPT_TUNING export (another adapter, a LoRA, has others), and
    the weights with our labels in their metadata (LABELS_KEY), which peft's own save of a prompt-tuning adapter,
    fields and all like ours, lacks. The weights are written first: a kill between leaves them alone, still ours."""
    config_path = out / ADAPTER_CONFIG
    if config_path.is_file():
        try:
            theirs = json.loads(config_path.read_text())
        except (ValueError, UnicodeDecodeError):
            theirs = None
        if not isinstance(theirs, dict) or set(theirs) != set(adapter) or theirs.get("peft_type") != "PROMPT_TUNING":
            kind = theirs.get("peft_type") if isinstance(theirs, dict) else None
            raise UsageError(f"export: {out} holds an adapter that export did not write "
                             f"({kind or 'not one of ours'}): name a new folder, an empty one or a previous export")
    there = [name for name in EXPORT_FILES if (out / name).exists()]
    if there and exported_labels(out) is None:
        raise UsageError(f"export: {out} holds {' and '.join(there)} that export did not write (no labels of ours in "
                         f"its weights): name a new folder, an empty one or a previous export")


def peft_load_line(adapter, num_labels, out_dir):
    """The Python line that loads an export with peft and transformers alone."""
    if adapter["task_type"] == "CAUSAL_LM":
        return (f"from peft import PeftModel; from transformers import AutoModelForCausalLM; model = "
                f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("
                f"{adapter['base_model_name_or_path']!r}), {str(out_dir)!r})")
    return (f"from peft import PeftModel; from transformers import AutoModelForSequenceClassification; "
            f"model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained("
            f"{adapter['base_model_name_or_path']!r}, num_labels={num_labels}), {str(out_dir)!r})")


# ---- the command line ------------------------------------------------------------------------------------

def check_apart(read, out, what):
    """The folder a command writes is neither the folder it reads nor in it (where it would be a stranger's file)."""
    read, written = Path(read).resolve(), Path(out).resolve()
    if written == read or read in written.parents:
        raise UsageError(f"{what} {out} is {'' if written == read else 'in '}{read}, the folder this call reads: "
                         f"name a folder elsewhere")


def export_main(args):
    """export RUN ADAPTER_DIR: one run's artifact as a PEFT adapter; nothing is scored."""
    found = evaluate.find_runs([args.run], evaluate.note)
    if len(found) != 1:
        raise UsageError(f"export takes one run; {args.run} holds {len(found)}: name one of them")
    xpe.check_writable(args.adapter, "export's ADAPTER_DIR")
    check_apart(found[0], args.adapter, "export's ADAPTER_DIR")
    adapter, num_labels = export_peft(found[0], args.adapter)
    print(f"wrote {found[0]} as a PEFT prompt-tuning adapter ({adapter['num_virtual_tokens']} virtual tokens, "
          f"{num_labels} labels) to {args.adapter} ({', '.join(EXPORT_FILES)}); load it with: "
          f"{peft_load_line(adapter, num_labels, args.adapter)}")
    if adapter["task_type"] == "CAUSAL_LM":
        print(f"in lm-evaluation-harness: lm_eval --model hf --model_args pretrained="
              f"{adapter['base_model_name_or_path']},peft={args.adapter} (its task's template must be the run's "
              f"text_template in {found[0] / xpe.ARTIFACT_CONFIG} to score as we do: docs/decoders.md)")
    return 0


def import_main(args):
    """import ADAPTER_DIR RUN: a PEFT prompt adapter as a run folder that scoring, --predict and export take."""
    seeds = train.parse_seeds(args.seed)  # the one home of a seed's range
    if args.max_length is not None:
        train.check_setting("max_length", args.max_length)
    if len(seeds) != 1:
        raise UsageError(f"--seed {args.seed}: an adapter is one run, so one seed")
    source_languages = ()
    if args.source:
        groups, codes = data.groups_and_codes(args.groups_file, args.data_dir)
        source_languages = data.resolve_languages(args.source, groups, codes)
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    check_apart(args.adapter, args.run, "import's RUN")
    source = data.canonical_spec(args.source) if args.source else "imported"  # as train.py records a source
    out = import_adapter(args.adapter, args.run, labels=labels, model=args.model, source=source,
                         source_languages=source_languages, seed=seeds[0], max_length=args.max_length,
                         template=args.template,
                         chat_template=True if args.chat_template else None)
    print(f"wrote {args.adapter} as the run {out}; score it with: python evaluate.py --runs {out}")
    return 0


def parser():
    p, path = train.Parser(prog="python -m tools.peft_adapters", description=__doc__.split("\n")[0]), train.path_text
    commands = p.add_subparsers(dest="command", required=True)
    out = commands.add_parser("export", help="write one run as a PEFT prompt-tuning adapter that "
                                             "peft.PeftModel.from_pretrained loads")
    out.add_argument("run", type=path, help="a run folder (config.json and prompt.safetensors)")
    out.add_argument("adapter", type=path, help="the adapter folder to write: new, empty, or an earlier export")
    into = commands.add_parser("import", help="write a PEFT prompt-tuning or P-tuning adapter (or the paper's "
                                              "authors' layout) as a run folder")
    into.add_argument("adapter", type=path, help="the adapter folder (adapter_config.json and its weights)")
    into.add_argument("run", type=path, help="the run folder to write: new, empty, or an earlier import")
    into.add_argument("--labels", help="the head's labels in order, comma-separated (default: the adapter's id2label)")
    into.add_argument("--model", type=path, help="the backbone (default: the adapter's base_model_name_or_path)")
    into.add_argument("--source", help="the languages it was trained on, a spec as train.py takes (default: none, "
                                       "every language is zero-shot)")
    into.add_argument("--seed", default="0", help="the seed it was trained with (default 0)")
    into.add_argument("--max-length", type=train.value_type(train.values_of("max_length")),
                      help=f"tokens of text a row keeps, as train.py's --max-length (default {xpe.MAX_LENGTH}; a "
                           f"CAUSAL_LM adapter: an export's own, else as many as fit beside the prompt, at most "
                           f"{xpe.MAX_LENGTH})")
    into.add_argument("--template", help="a CAUSAL_LM adapter's text template with {text} (default: the one an "
                                         "export of ours recorded, else train.py's default)")
    into.add_argument("--chat-template", action="store_true", help="a CAUSAL_LM adapter's template goes through the "
                                                                   "tokenizer's chat template")
    into.add_argument("--groups-file", type=path, help="language groups for --source (default groups.json)")
    into.add_argument("--data-dir", type=path, help="local data laid out as DIR/<code>/test.tsv, for --source's codes")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return export_main(args) if args.command == "export" else import_main(args)
    except UsageError as e:
        print(f"tools.peft_adapters {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
