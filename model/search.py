"""Greedy and beam search in NumPy: the one generation loop, whatever backend runs the caption graphs.

A backend starts a batch of captions with the images' cross-attention keys and values (`graphs.CaptionCross`), in
a `DecoderRun` that holds them and the self-attention caches in the backend's own arrays. Each step feeds the
tokens chosen (the start token first) and returns the next candidates (`graphs.CaptionStep`); the search says
which earlier row each new row continues (finished captions drop out, beams follow the beam they extend), so it
never touches a cache itself.

Greedy search picks what transformers' `generate` picks (the most probable token, stop at EOS). Beam search
follows its defaults too: length penalty 1 (a finished hypothesis scores its total log-probability over its
length, EOS included), 2 x beams candidates per step, and an image stops once it has `beams` finished
hypotheses and no running one could beat the worst of them. Tokens are positions in the caption vocabulary
(`caption_vocabulary.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Captions:
    texts: list[str]
    confidences: list[float]  # geometric mean of the chosen tokens' probabilities
    token_counts: list[int] = field(default_factory=list)


@dataclass
class Candidates:
    """Per row, the most probable next tokens, best first."""

    log_probs: np.ndarray  # (R, K) float32
    tokens: np.ndarray  # (R, K) int64, positions in the caption vocabulary


class DecoderRun:
    """One batch of captions being written on a backend: its caches, in the backend's arrays, and the image
    each row belongs to. Backends give `take` (rows of a cache) and `advance` (one caption step)."""

    def __init__(self, cross_keys: Any, cross_values: Any) -> None:
        self.keys, self.values = cross_keys[:, :, :, :0], cross_values[:, :, :, :0]  # nothing written yet
        self.image_keys, self.image_values = cross_keys, cross_values  # one row per image, as the cross graph gave
        self.images = np.arange(cross_keys.shape[1])  # the image of each row
        self.cross_keys, self.cross_values, self.cross_images = cross_keys, cross_values, self.images

    def step(self, tokens: np.ndarray, position: int, order: np.ndarray | None = None) -> Candidates:
        """Feeds `tokens` (one per row) at `position`; `order`: for each row of this step, the row of the last
        one it continues (None: the same rows)."""
        if order is not None:
            self.keys, self.values = self.take(self.keys, order), self.take(self.values, order)
            self.images = self.images[order]
            if not np.array_equal(self.images, self.cross_images):  # beams reordered within an image keep these
                self.cross_keys, self.cross_values = (self.take(self.image_keys, self.images),
                                                      self.take(self.image_values, self.images))
                self.cross_images = self.images
        log_probs, chosen, self.keys, self.values = self.advance(
            np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1, 1), position)
        return Candidates(log_probs, chosen)

    def take(self, cache: Any, rows: np.ndarray) -> Any:
        """`cache`'s rows (axis 1) in the order given."""
        raise NotImplementedError

    def advance(self, tokens: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """One caption step on the current caches -> (log-probabilities, tokens, keys, values)."""
        raise NotImplementedError


@dataclass
class Generated:
    """Per image, the generated tokens (EOS included when reached) and each one's log-probability."""

    tokens: list[list[int]]
    log_probs: list[list[float]]

    def confidences(self, special: frozenset[int]) -> list[float]:
        """The geometric mean of the probabilities of the tokens that are text (not start, EOS or padding)."""
        out = []
        for tokens, log_probs in zip(self.tokens, self.log_probs, strict=True):
            kept = [p for t, p in zip(tokens, log_probs, strict=True) if t not in special and math.isfinite(p)]
            out.append(math.exp(sum(kept) / len(kept)) if kept else 0.0)
        return out


def generate(run: DecoderRun, start: int, eos: int, max_new_tokens: int, beams: int = 1) -> Generated:
    """Captions of the run's images, from the `start` token on."""
    first = run.step(np.full(len(run.images), start), 0)
    if 2 * beams > first.tokens.shape[1]:
        raise ValueError(f"{beams} beams need {2 * beams} candidates a step; the caption graphs give "
                         f"{first.tokens.shape[1]}")
    if beams > 1:
        return beam_search(first, run, eos, max_new_tokens, beams)
    return greedy(first, run, eos, max_new_tokens)


def greedy(candidates: Candidates, run: DecoderRun, eos: int, max_new_tokens: int) -> Generated:
    batch = len(candidates.tokens)
    out: list[list[int]] = [[] for _ in range(batch)]
    log_probs: list[list[float]] = [[] for _ in range(batch)]
    active = np.arange(batch)
    for generated in range(1, max_new_tokens + 1):
        chosen = candidates.tokens[:, 0]
        for row, token, score in zip(active.tolist(), chosen.tolist(), candidates.log_probs[:, 0].tolist(),
                                     strict=True):
            out[row].append(token)
            log_probs[row].append(score)
        running = chosen != eos
        if generated == max_new_tokens or not running.any():
            break
        order = None if running.all() else np.flatnonzero(running)
        active = active[running]
        candidates = run.step(chosen[running], generated, order)
    return Generated(out, log_probs)


@dataclass(order=True)
class Hypothesis:
    score: float
    tokens: list[int] = field(compare=False)
    log_probs: list[float] = field(compare=False)


Path = tuple[list[int], list[float]]  # a hypothesis's tokens and their log-probabilities


def beam_search(candidates: Candidates, run: DecoderRun, eos: int, max_new_tokens: int, beams: int) -> Generated:
    """The run's first candidates are one row per image; after the first choice each image has `beams` rows."""
    batch = len(candidates.tokens)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    active = list(range(batch))
    totals = np.zeros((batch, 1))  # per active image and live beam: the running total log-probability
    paths: list[list[Path]] = [[([], [])] for _ in range(batch)]
    for generated in range(1, max_new_tokens + 1):
        width, count = totals.shape[1], candidates.tokens.shape[1]
        scores = (totals[..., None] + candidates.log_probs.reshape(len(active), width, count)).reshape(len(active), -1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :2 * beams]
        new_totals = np.full((len(active), beams), -np.inf)
        new_paths, order, next_tokens, keep = [], [], [], []
        for slot, image in enumerate(active):
            rows = slice(slot * width, (slot + 1) * width)
            chosen, chosen_totals, sources = extend_row(top[slot].tolist(), scores[slot], candidates.tokens[rows],
                                                        candidates.log_probs[rows], paths[slot], finished[image],
                                                        eos, beams)
            new_totals[slot, :len(chosen_totals)] = chosen_totals
            new_paths.append(chosen)
            done = row_done(finished[image], new_totals[slot].max(), generated, beams)
            keep.append(not done)
            if not done:
                order += [slot * width + source for source in sources]
                next_tokens += [path_tokens[-1] for path_tokens, _ in chosen]
        if generated == max_new_tokens or not any(keep):
            for slot, image in enumerate(active):
                for beam, (path_tokens, path_scores) in enumerate(new_paths[slot]):
                    add(finished[image], Hypothesis(float(new_totals[slot, beam]) / len(path_tokens), path_tokens,
                                                    path_scores), beams)
            break
        active = [image for image, kept in zip(active, keep, strict=True) if kept]
        totals = new_totals[np.array(keep)]
        paths = [path for path, kept in zip(new_paths, keep, strict=True) if kept]
        candidates = run.step(np.array(next_tokens), generated, np.array(order))
    best = [max(hypotheses) for hypotheses in finished]
    return Generated([h.tokens for h in best], [h.log_probs for h in best])


def extend_row(top: list[int], scores: np.ndarray, tokens: np.ndarray, log_probs: np.ndarray, paths: list[Path],
               finished: list[Hypothesis], eos: int, beams: int) -> tuple[list[Path], list[float], list[int]]:
    """One image's step: its candidates (indices into live beams x candidates, best first) -> the next beams'
    paths, totals and the beam each extends. An EOS among the top `beams` candidates ends a hypothesis instead."""
    count = tokens.shape[1]
    chosen: list[Path] = []
    totals: list[float] = []
    sources: list[int] = []
    for rank, index in enumerate(top):
        beam, k = divmod(index, count)
        total = float(scores[index])
        if not math.isfinite(total):
            continue
        token = int(tokens[beam, k])
        path_tokens, path_scores = paths[beam]
        extended = ([*path_tokens, token], [*path_scores, float(log_probs[beam, k])])
        if token == eos:
            if rank < beams:  # an EOS below the top `beams` candidates does not end a hypothesis
                add(finished, Hypothesis(total / len(extended[0]), *extended), beams)
            continue
        chosen.append(extended)
        totals.append(total)
        sources.append(beam)
        if len(chosen) == beams:
            break
    return chosen, totals, sources


def add(hypotheses: list[Hypothesis], hypothesis: Hypothesis, beams: int) -> None:
    """Keeps the `beams` best finished hypotheses."""
    hypotheses.append(hypothesis)
    if len(hypotheses) > beams:
        hypotheses.remove(min(hypotheses))


def row_done(hypotheses: Sequence[Hypothesis], best_running: float, generated: int, beams: int) -> bool:
    """transformers' rule without early stopping: `beams` finished, and the best running total over the
    current length cannot beat the worst of them."""
    if len(hypotheses) < beams:
        return False
    return min(hypotheses).score >= best_running / generated
