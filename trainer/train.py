"""`enrich train`: catalogue -> split -> heads -> calibration -> captioner -> bundle -> evaluation.

    enrich train --data DATA --out BUNDLE [--pretrained FILE|none] [--backbone_mode finetune|frozen] ...
    accelerate launch -m enrich_trainer.train --data DATA --out BUNDLE ...     # several GPUs, unchanged

Arguments are dataclasses parsed by `HfArgumentParser`, as in the Hugging Face examples; each stage
lives in its own module and `train()` reads as the list of them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import ConcatDataset
from transformers import HfArgumentParser, PreTrainedTokenizerBase, set_seed
from transformers.utils import logging as hf_logging

from enrich_data.catalogue import Catalogue, CatalogueItem, DataError, load_catalogue
from enrich_model.bundle import Bundle, build_heads, save_weights
from enrich_model.bundle_config import RANDOM_WEIGHTS, BundleConfig, HeadsConfig
from enrich_model.bundle_info import BundleInfo, describe
from enrich_model.consistency import CaptionLexicon
from enrich_model.metrics import format_metrics
from enrich_model.model import EnrichModel, build_captioner
from enrich_model.options import RuntimeOptions
from enrich_model.pipeline import EnrichPipeline
from enrich_model.preprocess import Preprocessing
from enrich_model.schema import CatalogueSchema, LabelVocab, SchemaError, Taxonomy

from .arguments import PRETRAINED_LAYER_DECAY, DataArguments, ModelArguments, TrainArguments, UsageError
from .augment import Augment
from .calibration import calibrate
from .caption_stage import train_captioner
from .caption_vocabulary import choose_vocabulary
from .classifier import AttributeClassifier
from .datasets import PixelDataset, extract_features
from .evaluation import choose_accept_thresholds, evaluate, quality_warnings
from .heads_stage import mixed_precision, train_heads
from .model_card import write_model_card
from .refit import refit_heads
from .report import write_report
from .split import stratified_split, stratum
from .weights import WeightsUnavailable, preprocessing_for, resolve_decoder, resolve_encoder

log = logging.getLogger("enrich.train")


@dataclass
class Splits:
    train: list[CatalogueItem]
    validation: list[CatalogueItem]
    test: list[CatalogueItem]


@dataclass
class Labels:
    """What the training split says a label is: the schema, vocabularies, taxonomy, caption words, baselines."""

    schema: CatalogueSchema
    vocabs: dict[str, LabelVocab]
    taxonomy: Taxonomy
    lexicon: CaptionLexicon | None
    majority: dict[str, str]
    rare: dict[str, list[str]]  # classified attribute -> values with too few training examples


@dataclass
class Trained:
    """What the stages made: the classifier (backbone, colour features, calibrated heads), the captioner
    (holding the same backbone) and what was learnt on the way."""

    classifier: AttributeClassifier
    heads: HeadsConfig  # what the heads were built from, with the abstain thresholds calibration chose
    preprocessing: Preprocessing
    weights: str  # where the backbone started: "hub", a weights file, or random
    histories: dict[str, list[dict]]
    training: dict  # for enrich.json: calibration and refit reports, the decoder's name
    caption_vocabulary: list[int] = dataclasses.field(default_factory=list)  # [] until chosen: the whole one


def train(data_args: DataArguments, model_args: ModelArguments, args: TrainArguments,
          catalogue: Catalogue | None = None) -> Bundle | None:
    """Train, write the bundle, evaluate it as loaded back and served; returns it (None on non-main processes)."""
    started = time.perf_counter()
    check_arguments(args)
    set_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.out) / "_checkpoints"
    catalogue = catalogue or load_catalogue(data_args.data, data_args.split,
                                            taxonomy=Path(data_args.taxonomy) if data_args.taxonomy else None)
    announce_schema(catalogue)
    splits = split_catalogue(catalogue, data_args, args)
    labels = describe_labels(catalogue, splits.train, data_args)
    trained = train_classifier(splits, labels, model_args, args, work)  # stage 1, then calibration
    captioner, tokenizer = train_caption_decoder(trained, splits, model_args, args, work)  # stage 2
    if not PartialState().is_main_process:  # under `accelerate launch`, one process writes the bundle
        return None
    classifier = trained.classifier
    training = {
        "data": catalogue.source, "items": len(splits.train) + len(splits.validation) + len(splits.test),
        "skipped": dict(catalogue.skipped), "majority": labels.majority, "rare": labels.rare,
        "rare_values": catalogue.taxonomy_file.rare, "schema_notes": catalogue.notes, **trained.training,
        "split": {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)},
        "backbone_mode": args.backbone_mode, "arguments": {**asdict(data_args), **asdict(model_args), **asdict(args)},
    }
    model = EnrichModel(captioner, classifier.heads, classifier.colour).eval()
    config = save_weights(out, model, trained.heads, tokenizer, trained.preprocessing, labels.schema, labels.vocabs,
                          labels.taxonomy, name=args.name, weights=trained.weights, lexicon=labels.lexicon,
                          training=training, caption_vocabulary=trained.caption_vocabulary)
    served = evaluate_as_served(out, config, splits, trained, args, started)
    shutil.rmtree(work, ignore_errors=True)
    log.info("bundle %s written to %s", served.model_version, out)
    return Bundle(model=model, tokenizer=tokenizer, **describe(out, served.config))


def train_classifier(splits: Splits, labels: Labels, model_args: ModelArguments, args: TrainArguments,
                     work: Path) -> Trained:
    """The backbone and heads (linear probe, fine-tuning, refit), then their calibration on validation."""
    encoder, weights = resolve_encoder(model_args)
    if args.backbone_mode == "frozen" and weights == RANDOM_WEIGHTS:
        raise UsageError("--backbone_mode frozen with random weights learns nothing: the features of a random "
                         "backbone do not separate products. Use --backbone_mode finetune, or pretrained weights")
    if args.layer_decay is None:  # recorded as resolved, with the run's other arguments
        args.layer_decay = 1.0 if weights == RANDOM_WEIGHTS else PRETRAINED_LAYER_DECAY
    preprocessing = preprocessing_for(encoder)
    colour = [labels.schema.roles["colour"]] if "colour" in labels.schema.roles else []  # heads reading colours
    heads_config = HeadsConfig(dropout=model_args.head_dropout, colour_bins=model_args.colour_bins if colour else 0,
                               colour_levels=model_args.colour_levels if colour else 0, colour_attributes=colour,
                               target_precision=args.target_precision)
    heads, colour = build_heads(heads_config, encoder.config.hidden_size,
                                {a: len(v) for a, v in labels.vocabs.items()}, preprocessing)
    classifier = AttributeClassifier(heads, encoder, colour, args.label_smoothing,
                                     logit_adjustment(splits.train, labels.vocabs, args.class_balance))
    history = train_heads(classifier, splits.train, splits.validation, labels.vocabs, preprocessing, args, work,
                          shown=labels.schema.headline)
    refit = refit_heads(classifier, splits.train, splits.validation, labels.vocabs, preprocessing, args) \
        if args.refit_heads else {}
    validation = calibration_set(splits.validation, preprocessing, labels.vocabs, args.augment)
    calibration, abstain = calibrate(classifier, validation, args.eval_batch_size, args.abstain_accuracy)
    return Trained(classifier, dataclasses.replace(heads_config, abstain_thresholds=abstain), preprocessing, weights,
                   {"attribute heads": history}, {"refit": refit, "calibration": calibration})


def train_caption_decoder(trained: Trained, splits: Splits, model_args: ModelArguments, args: TrainArguments,
                          work: Path) -> tuple[object, PreTrainedTokenizerBase]:
    """The caption decoder on the fixed backbone's tokens, computed once per split."""
    encoder = trained.classifier.encoder
    decoder, tokenizer, decoder_name = resolve_decoder(model_args, [i.name for i in splits.train if i.name])
    captioner = build_captioner(encoder, decoder, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                tokenizer.pad_token_id, model_args.max_caption_tokens)
    parts = {"train": splits.train, "validation": splits.validation}
    features = {name: extract_features(encoder, None, items, trained.preprocessing, args.eval_batch_size,
                                       f"encode ({name})", args.progress) for name, items in parts.items()}
    captioner, history = train_captioner(captioner, tokenizer, parts, features, model_args, args, work)
    trained.histories["captioner"] = history
    trained.training["decoder"] = decoder_name
    names = [i.name for i in splits.train if i.name]
    trained.caption_vocabulary, trained.training["caption_vocabulary"] = choose_vocabulary(
        captioner, tokenizer, names, features["validation"].tokens, model_args.max_caption_tokens)
    return captioner, tokenizer


def evaluate_as_served(out: Path, config: BundleConfig, splits: Splits, trained: Trained,
                       args: TrainArguments, started: float) -> BundleInfo:
    """The weights loaded back from `out` and run as `enrich serve` would run them: the accept thresholds chosen on
    the validation split, then scored on the test split; then the report, and enrich.json, once, with the
    thresholds, metrics and warnings: the folder is a bundle from here."""
    pipeline = EnrichPipeline.load(out, RuntimeOptions(threads=args.threads), config)
    bundle = pipeline.bundle
    choose_accept_thresholds(pipeline, splits.validation, args)
    test = splits.test
    metrics, answers = evaluate(pipeline, test, args.eval_batch_size, args.progress)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_report(out, bundle, test, answers, metrics, trained.histories)
    bundle.config.test_metrics = metrics
    bundle.config.warnings = quality_warnings(metrics, trained.weights == RANDOM_WEIGHTS, bundle.schema)
    bundle.config.write(out)
    write_model_card(out, bundle.config)
    return bundle


def check_arguments(args: TrainArguments) -> None:
    if args.backbone_mode not in ("frozen", "finetune"):
        raise UsageError(f"--backbone_mode must be frozen or finetune, not {args.backbone_mode!r}")
    if args.class_balance not in ("none", "logit_adjust"):
        raise UsageError(f"--class_balance must be none or logit_adjust, not {args.class_balance!r}")
    if not 0 <= args.abstain_accuracy < 1:
        raise UsageError("--abstain_accuracy is a target accuracy below 1 (0 turns abstaining off)")
    try:
        mixed_precision(args.precision)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.precision in ("fp16", "bf16") and not torch.cuda.is_available():
        raise UsageError(f"--precision {args.precision} needs a GPU; on CPU use auto or fp32")


def calibration_set(items: list[CatalogueItem], preprocessing, vocabs: dict[str, LabelVocab], augment: bool):
    """The validation images as they are and, with augmentation on, once more augmented: temperatures fitted
    on tidy catalogue shots alone sharpen confidences that photos less tidy then betray."""
    tidy = PixelDataset(items, preprocessing, vocabs)
    if not augment:
        return tidy
    return ConcatDataset([tidy, PixelDataset(items, preprocessing, vocabs,
                                             Augment(preprocessing.mean, preprocessing.std))])


def split_catalogue(catalogue: Catalogue, data_args: DataArguments, args: TrainArguments) -> Splits:
    items = catalogue.items[: data_args.limit] if data_args.limit else catalogue.items
    if len(items) < 20:
        raise DataError(f"{catalogue.source}: {len(items)} usable items; training needs at least 20 "
                        f"(skipped: {dict(catalogue.skipped) or 'none'})")
    log.info("catalogue %s: %d items (skipped: %s)", catalogue.source, len(items), dict(catalogue.skipped))
    splits = Splits(*stratified_split(items, stratum(catalogue.schema), seed=args.seed))
    log.info("split: %d train / %d validation / %d test", len(splits.train), len(splits.validation),
             len(splits.test))
    return splits


def describe_labels(catalogue: Catalogue, train_items: list[CatalogueItem], data_args: DataArguments) -> Labels:
    schema = catalogue.schema
    min_examples = catalogue.taxonomy_file.min_examples or data_args.min_class_count
    lexicon = learn_lexicon(schema, catalogue, train_items)  # every value a name may say, rare ones included
    rare = catalogue.fold_rare(min_examples, train_items)
    for attribute, values in rare.items():
        shown = ", ".join(values[:10]) + (f" and {len(values) - 10} more" if len(values) > 10 else "")
        action = 'folded into "other"' if catalogue.taxonomy_file.rare == "other" else "not learnt"
        log.warning("%s: %d value%s with fewer than %d training examples, %s: %s", attribute, len(values),
                    "s" if len(values) != 1 else "", min_examples, action, shown)
    vocabs = {a: LabelVocab.from_values(a, (v for values in catalogue.values(a, train_items) for v in values),
                                        min_examples, schema[a].separator) for a in schema.classified}
    empty = [a for a, v in vocabs.items() if len(v) < 2]
    if empty:
        raise DataError(f"{', '.join(empty)}: fewer than two values with {min_examples} training examples each; "
                        "lower min_examples, or leave the column out")
    learnt = Taxonomy.from_rows(schema, [i.labels for i in train_items])
    taxonomy = learnt.restricted({a: vocabs[schema.root(a)].labels for a in schema.derived})
    unmapped = {a: [label for label in vocabs[schema.root(a)].labels if not taxonomy.covers(a, label)]
                for a in schema.derived}
    if any(unmapped.values()):
        missing = "; ".join(f"{a}: {', '.join(labels)}" for a, labels in unmapped.items() if labels)
        raise DataError(f"labels whose parent the training data never gives ({missing}); fill those cells, or "
                        "leave the parent column out")
    majority = {a: v.labels[0] for a, v in vocabs.items() if v.labels and not v.multi}
    for attribute in schema.derived:
        root = schema.root(attribute)
        counts = Counter(taxonomy.parent(attribute, i.labels[root]) for i in train_items
                         if i.labels[root] and taxonomy.covers(attribute, i.labels[root]))
        majority[attribute] = min(counts, key=lambda label: (-counts[label], label))
    return Labels(schema, vocabs, taxonomy, lexicon, majority, rare)


def learn_lexicon(schema: CatalogueSchema, catalogue: Catalogue, train_items: list[CatalogueItem]) \
        -> CaptionLexicon | None:
    """The words names use for the schema's headline attributes (its roles); None without a caption or roles.
    Every colour and gender word of the catalogue, not only those frequent enough to be predicted: a caption
    naming a rare colour must still be recognised as disagreeing with the predicted one."""
    roles = schema.roles
    if not schema.caption or not roles:
        return None
    words = {role: list(dict.fromkeys(v for values in catalogue.values(roles[role]) for v in values))
             for role in ("colour", "gender") if role in roles}
    product, colour = roles.get("product"), roles.get("colour")
    return CaptionLexicon.learn(((i.labels[product] if product else None, i.name) for i in train_items),
                                colours=words.get("colour", []), genders=words.get("gender", []), attributes=roles,
                                coloured=[(i.labels[colour], i.name) for i in train_items] if colour else ())


def announce_schema(catalogue: Catalogue) -> None:
    """What will be learnt, before training: the schema and how it was found."""
    lines = [f"catalogue {catalogue.source}: {len(catalogue)} items; schema:", *catalogue.schema.describe()]
    if catalogue.notes:
        lines += ["how it was found:", *(f"  {note}" for note in catalogue.notes)]
    print("\n".join(lines), file=sys.stderr, flush=True)


def logit_adjustment(items: list[CatalogueItem], vocabs: dict[str, LabelVocab],
                     class_balance: str) -> dict[str, torch.Tensor] | None:
    """log class priors per attribute for a logit-adjusted loss (tau = 1), or None."""
    if class_balance == "none":
        return None
    adjustment = {}
    for attribute, vocab in vocabs.items():
        if vocab.multi:
            continue  # independent values: no prior to balance
        counts = torch.ones(len(vocab))  # add-one: no class has a zero prior
        for item in items:
            index = vocab.encode(item.labels[attribute])
            if index >= 0:
                counts[index] += 1
        adjustment[attribute] = (counts / counts.sum()).log()
    return adjustment


def announce(bundle: BundleInfo) -> None:
    print(format_metrics(bundle.metrics))
    print(f"bundle: {bundle.config.training.get('arguments', {}).get('out')} ({bundle.model_version}), "
          f"{bundle.metrics.get('wall_seconds', 0):.0f} s")
    if bundle.config.warnings:
        rule = "!" * 100
        print(f"\n{rule}\nTHIS BUNDLE HAS WARNINGS (also in enrich.json, README.md and GetModelInfo):", file=sys.stderr)
        for warning in bundle.config.warnings:
            print(f"  - {warning}", file=sys.stderr)
        print(rule, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((DataArguments, ModelArguments, TrainArguments))
    parser.prog = "enrich train"
    data_args, model_args, args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    hf_logging.disable_progress_bar()  # weight loading/saving bars; training keeps its own
    try:
        bundle = train(data_args, model_args, args)
    except (DataError, WeightsUnavailable, UsageError, SchemaError) as error:
        print(f"enrich train: error: {error}", file=sys.stderr)
        return 2
    if bundle is not None:
        announce(bundle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
