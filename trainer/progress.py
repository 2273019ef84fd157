"""Readable training output: one progress bar per stage and one summary line per epoch."""

from __future__ import annotations

import sys

from tqdm import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback


class StepProgress(ProgressCallback):
    """The Trainer's progress bar without its per-log dict dumps and nested evaluation bars."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        pass

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs) -> None:
        pass


class EpochSummary(TrainerCallback):
    """One readable line per epoch: losses, the validation accuracies of the `shown` attributes, macro-F1."""

    def __init__(self, stage: str, shown: tuple[str, ...] = ()) -> None:
        self.stage, self.shown = stage, shown

    def on_evaluate(self, args, state, control, metrics=None, **kwargs) -> None:
        train_losses = [h["loss"] for h in state.log_history if "loss" in h]
        parts = [f"{self.stage} epoch {round(state.epoch or 0)}/{round(args.num_train_epochs)}"]
        if train_losses:
            parts.append(f"train loss {train_losses[-1]:.3f}")
        parts.append(f"validation loss {metrics['eval_loss']:.3f}")
        parts += [f"{name} {metrics[f'eval_acc_{name}']:.3f}" for name in self.shown if f"eval_acc_{name}" in metrics]
        if "eval_macro_f1" in metrics:
            parts.append(f"macro-F1 {metrics['eval_macro_f1']:.3f}")
        tqdm.write(", ".join(parts), file=sys.stderr)


def quiet_progress(trainer: Trainer, stage: str, progress: bool, shown: tuple[str, ...] = ()) -> Trainer:
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(StepProgress)
    trainer.add_callback(EpochSummary(stage, shown))
    return trainer

