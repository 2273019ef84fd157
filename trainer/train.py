"""`enrich train`: catalogue -> split -> heads (Trainer) -> captioner (Seq2SeqTrainer) -> test -> bundle.

    python -m enrich_trainer.train --data DATA --out BUNDLE [--backbone-mode finetune] ...

Arguments are dataclasses parsed by `HfArgumentParser`, as in the Hugging Face examples.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import (
    HfArgumentParser,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging

from enrich_model.bundle import METRICS_FILE, Bundle, save_bundle
from enrich_model.data import Catalogue, CatalogueItem, load_catalogue
from enrich_model.model import AttributeHeads, EnrichModel, TinyVitEncoder, attribute_loss, build_captioner
from enrich_model.predict import CaptionMode, ItemOptions, Predictor
from enrich_model.schema import CLASSIFIED_ATTRIBUTES, DERIVED_ATTRIBUTES, LabelVocab, Taxonomy

from .arguments import DataArguments, ModelArguments, TrainArguments
from .datasets import CaptionDataset, FeatureDataset, PixelDataset, collate_captions, extract_features, model_input
from .progress import quiet_progress
from .report import caption_metrics, classification_metrics, plot_confusion, plot_training_curves
from .split import stratified_split
from .weights import preprocessing_for, resolve_decoder, resolve_encoder

log = logging.getLogger("enrich.train")


class HeadsObjective(nn.Module):
    """What the heads stage trains: the heads, plus the backbone when fine-tuning."""

    def __init__(self, heads: AttributeHeads, encoder: TinyVitEncoder | None) -> None:
        super().__init__()
        self.heads, self.encoder = heads, encoder

    def forward(self, pixel_values: torch.Tensor | None = None, pooled: torch.Tensor | None = None,
                **labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if pooled is None:
            pooled, _ = self.encoder.features(pixel_values)
        logits = self.heads(pooled)
        targets = {name.removeprefix("label_"): value for name, value in labels.items()}
        return {"loss": attribute_loss(logits, targets), **{f"logits_{k}": v for k, v in logits.items()}}


def accuracy_metrics(prediction) -> dict[str, float]:
    logits = prediction.predictions
    labels = prediction.label_ids
    metrics = {}
    for name, scores, target in zip(CLASSIFIED_ATTRIBUTES, logits, labels, strict=True):
        mask = target != -100
        metrics[f"acc_{name}"] = float((scores.argmax(-1)[mask] == target[mask]).mean()) if mask.any() else 0.0
    metrics["acc_mean"] = float(np.mean(list(metrics.values())))
    return metrics


def trainer_arguments(cls, out: Path, args: TrainArguments, epochs: int, lr: float, batch_size: int,
                      best_by: str = "eval_loss", **extra):
    return cls(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=args.eval_batch_size, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model=best_by,
        greater_is_better=best_by != "eval_loss", save_total_limit=1, report_to="none", seed=args.seed,
        weight_decay=0.01, warmup_steps=0.05, lr_scheduler_type="cosine", remove_unused_columns=False,
        dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=not args.progress,
        save_only_model=True, **extra,
    )


# --- the run -----------------------------------------------------------------------------------------
def train(data_args: DataArguments, model_args: ModelArguments, args: TrainArguments,
          catalogue: Catalogue | None = None) -> Bundle:
    """Train and write the bundle; returns it in memory (config = the written enrich.json)."""
    if args.backbone_mode not in ("frozen", "finetune"):
        raise ValueError(f"--backbone_mode must be frozen or finetune, not {args.backbone_mode!r}")
    started = time.perf_counter()
    set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = out / "_checkpoints"
    catalogue = catalogue or load_catalogue(data_args.data, data_args.split)
    items = catalogue.items[: data_args.limit] if data_args.limit else catalogue.items
    log.info("catalogue %s: %d items (skipped: %s)", catalogue.source, len(items), dict(catalogue.skipped))
    train_items, val_items, test_items = stratified_split(items, lambda i: i.labels["articleType"], seed=args.seed)
    log.info("split: %d train / %d validation / %d test", len(train_items), len(val_items), len(test_items))

    vocabs = {
        a: LabelVocab.from_values(a, (i.labels[a] for i in train_items), data_args.min_class_count)
        for a in CLASSIFIED_ATTRIBUTES
    }
    learnt = Taxonomy.from_rows(i.labels for i in train_items)
    taxonomy = Taxonomy({a: p for a, p in learnt.parents.items() if a in vocabs["articleType"].index})
    unmapped = [a for a in vocabs["articleType"].labels if a not in taxonomy.parents]
    if unmapped:
        raise ValueError(f"articleTypes without subCategory/masterCategory in training data: {unmapped}")

    encoder, weights = resolve_encoder(model_args)
    preprocessing = preprocessing_for(encoder)
    captions_train = [i.name for i in train_items if i.name]
    decoder, tokenizer, decoder_name = resolve_decoder(model_args, captions_train)
    captioner = build_captioner(encoder, decoder, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                tokenizer.pad_token_id, model_args.max_caption_tokens)
    heads = AttributeHeads(encoder.config.hidden_size, {a: len(v) for a, v in vocabs.items()},
                           model_args.head_dropout)
    label_names = [f"label_{a}" for a in CLASSIFIED_ATTRIBUTES]
    splits = {"train": train_items, "validation": val_items}

    def encode_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(pooled, tokens) per split from the backbone as it is now: one pass serves both stages."""
        return {name: extract_features(encoder, split, preprocessing, args.eval_batch_size, f"encode ({name})",
                                       args.progress) for name, split in splits.items()}

    # Stage 1: attribute heads (and the backbone, when fine-tuning).
    finetune = args.backbone_mode == "finetune"
    if finetune:
        train_set = PixelDataset(train_items, preprocessing, vocabs, augment=True)
        val_set = PixelDataset(val_items, preprocessing, vocabs)
    else:
        features = encode_splits()
        train_set = FeatureDataset(features["train"][0], train_items, vocabs)
        val_set = FeatureDataset(features["validation"][0], val_items, vocabs)
    heads_trainer = quiet_progress(Trainer(
        model=HeadsObjective(heads, encoder if finetune else None),
        args=trainer_arguments(TrainingArguments, work / "heads", args, args.head_epochs,
                               args.finetune_lr if finetune else args.head_lr, args.head_batch_size,
                               best_by="eval_acc_mean", label_names=label_names),
        train_dataset=train_set, eval_dataset=val_set, compute_metrics=accuracy_metrics,
    ), "heads", args.progress)
    heads_trainer.train()
    heads_history = heads_trainer.state.log_history

    # Stage 2: the caption decoder on the (now fixed) backbone's tokens, computed once.
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    if finetune:
        features = encode_splits()  # the backbone has changed since stage 1
    caption_sets = {}
    for name, split in splits.items():
        named = [row for row, item in enumerate(split) if item.name]
        caption_sets[name] = CaptionDataset(features[name][1][named], [split[row].name for row in named], tokenizer,
                                            model_args.max_caption_tokens)
    if decoder.config.tie_word_embeddings:
        # GPT-2's output layer is its input embedding: checkpoints omit it and loading re-ties it, which
        # the Trainer reports as a missing key unless told that the key is not saved on purpose.
        captioner._keys_to_ignore_on_save = ["decoder.lm_head.weight"]
    caption_trainer = quiet_progress(Seq2SeqTrainer(
        model=captioner,
        args=trainer_arguments(Seq2SeqTrainingArguments, work / "captioner", args, args.caption_epochs,
                               args.caption_lr, args.caption_batch_size),
        train_dataset=caption_sets["train"], eval_dataset=caption_sets["validation"],
        data_collator=collate_captions, processing_class=tokenizer,
    ), "captioner", args.progress)
    caption_trainer.train()
    # load_best_model_at_end may reload the captioner in place; heads share the backbone through it.
    model = EnrichModel(caption_trainer.model, heads).eval()

    # Test split, through the serving code path.
    bundle = Bundle(model, tokenizer, preprocessing, vocabs, taxonomy, {"model_version": "in-training"})
    metrics, predictions = evaluate(Predictor(bundle), test_items, train_items, args)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)

    out.mkdir(parents=True, exist_ok=True)
    plot_training_curves({"attribute heads": heads_history,
                          "captioner": caption_trainer.state.log_history}, out / "training_curves.png")
    for attribute in ("articleType", "baseColour"):
        plot_confusion([i.labels[attribute] for i in test_items], predictions[attribute],
                       vocabs[attribute].labels, f"{attribute} (test split)", out / f"confusion_{attribute}.png")
    config = save_bundle(
        out, model, tokenizer, preprocessing, vocabs, taxonomy, name=args.name,
        extra={
            "training": {
                "data": catalogue.source, "items": len(items), "skipped": dict(catalogue.skipped),
                "split": {"train": len(train_items), "validation": len(val_items), "test": len(test_items)},
                "backbone_weights": weights, "backbone_mode": args.backbone_mode, "decoder": decoder_name,
                "arguments": {**asdict(data_args), **asdict(model_args), **asdict(args)},
            },
            "test_metrics": metrics,
        },
    )
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    log.info("bundle %s written to %s", config["model_version"], out)
    bundle.config = config
    return bundle


def evaluate(predictor: Predictor, test_items: list[CatalogueItem], train_items: list[CatalogueItem],
             args: TrainArguments) -> tuple[dict, dict[str, list[str]]]:
    preprocessing = predictor.bundle.preprocessing
    predictions: dict[str, list[str]] = {a: [] for a in (*CLASSIFIED_ATTRIBUTES, *DERIVED_ATTRIBUTES)}
    captions: list[str] = []
    options = ItemOptions(top_k=1, caption=CaptionMode.GENERATE)
    for start in tqdm(range(0, len(test_items), args.eval_batch_size), desc="test", unit="batch",
                      disable=not args.progress):
        chunk = test_items[start:start + args.eval_batch_size]
        pixels = np.stack([model_input(item, preprocessing) for item in chunk])
        result = predictor.predict(pixels, [options] * len(chunk))
        for item in result.items:
            for attribute, prediction in item.attributes.items():
                predictions[attribute].append(prediction.label)
            captions.append(item.caption.text)
    metrics: dict = {"test_items": len(test_items)}
    for attribute, predicted in predictions.items():
        metrics[attribute] = classification_metrics(
            [i.labels[attribute] for i in test_items], predicted, [i.labels[attribute] for i in train_items]
        )
    metrics["productDisplayName"] = caption_metrics([i.name for i in test_items], captions)
    return metrics, predictions


def format_metrics(metrics: dict) -> str:
    lines = [f"{'attribute':<18}{'accuracy':>9}{'macro-F1':>10}{'majority':>10}{'n':>7}"]
    for attribute in (*CLASSIFIED_ATTRIBUTES, *DERIVED_ATTRIBUTES):
        m = metrics.get(attribute, {})
        if m.get("support"):
            lines.append(f"{attribute:<18}{m['accuracy']:>9.3f}{m['macro_f1']:>10.3f}"
                         f"{m['majority_accuracy']:>10.3f}{m['support']:>7}")
    caption = metrics.get("productDisplayName", {})
    if caption.get("support"):
        lines.append(f"productDisplayName BLEU {caption['bleu']:.1f}, exact match {caption['exact_match']:.3f}"
                     f" (n={caption['support']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    parser.prog = "enrich train"
    data_args, model_args, args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    hf_logging.disable_progress_bar()  # weight loading/saving bars; training keeps its own
    config = train(data_args, model_args, args).config
    print(format_metrics(config["test_metrics"]))
    print(f"bundle: {args.out} ({config['model_version']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
