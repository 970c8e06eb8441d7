"""The benchmark's peer (tools/bench.py), kept apart because it is PEFT and the Trainer, not xpe: P-tuning (or prompt tuning) over our backbone
under transformers.Trainer with the authors' settings, built fresh for each timed run and fed bench.py's batch plan."""
import dataclasses
import shutil
import tempfile


def make_peer(s, cfg):
    """A fresh peer on our backbone: XLMRobertaForSequenceClassification (its roberta is ours, shared and frozen, its
    head seeded anew) under PEFT prompt learning for SEQ_CLS: P-tuning (MLP) for xpe, prompt tuning for spt."""
    import torch
    from peft import PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model
    from transformers import XLMRobertaForSequenceClassification
    from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaClassificationHead

    with torch.device("meta"):  # no second backbone: the meta one is replaced by ours
        base = XLMRobertaForSequenceClassification(s.enc_cfg)
    base.roberta = s.backbone
    torch.manual_seed(cfg.seed)
    base.classifier = XLMRobertaClassificationHead(s.enc_cfg).to(s.device)
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


def train_peer(peer, cfg, plan, s, nan_filter=True):
    """The Trainer over the same plan; (trainer, seconds taken by the steps after the warm-up).

    nan_filter: the stock logging_nan_inf_filter, which reads the loss on the host every step. In bf16 the peer
    runs as the Trainer runs bf16: autocast over the float32 model (as ours does).
    """
    args, device = s.args, s.device
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
                self.start = s.now()
            elif state.global_step == args.warmup_steps + args.steps:
                self.seconds = s.now() - self.start

    cuda, bf16 = device.type == "cuda", s.common.precision == "bf16"
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5 renamed group_by_length=True to train_sampling_strategy="group_by_length"
    grouping = dict(train_sampling_strategy="group_by_length") if "train_sampling_strategy" in fields \
        else dict(group_by_length=True)
    out = tempfile.mkdtemp(prefix="xpe-bench-")
    targs = TrainingArguments(
        output_dir=out, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        max_steps=cfg.steps, optim="adafactor", learning_rate=cfg.lr_prompt, weight_decay=0.01,
        lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": cfg.cycles},
        warmup_steps=int(cfg.warmup * cfg.steps), max_grad_norm=cfg.grad_clip, bf16=bf16, use_cpu=not cuda,
        dataloader_pin_memory=cuda, seed=args.seed, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, logging_nan_inf_filter=nan_filter, **grouping)
    dataset = [dict(input_ids=ids, attention_mask=[1] * len(ids), labels=int(label))
               for ids, label in zip(s.train_ids, s.train_labels.tolist())]
    timer = StepTimer()
    trainer = PlanTrainer(model=peer, args=targs, train_dataset=dataset,
                          data_collator=DataCollatorWithPadding(s.tokenizer), processing_class=s.tokenizer,
                          callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # its end-of-training summary would clutter the output
    try:
        trainer.train()
    finally:
        shutil.rmtree(out, ignore_errors=True)  # nothing is saved there (save_strategy "no")
    if trainer.state.global_step != cfg.steps or not hasattr(timer, "seconds"):
        raise RuntimeError(f"peer: the Trainer ran {trainer.state.global_step} steps, expected {cfg.steps}")
    return trainer, timer.seconds


def eval_peer(trainer, s):
    """Trainer.predict over the same pooled rows (its own batching: group_by_length applies to training only)."""
    rows = [dict(input_ids=ids, attention_mask=[1] * len(ids), labels=label) for ids, label in zip(s.test_ids,
                                                                                                   s.test_labels)]
    trainer.predict(rows[:s.args.eval_batch_size])  # warm-up, untimed
    start = s.now()
    trainer.predict(rows)
    return s.now() - start
