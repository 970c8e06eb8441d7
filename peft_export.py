"""Why this file: one run's artifact as a PEFT prompt-tuning adapter (evaluate.py --export-peft), apart from scoring."""
from pathlib import Path

import xpe

# ---- --export-peft: the artifact as a PEFT prompt-tuning adapter ----------------------------------

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
# By model_type: where our head lives in the backbone's *ForSequenceClassification, and the modules besides
# its classifier that peft must keep. XLM-R's classifier is our head; BERT's is tanh(pooler.dense(h[:, 0]))
# then one Linear, so our dense becomes the pooler's.
PEFT_HEADS = {"xlm-roberta": ({"dense": "classifier.dense", "out_proj": "classifier.out_proj"}, []),
              "bert": ({"dense": "bert.pooler.dense", "out_proj": "classifier"}, ["pooler"])}


def export_peft(run_dir, out_dir):
    """Write run_dir's artifact into out_dir as a PEFT adapter, PROMPT_TUNING for SEQ_CLS; (adapter config, N).

    Without importing peft: the two files are laid out as peft 0.14 and later save them, so that
    PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=N), out_dir)
    gives our logits. A ValueError in one line, before anything is written, for what the user can fix.
    """
    from safetensors.torch import save_file
    from transformers import AutoConfig

    tensors, config = xpe.read_artifact(run_dir)
    for key in ("model", "labels"):
        if key not in config:
            raise ValueError(f"{run_dir}/{xpe.ARTIFACT_CONFIG} lacks {key!r}: not written by train.py")
    try:
        backbone = AutoConfig.from_pretrained(config["model"])
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read the backbone's config {config['model']!r} ({first})") from None
    if backbone.model_type not in PEFT_HEADS:
        raise ValueError(f"--export-peft supports the backbones {' and '.join(sorted(PEFT_HEADS))} (model_type), "
                         f"not {backbone.model_type!r} of {config['model']}")
    prompt, num_labels = tensors["prompt"], len(config["labels"])
    head_labels = tensors["head.out_proj.weight"].shape[0]
    if prompt.ndim != 2 or prompt.shape[1] != backbone.hidden_size or head_labels != num_labels:
        raise ValueError(f"{run_dir}: the prompt {tuple(prompt.shape)} and the head for {head_labels} labels do not "
                         f"fit {config['model']} (hidden size {backbone.hidden_size}) and the {num_labels} labels "
                         f"of its config.json")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--export-peft {out} is a file: name a new folder, an empty one or a previous export")
    # Only our two files (and the temporary names of a killed export) may be overwritten.
    foreign = sorted(p.name for p in out.iterdir() if p.name not in PEFT_FILES and not
                     (p.name.startswith(".adapter_") and p.name.endswith(".tmp"))) if out.is_dir() else []
    if foreign:
        raise ValueError(f"--export-peft {out} holds other files ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}): name a new folder, an empty one or a previous "
                         f"export")

    heads, extra_modules = PEFT_HEADS[backbone.model_type]
    # PEFT saves the prompt as prompt_embeddings and the modules it keeps under base_model.<module path>.
    weights = {"prompt_embeddings": prompt}
    for part, path in heads.items():
        for kind in ("weight", "bias"):
            weights[f"base_model.{path}.{kind}"] = tensors[f"head.{part}.{kind}"]
    weights = {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}
    # The fields of peft 0.14's PromptTuningConfig, with the values its save_pretrained writes: no later field,
    # which 0.14 to 0.16 would warn about, except modules_to_save where a backbone needs it.
    adapter = dict(peft_type="PROMPT_TUNING", task_type="SEQ_CLS", base_model_name_or_path=config["model"],
                   revision=None, auto_mapping=None, inference_mode=True, num_virtual_tokens=prompt.shape[0],
                   token_dim=backbone.hidden_size, num_transformer_submodules=1,
                   num_attention_heads=backbone.num_attention_heads, num_layers=backbone.num_hidden_layers,
                   prompt_tuning_init="RANDOM", prompt_tuning_init_text=None, tokenizer_name_or_path=None,
                   tokenizer_kwargs=None)
    if extra_modules:
        # The pooler loads without this (its weights are plain keys of the state dict), but only a listed
        # module is wrapped by peft 0.17 and later: trained on and saved again. peft 0.14 to 0.16 have no such
        # field; they warn that they ignore it and load the same weights.
        adapter["modules_to_save"] = extra_modules
    out.mkdir(parents=True, exist_ok=True)
    xpe.atomic_write(out / PEFT_FILES[1], lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    xpe.atomic_write_json(out / PEFT_FILES[0], adapter)
    return adapter, num_labels


def peft_load_line(adapter, num_labels, out_dir):
    """The Python line that loads an export with peft and transformers alone."""
    return (f"from peft import PeftModel; from transformers import AutoModelForSequenceClassification; "
            f"model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained("
            f"{adapter['base_model_name_or_path']!r}, num_labels={num_labels}), {str(out_dir)!r})")
