"""Stage 2: the caption decoder, reading the (now fixed) backbone's tokens, computed once per split."""

from __future__ import annotations

from pathlib import Path

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, VisionEncoderDecoderModel

from enrich_data.catalogue import CatalogueItem
from enrich_model.encoding import Encoded

from .arguments import ModelArguments, TrainArguments
from .datasets import CaptionDataset, collate_captions
from .heads_stage import training_arguments
from .progress import quiet_progress


def train_captioner(captioner: VisionEncoderDecoderModel, tokenizer, splits: dict[str, list[CatalogueItem]],
                    features: dict[str, Encoded], model_args: ModelArguments, args: TrainArguments,
                    work: Path) -> tuple[VisionEncoderDecoderModel, list[dict]]:
    """Train the decoder (the encoder stays frozen); returns the best captioner and the log history."""
    captioner.encoder.requires_grad_(False)
    caption_sets = {}
    for name, items in splits.items():
        named = [row for row, item in enumerate(items) if item.name]
        caption_sets[name] = CaptionDataset(features[name].tokens[named], [items[row].name for row in named],
                                            tokenizer, model_args.max_caption_tokens)
    if captioner.decoder.config.tie_word_embeddings:
        # GPT-2's output layer is its input embedding: checkpoints omit it and loading re-ties it, which
        # the Trainer reports as a missing key unless told that the key is not saved on purpose. This attribute
        # is how transformers is told (a documented class attribute of PreTrainedModel, underscored there).
        captioner._keys_to_ignore_on_save = ["decoder.lm_head.weight"]  # noqa: SLF001
    trainer = quiet_progress(Seq2SeqTrainer(
        model=captioner,
        args=training_arguments(Seq2SeqTrainingArguments, work / "captioner", args, args.caption_epochs,
                                args.caption_lr, args.caption_batch_size),
        train_dataset=caption_sets["train"], eval_dataset=caption_sets["validation"],
        data_collator=collate_captions, processing_class=tokenizer,
    ), "captioner", args.progress)
    trainer.train()
    # load_best_model_at_end may reload the captioner in place; the heads share the backbone through it.
    return trainer.model, trainer.state.log_history
