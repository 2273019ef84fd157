"""Caption/label consistency: does a generated product name agree with the classifier heads?

The caption decoder and the heads of the schema's headline attributes (its roles: gender, colour, product;
Fashion Product Images' gender, baseColour and articleType) decode independently, so nothing stops a catalogue
page from showing a "Black" badge under "Puma Men Blue T-shirt". This module measures that disagreement
(`CaptionLexicon.agreement`, `consistency_rate`) and rewrites a caption with the smallest edit that makes it agree
(`CaptionLexicon.harmonise`), so the UI can trust the heads and still show a fluent name.

Torch-free on purpose: the trainer's evaluation, the server and the tests use it without a model.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from enrich_model.fashion import BASE_COLOURS, FASHION_SCHEMA, GENDERS
from enrich_model.schema import ROLES

GENDER, COLOUR, ARTICLE = ROLES  # what a caption must agree with, by role; the lexicon maps each to its attribute
KINDS: tuple[str, ...] = (COLOUR, GENDER, ARTICLE)  # in the order edits are made
BRAND = "brand"  # a name's phrase that holds a value word but is not one ("Red Tape"): matched, never checked
# When phrases of different kinds match with the same length the noun wins, then the colour, then the gender.
_PRIORITY: tuple[str, ...] = (ARTICLE, COLOUR, GENDER, BRAND)
_MIN_BRAND_NAMES = 3  # names a brand phrase starts before it is learnt
_BRAND_SHARE = 0.5  # of those, the share whose colour is not the one the phrase names
_MAX_NOUN_WORDS = 3
_LAST_WORD_SHARE = 0.3
_MAX_PASSES = 4
_SEPARATOR = "|"  # a symbol, not punctuation, so matching sees it as a word

Key = tuple[str, ...]
_Table = dict[Key, dict[str, str]]


def _is_punct(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _split_punct(token: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation), so "(Red," compares as "Red" but keeps its dressing."""
    start, end = 0, len(token)
    while start < end and _is_punct(token[start]):
        start += 1
    while end > start and _is_punct(token[end - 1]):
        end -= 1
    return token[:start], token[start:end], token[end:]


def _norm(token: str) -> str:
    return _split_punct(token)[1].casefold()


def _key(phrase: str) -> Key:
    """A phrase as matching sees it: case-folded words without surrounding punctuation."""
    return tuple(n for n in (_norm(w) for w in phrase.split()) if n)


@dataclass(frozen=True)
class _Mention:
    start: int  # first token of the phrase
    end: int  # one past its last token
    key: Key
    kinds: tuple[str, ...]  # one kind, or several when the phrase is the wanted label of several kinds


def _scan(tokens: Sequence[str], table: _Table, longest: int, targets: Mapping[str, Key]) -> list[_Mention]:
    """Left-to-right longest match over all kinds at once, so "Navy Blue" is one colour and never "Blue".

    Tokens that are only punctuation are skipped (so "Navy - Blue" still reads as "Navy Blue"). `targets` are the
    phrases of the labels being checked: they are matched even when the lexicon lacks them, and on a tie in length
    they win over other kinds, so a label whose text collides with another kind's phrase can still be mentioned.
    """
    norms = [_norm(t) for t in tokens]
    positions = [i for i, n in enumerate(norms) if n]
    words = [norms[i] for i in positions]
    longest = max([longest, *(len(k) for k in targets.values())])
    found: list[_Mention] = []
    p = 0
    while p < len(words):
        for length in range(min(longest, len(words) - p), 0, -1):
            key = tuple(words[p : p + length])
            kinds = tuple(k for k in _PRIORITY if targets.get(k) == key)
            if not kinds and key in table:
                kinds = (next(k for k in _PRIORITY if k in table[key]),)
            if kinds:
                found.append(_Mention(positions[p], positions[p + length - 1] + 1, key, kinds))
                p += length
                break
        else:
            p += 1
    return found


def _dress(tokens: Sequence[str], mention: _Mention, words: Sequence[str]) -> list[str]:
    """The replacement words, wearing the punctuation of the phrase they replace ("Red," -> "Blue,")."""
    if not words:
        return []
    lead, trail = _split_punct(tokens[mention.start])[0], _split_punct(tokens[mention.end - 1])[2]
    out = list(words)
    out[0] = lead + out[0]
    out[-1] = out[-1] + trail
    return out


def _apply(tokens: Sequence[str], replace: Mapping[int, tuple[int, list[str]]],
           inserts: Mapping[int, list[str]]) -> list[str]:
    """Apply span replacements (start -> (end, new words)) and insertions (before token i; i == len: at the end)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        out.extend(inserts.get(i, ()))
        if i in replace:
            end, new = replace[i]
            out.extend(new)
            for skipped in range(i + 1, end):  # never expected, but an insertion must not vanish inside a span
                out.extend(inserts.get(skipped, ()))
            i = end
        else:
            out.append(tokens[i])
            i += 1
    out.extend(inserts.get(len(tokens), ()))
    return out


@dataclass
class CaptionLexicon:
    """The phrases captions use for each label, so captions can be checked against (and fixed to) head outputs."""

    colours: list[str]  # baseColour labels, e.g. "Navy Blue", "Off White", "Black"
    genders: list[str]  # gender labels: Men, Women, Boys, Girls, Unisex
    nouns: dict[str, str]  # product label -> the noun phrase names use for it, e.g. "Tshirts" -> "T-shirt"
    # role -> the schema's attribute with that role: the keys of the labels it is given and of what it answers
    attributes: dict[str, str] = field(default_factory=lambda: dict(FASHION_SCHEMA.roles))
    brands: list[str] = field(default_factory=list)  # phrases that start names and hold a colour word: "Red Tape"
    _cache: tuple[tuple, _Table, int] | None = field(default=None, init=False, repr=False, compare=False)

    # -- building -------------------------------------------------------------------------------------------------

    @classmethod
    def learn(cls, examples: Iterable[tuple[str | None, str | None]], colours: Iterable[str] = BASE_COLOURS,
              genders: Iterable[str] = GENDERS, min_share: float = 0.6,
              attributes: Mapping[str, str] | None = None,
              coloured: Iterable[tuple[str | None, str | None]] = ()) -> CaptionLexicon:
        """Learn each articleType's noun from (articleType, productDisplayName) pairs of the training data.

        Labels like "Tshirts" or "Perfume and Body Mist" are not what names say ("T-shirt", "Perfume"), so the noun
        is the longest 1-3 word name suffix shared by >= min_share of that type's names; failing that the most
        common last word if it ends >= 30% of them; failing that the label itself. Two guards keep nouns to the
        product itself: a suffix may not contain a gender, nor a colour except as its last word (so a men-heavy
        type learns "Perfume", not "Men Perfume", and jeans learn "Jeans", not "Blue Jeans"); and a 2-3 word suffix
        must leave at least one word (the brand) in front of it.
        """
        colours, genders = list(dict.fromkeys(colours)), list(dict.fromkeys(genders))
        names: dict[str, list[list[str]]] = defaultdict(list)
        for article, name in examples:
            if not article or not name:
                continue
            words = [core for core in (_split_punct(t)[1] for t in name.split()) if core]
            if words:
                names[article].append(words)
        roles = dict(FASHION_SCHEMA.roles if attributes is None else attributes)
        guard = cls(colours, genders, {}, roles)
        nouns = {article: guard._learn_noun(article, names[article], min_share) for article in sorted(names)}
        return cls(colours, genders, nouns, roles, guard._learn_brands(coloured))

    def _learn_brands(self, coloured: Iterable[tuple[str | None, str | None]]) -> list[str]:
        """From (colour label, name) pairs: phrases made of a colour and the word after it that start at least
        _MIN_BRAND_NAMES names, most of whose products are another colour (Red Tape's shoes are brown, black...).
        Such a name's colour word is part of its brand: not a colour to check or to edit."""
        table, longest = self._matcher()
        starts: Counter[Key] = Counter()
        contradicting: Counter[Key] = Counter()
        spellings: dict[Key, str] = {}
        for colour, name in coloured:
            tokens = (name or "").split()
            found = _scan(tokens, table, longest, {})
            if not found or found[0].start != 0 or COLOUR not in found[0].kinds or found[0].end >= len(tokens):
                continue
            key = (*found[0].key, _norm(tokens[found[0].end]))
            starts[key] += 1
            contradicting[key] += _key(colour or "") != found[0].key
            spellings.setdefault(key, " ".join(_split_punct(t)[1] for t in tokens[: found[0].end + 1]))
        return sorted(spellings[k] for k, n in starts.items()
                      if n >= _MIN_BRAND_NAMES and contradicting[k] / n >= _BRAND_SHARE and k not in table)

    def _learn_noun(self, label: str, rows: list[list[str]], min_share: float) -> str:
        for length in range(_MAX_NOUN_WORDS, 0, -1):
            counts: Counter[Key] = Counter()
            spellings: dict[Key, Counter[str]] = defaultdict(Counter)
            for words in rows:
                if len(words) < length or (length > 1 and len(words) == length):
                    continue
                tail = words[-length:]
                key = tuple(w.casefold() for w in tail)
                counts[key] += 1
                spellings[key][" ".join(tail)] += 1
            # A single last word is also the fallback, so it only needs the lower of the two shares.
            needed = min_share if length > 1 else min(min_share, _LAST_WORD_SHARE)
            qualified = [key for key, n in counts.items() if n / len(rows) >= needed and self._noun_ok(key)]
            if qualified:
                best = min(qualified, key=lambda k: (-counts[k], k))
                return spellings[best].most_common(1)[0][0]
        return label

    def _noun_ok(self, key: Key) -> bool:
        """A noun candidate must not swallow a gender, nor a colour that is not its own last word."""
        table, longest = self._matcher()
        for mention in _scan(key, table, longest, {}):
            if GENDER in mention.kinds or mention.end < len(key):
                return False
        return True

    def to_json(self) -> dict:
        """A plain dict for the model bundle, so serving harmonises with the lexicon learnt at training time."""
        return {"colours": list(self.colours), "genders": list(self.genders), "nouns": dict(self.nouns),
                "attributes": dict(self.attributes), "brands": list(self.brands)}

    @classmethod
    def from_json(cls, data: dict) -> CaptionLexicon:
        """Inverse of `to_json`."""
        attributes = data.get("attributes")  # absent in bundles of Fashion Product Images' fixed schema
        return cls([str(c) for c in data["colours"]], [str(g) for g in data["genders"]],
                   {str(k): str(v) for k, v in data["nouns"].items()},
                   dict(FASHION_SCHEMA.roles) if attributes is None
                   else {str(k): str(v) for k, v in attributes.items()},
                   [str(b) for b in data.get("brands", [])])

    # -- matching -------------------------------------------------------------------------------------------------

    def _matcher(self) -> tuple[_Table, int]:
        """Phrase key -> {kind: label}, rebuilt only when the (mutable) lists change."""
        signature = (tuple(self.colours), tuple(self.genders), tuple(self.nouns.items()), tuple(self.brands))
        if self._cache is None or self._cache[0] != signature:
            table: _Table = {}
            entries = itertools.chain(
                ((ARTICLE, label, noun) for label, noun in self.nouns.items()),
                ((COLOUR, c, c) for c in self.colours),
                ((GENDER, g, g) for g in self.genders),
                ((BRAND, b, b) for b in self.brands),
            )
            for kind, label, phrase in entries:
                key = _key(phrase)
                if key:
                    table.setdefault(key, {}).setdefault(kind, label)
            self._cache = (signature, table, max((len(k) for k in table), default=1))
        return self._cache[1], self._cache[2]

    def _phrase(self, kind: str, label: str) -> str:
        """The text a caption uses for a label: the articleType's noun, or the lexicon's spelling of the label."""
        if kind == ARTICLE:
            return self.nouns.get(label, label)
        known = self.colours if kind == COLOUR else self.genders
        key = _key(label)
        return next((phrase for phrase in known if _key(phrase) == key), label)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The roles this lexicon checks (those its schema has), in edit order."""
        return tuple(kind for kind in KINDS if kind in self.attributes)

    def by_role(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Labels keyed by attribute -> keyed by role."""
        return {kind: labels.get(self.attributes[kind], "") for kind in self.kinds}

    def _targets(self, labels: Mapping[str, str]) -> dict[str, Key]:
        """`labels` by role."""
        return {kind: _key(self._phrase(kind, labels[kind])) for kind in self.kinds if labels.get(kind)}

    def _scan(self, tokens: Sequence[str], targets: Mapping[str, Key]) -> list[_Mention]:
        table, longest = self._matcher()
        return _scan(tokens, table, longest, targets)

    def mentions(self, caption: str) -> dict[str, list[str]]:
        """The labels a caption mentions, per attribute, in order of appearance (repeats kept)."""
        table, _ = self._matcher()
        out: dict[str, list[str]] = {kind: [] for kind in self.kinds}
        for mention in self._scan(caption.split(), {}):
            kind = mention.kinds[0]
            if kind in out:  # a brand is no mention of a value
                out[kind].append(table[mention.key][kind])
        return {self.attributes[kind]: found for kind, found in out.items()}

    def _agrees(self, tokens: Sequence[str], targets: Mapping[str, Key]) -> dict[str, bool]:
        found = self._scan(tokens, targets)
        result: dict[str, bool] = {}
        for kind in self.kinds:
            if kind not in targets:
                result[kind] = True  # no label for this kind: nothing for the caption to contradict
                continue
            keys = [m.key for m in found if kind in m.kinds]
            result[kind] = bool(keys) and all(k == targets[kind] for k in keys)
        return result

    def agreement(self, caption: str, labels: Mapping[str, str]) -> dict[str, bool]:
        """Per attribute (`labels` are keyed by attribute too): the label's phrase is mentioned and no other
        phrase of that kind is.

        A kind whose label is missing or empty in `labels` counts as agreeing. A label unknown to the lexicon
        agrees only if its own text is mentioned.
        """
        agrees = self._agrees(caption.split(), self._targets(self.by_role(labels)))
        return {self.attributes[kind]: value for kind, value in agrees.items()}

    # -- fixing ---------------------------------------------------------------------------------------------------

    def harmonise(self, caption: str, labels: Mapping[str, str]) -> str:
        """The smallest rewrite of `caption` that agrees with `labels` (by attribute) on every kind that has one.

        Per kind: the first wrong phrase becomes the label's phrase (or is dropped if the label is already there)
        and further wrong phrases are dropped; a missing gender goes after the first word (the brand), a missing
        colour right after the gender, a missing noun at the end. Other words keep their order. Edits can form new
        phrases with their neighbours ("Navy" + "Blue"), so the edit repeats until the caption agrees; if it never
        does (only with odd lexicons), the caption is rebuilt around the labels' phrases.
        """
        tokens = caption.split()
        labels = self.by_role(labels)
        targets = self._targets(labels)
        if all(self._agrees(tokens, targets).values()):
            return " ".join(tokens)
        phrases = {kind: self._phrase(kind, labels[kind]).split() for kind in targets}
        current = tokens
        for _ in range(_MAX_PASSES):
            current = self._edit(current, targets, phrases)
            if all(self._agrees(current, targets).values()):
                return " ".join(current)
        return " ".join(self._rebuild(tokens, targets, phrases))

    def _edit(self, tokens: list[str], targets: Mapping[str, Key], phrases: Mapping[str, list[str]]) -> list[str]:
        found = self._scan(tokens, targets)
        replace: dict[int, tuple[int, list[str]]] = {}
        inserts: dict[int, list[str]] = defaultdict(list)
        anchor: dict[str, int | None] = {}  # kind -> end of its first surviving mention, None if it has none
        for kind in KINDS:
            own = [m for m in found if kind in m.kinds]
            if kind not in targets:
                anchor[kind] = own[0].end if own else None
                continue
            right = [m for m in own if m.key == targets[kind]]
            wrong = [m for m in own if m.key != targets[kind]]
            if wrong and not right:
                first, wrong = wrong[0], wrong[1:]
                replace[first.start] = (first.end, _dress(tokens, first, phrases[kind]))
                right.append(first)
            for m in wrong:
                replace[m.start] = (m.end, [])
            anchor[kind] = min(right, key=lambda m: m.start).end if right else None
        if GENDER in targets and anchor[GENDER] is None:
            first_is_phrase = any(m.start == 0 for m in found)  # a leading colour or noun is not a brand
            at = 1 if len(tokens) >= 2 and not first_is_phrase else 0
            inserts[at].extend(phrases[GENDER])
            anchor[GENDER] = at
        if COLOUR in targets and anchor[COLOUR] is None:
            at = anchor[GENDER] if anchor[GENDER] is not None else 0
            inserts[at].extend(phrases[COLOUR])
        if ARTICLE in targets and anchor[ARTICLE] is None:
            inserts[len(tokens)].extend(phrases[ARTICLE])
        return _apply(tokens, replace, inserts)

    def _rebuild(self, tokens: list[str], targets: Mapping[str, Key],
                 phrases: Mapping[str, list[str]]) -> list[str]:
        """Last resort: drop every labelled-kind phrase and place the labels' phrases afresh, trying a few layouts."""
        found = [m for m in self._scan(tokens, targets) if any(k in targets for k in m.kinds)]
        covered = {i for m in found for i in range(m.start, m.end)}
        rest = [t for i, t in enumerate(tokens) if i not in covered]
        order = [kind for kind in (GENDER, COLOUR, ARTICLE) if kind in targets]
        candidates = [rest[:1] + phrases.get(GENDER, []) + phrases.get(COLOUR, []) + rest[1:]
                      + phrases.get(ARTICLE, [])]
        candidates += [[w for kind in perm for w in phrases[kind]] for perm in itertools.permutations(order)]
        # A separator that is no phrase's word cannot merge with anything, so this one agrees for any lexicon.
        candidates.append([w for kind in order for w in [*phrases[kind], _SEPARATOR]][:-1])
        scores = [sum(self._agrees(c, targets).values()) for c in candidates]
        return candidates[scores.index(max(scores))]


def consistency_rate(lexicon: CaptionLexicon, captions: Sequence[str],
                     labels: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Share of captions agreeing with their labels, per kind and on all three; "support" is the number of pairs.

    The evaluation number for "would the catalogue page contradict itself"; empty input gives {"support": 0}.
    """
    if len(captions) != len(labels):
        raise ValueError(f"{len(captions)} captions but {len(labels)} label sets")
    if not captions:
        return {"support": 0}
    hits = Counter[str]()
    for caption, row in zip(captions, labels, strict=True):
        agree = lexicon.agreement(caption, row)
        hits.update(attribute for attribute, agrees in agree.items() if agrees)
        hits["all"] += all(agree.values())
    n = len(captions)
    attributes = [lexicon.attributes[kind] for kind in lexicon.kinds]
    return {**{a: hits[a] / n for a in (*attributes, "all")}, "support": n}
