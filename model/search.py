"""Greedy and beam search over a decoder step, in NumPy: the exported decoder's generation loop.

A step is any function (tokens (B, 1), position, past keys, past values, cross keys, cross values) ->
(log-probabilities (B, vocab), keys, values), with the caches shaped (layers, B, heads, T, head size). Every
row starts from the start token at position 0, so one position serves the whole batch; rows that finish are
dropped from the next steps (their results are already known), which leaves the others' arithmetic unchanged.

Greedy search picks the same tokens as transformers' `generate` (argmax, stop at EOS, pad after it). Beam
search follows its defaults too: length penalty 1 (a finished hypothesis scores its total log-probability
over its length, EOS included), 2 × beams candidates per step, and a batch row stops once it has `beams`
finished hypotheses and no running one could beat the worst of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Step = Callable[[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Captions:
    texts: list[str]
    confidences: list[float]  # geometric mean of the chosen tokens' probabilities
    token_counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Tokens:
    """Token ids generation needs, from the bundle."""

    start: int
    eos: int
    pad: int
    special: frozenset[int]


@dataclass
class Generated:
    """Per row, the generated token ids (EOS included when reached) and each one's log-probability."""

    tokens: list[list[int]]
    log_probs: list[list[float]]

    def confidences(self, special: frozenset[int]) -> list[float]:
        """The geometric mean of the probabilities of the tokens that are text (not start, EOS or padding)."""
        out = []
        for tokens, log_probs in zip(self.tokens, self.log_probs, strict=True):
            kept = [p for t, p in zip(tokens, log_probs, strict=True) if t not in special and math.isfinite(p)]
            out.append(math.exp(sum(kept) / len(kept)) if kept else 0.0)
        return out


def empty_cache(cross_keys: np.ndarray, rows: int) -> np.ndarray:
    layers, _, heads, _, size = cross_keys.shape
    return np.zeros((layers, rows, heads, 0, size), np.float32)


def greedy(step: Step, cross_keys: np.ndarray, cross_values: np.ndarray, tokens: Tokens,
           max_new_tokens: int) -> Generated:
    batch = cross_keys.shape[1]
    out: list[list[int]] = [[] for _ in range(batch)]
    log_probs: list[list[float]] = [[] for _ in range(batch)]
    active = np.arange(batch)
    last = np.full((batch, 1), tokens.start, np.int64)
    keys = values = empty_cache(cross_keys, batch)
    for position in range(max_new_tokens):
        scores, keys, values = step(last, position, keys, values, cross_keys, cross_values)
        chosen = scores.argmax(axis=1)
        chosen_scores = scores[np.arange(len(chosen)), chosen]
        for row, token, score in zip(active.tolist(), chosen.tolist(), chosen_scores.tolist(), strict=True):
            out[row].append(token)
            log_probs[row].append(score)
        running = chosen != tokens.eos
        if not running.any():
            break
        if not running.all():
            active, chosen = active[running], chosen[running]
            keys, values = keys[:, running], values[:, running]
            cross_keys, cross_values = cross_keys[:, running], cross_values[:, running]
        last = chosen[:, None].astype(np.int64)
    return Generated(out, log_probs)


@dataclass(order=True)
class Hypothesis:
    score: float
    tokens: list[int] = field(compare=False)
    log_probs: list[float] = field(compare=False)


def beam_search(step: Step, cross_keys: np.ndarray, cross_values: np.ndarray, tokens: Tokens, max_new_tokens: int,
                beams: int) -> Generated:
    batch = cross_keys.shape[1]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    active = list(range(batch))
    cross_keys, cross_values = (np.repeat(array, beams, axis=1) for array in (cross_keys, cross_values))
    # Per active row and beam: running total, tokens and their log-probabilities. At first only beam 0 is
    # live (all beams hold the same start token).
    totals = np.full((batch, beams), -np.inf)
    totals[:, 0] = 0.0
    paths: list[list[tuple[list[int], list[float]]]] = [[([], []) for _ in range(beams)] for _ in range(batch)]
    last = np.full((batch * beams, 1), tokens.start, np.int64)
    keys = values = empty_cache(cross_keys, batch * beams)
    for position in range(max_new_tokens):
        scores, keys, values = step(last, position, keys, values, cross_keys, cross_values)
        vocab = scores.shape[1]
        candidates = (totals[..., None] + scores.reshape(len(active), beams, vocab)).reshape(len(active), -1)
        width = 2 * beams
        top = np.argpartition(-candidates, width, axis=1)[:, :width]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(candidates, top, 1), axis=1), axis=1)
        keep_rows, source_rows, next_tokens = [], [], []
        new_totals = np.full((len(active), beams), -np.inf)
        new_paths = []
        for slot, row in enumerate(active):
            chosen, chosen_totals, sources = extend_row(top[slot].tolist(), candidates[slot],
                                                        scores[slot * beams:(slot + 1) * beams], paths[slot],
                                                        finished[row], tokens.eos, beams)
            new_totals[slot, :len(chosen_totals)] = chosen_totals
            source_rows += [slot * beams + beam for beam in sources]
            next_tokens += [path_tokens[-1] for path_tokens, _ in chosen]
            new_paths.append(chosen)
            keep_rows.append(not row_done(finished[row], new_totals[slot].max(), position + 1, beams))
        keep = np.array(keep_rows)
        if position + 1 == max_new_tokens or not keep.any():
            for slot, row in enumerate(active):
                for beam, (path_tokens, path_scores) in enumerate(new_paths[slot]):
                    add(finished[row], Hypothesis(float(new_totals[slot, beam]) / len(path_tokens), path_tokens,
                                                  path_scores), beams)
            break
        source = np.array(source_rows)
        keys, values = keys[:, source], values[:, source]
        last = np.array(next_tokens, np.int64)[:, None]
        if not keep.all():
            rows = np.repeat(keep, beams)
            keys, values, last = keys[:, rows], values[:, rows], last[rows]
            cross_keys, cross_values = cross_keys[:, rows], cross_values[:, rows]
        active = [row for row, kept in zip(active, keep_rows, strict=True) if kept]
        totals = new_totals[keep]
        paths = [path for path, kept in zip(new_paths, keep_rows, strict=True) if kept]
    best = [max(hypotheses) for hypotheses in finished]
    return Generated([h.tokens for h in best], [h.log_probs for h in best])


def extend_row(top: list[int], candidates: np.ndarray, scores: np.ndarray, paths: list[tuple[list[int], list[float]]],
               finished: list[Hypothesis], eos: int, beams: int,
               ) -> tuple[list[tuple[list[int], list[float]]], list[float], list[int]]:
    """One batch row's step: its candidates (indices into beams x vocabulary, best first) -> the next beams'
    paths, totals and the beam each extends. An EOS among the top `beams` candidates ends a hypothesis instead."""
    vocab = scores.shape[1]
    chosen: list[tuple[list[int], list[float]]] = []
    totals: list[float] = []
    sources: list[int] = []
    for rank, index in enumerate(top):
        beam, token = divmod(index, vocab)
        total = float(candidates[index])
        if not math.isfinite(total):
            continue
        path_tokens, path_scores = paths[beam]
        extended = ([*path_tokens, token], [*path_scores, float(scores[beam, token])])
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
