"""Caption/label consistency: learning nouns, matching phrases, agreement, harmonising, and the rate."""

from __future__ import annotations

import json
import random

import pytest

from enrich_model.consistency import CaptionLexicon, consistency_rate
from enrich_model.fashion import BASE_COLOURS, GENDERS

NAMES: dict[str, list[str]] = {
    "Tshirts": [
        "Puma Men Navy Blue T-shirt",
        "Nike Men Black Printed T-shirt",
        "Roadster Women White T-shirt",
        "Adidas Men Grey Melange Polo T-shirt",
        "Wrangler Men Red t-shirt",
        "Jealous 21 Women Pink Round Neck T-shirt",
        "Fila Men Navy Blue T-shirt",
        "Spykar Men Olive T-shirt",
    ],
    "Casual Shoes": [
        "Nike Men Black Casual Shoes",
        "Puma Men White Casual Shoes",
        "Adidas Women Grey Casual Shoes",
        "Vans Unisex Navy Blue Casual Shoes",
        "Converse Men Brown Casual Shoes",
        "Woodland Men Tan Leather Casual Shoes",
    ],
    "Sports Shoes": [
        "Nike Men Black Running Sports Shoes",
        "Reebok Men White Sports Shoes",
        "Asics Men Blue Sports Shoes",
        "Puma Women Pink Sports Shoes",
    ],
    "Watches": [
        "Titan Women Silver Analog Watch",
        "Fastrack Men Black Digital Watch",
        "Casio Men Black Analog Watch",
        "Timex Men Chronograph Watch",
        "Q&Q Women Gold Watch",
        "Titan Men Brown Analog Watch",
    ],
    # Mostly men's: "Men Perfume" ends 4 of 5 names, but a noun must not swallow the gender.
    "Perfume and Body Mist": [
        "Davidoff Men Perfume",
        "Nike Men Perfume",
        "Adidas Men Perfume",
        "Calvin Klein Men Perfume",
        "Elizabeth Arden Women Perfume",
    ],
    # "Blue Jeans" ends 3 of 4 names, but the colour is not part of the noun.
    "Jeans": [
        "Levis Men Blue Jeans",
        "Wrangler Men Blue Jeans",
        "Lee Women Blue Jeans",
        "Roadster Men Black Jeans",
    ],
    # No suffix reaches 60%, "Kurta" ends half of them: the last-word fallback.
    "Kurtas": ["Fabindia Women Kurta", "Biba Women Kurta", "W Women Kurti", "Global Desi Women Tunic"],
    # Nothing reaches 30%: the label itself.
    "Free Gifts": ["Free Gift Bag", "Puma Cap", "Nike Socks", "Adidas Bottle"],
}


def examples() -> list[tuple[str | None, str | None]]:
    pairs: list[tuple[str | None, str | None]] = [(a, n) for a, names in NAMES.items() for n in names]
    return [*pairs, (None, "Puma Men Black Shirt"), ("Shirts", None), (None, None)]


@pytest.fixture(scope="module")
def lex() -> CaptionLexicon:
    return CaptionLexicon.learn(examples())


# -- learn --------------------------------------------------------------------------------------------------------


def test_learn_picks_the_product_noun_of_each_type(lex: CaptionLexicon):
    assert lex.nouns == {
        "Casual Shoes": "Casual Shoes",
        "Free Gifts": "Free Gifts",
        "Jeans": "Jeans",
        "Kurtas": "Kurta",
        "Perfume and Body Mist": "Perfume",
        "Sports Shoes": "Sports Shoes",
        "Tshirts": "T-shirt",  # the majority spelling, not "t-shirt"
        "Watches": "Watch",
    }
    assert "Shirts" not in lex.nouns  # its only pair had no name
    assert lex.colours == list(BASE_COLOURS) and lex.genders == list(GENDERS)


def test_learn_min_share_and_longest_suffix():
    watches = [("Watches", n) for n in NAMES["Watches"]]
    assert CaptionLexicon.learn(watches, min_share=0.5).nouns["Watches"] == "Analog Watch"  # 3 of 6
    assert CaptionLexicon.learn(watches, min_share=0.6).nouns["Watches"] == "Watch"


def test_learn_keeps_the_brand_out_of_short_names():
    # Every name is "Titan Watch": the 2-word suffix is the whole name, brand included, so it is not a noun.
    lexicon = CaptionLexicon.learn([("Watches", "Titan Watch")] * 3 + [("Watches", "Titan Watch.")])
    assert lexicon.nouns == {"Watches": "Watch"}


def test_learn_uses_given_vocabularies():
    lexicon = CaptionLexicon.learn([("Tshirts", "Puma Men Teal T-shirt")], colours=["Teal", "Teal"], genders=["Men"])
    assert lexicon.colours == ["Teal"] and lexicon.genders == ["Men"]
    assert lexicon.mentions("Puma Men Black T-shirt")["baseColour"] == []


# -- mentions -----------------------------------------------------------------------------------------------------


def test_mentions_take_the_longest_phrase(lex: CaptionLexicon):
    assert lex.mentions("Fila Men Navy Blue T-shirt") == {
        "baseColour": ["Navy Blue"], "gender": ["Men"], "articleType": ["Tshirts"],
    }
    assert lex.mentions("Fila Men Blue T-shirt")["baseColour"] == ["Blue"]
    assert lex.mentions("Vans unisex OFF WHITE casual shoes") == {
        "baseColour": ["Off White"], "gender": ["Unisex"], "articleType": ["Casual Shoes"],
    }
    assert lex.mentions("Adidas Men Grey Melange Polo T-shirt")["baseColour"] == ["Grey Melange"]
    # Casual Shoes and Sports Shoes are different nouns; a bare "Shoes" is neither.
    assert lex.mentions("Nike Men Black Running Sports Shoes")["articleType"] == ["Sports Shoes"]
    assert lex.mentions("Nike Men Black Shoes")["articleType"] == []


def test_mentions_strip_punctuation_and_keep_order(lex: CaptionLexicon):
    found = lex.mentions("Tokyo Talkies Women Red, White (Navy Blue) T-shirt.")
    assert found == {"baseColour": ["Red", "White", "Navy Blue"], "gender": ["Women"], "articleType": ["Tshirts"]}
    assert lex.mentions("Nike Men's Bluish Shirt") == {"baseColour": [], "gender": [], "articleType": []}
    assert lex.mentions("") == {"baseColour": [], "gender": [], "articleType": []}


def test_noun_wins_over_colour_on_equal_length():
    lexicon = CaptionLexicon(colours=["Cream", "Blue"], genders=["Women"], nouns={"Face Moisturisers": "Cream"})
    assert lexicon.mentions("Nivea Women Blue Cream") == {
        "baseColour": ["Blue"], "gender": ["Women"], "articleType": ["Face Moisturisers"],
    }
    # ...unless the colour is the label being checked: then the caption can still say it.
    labels = {"baseColour": "Cream", "gender": "Women", "articleType": "Lipstick"}
    assert lexicon.agreement("Lakme Women Cream Lipstick", labels) == {
        "baseColour": True, "gender": True, "articleType": True,
    }


# -- agreement ----------------------------------------------------------------------------------------------------

SHIRT = {"baseColour": "Navy Blue", "gender": "Men", "articleType": "Tshirts"}


@pytest.mark.parametrize(("caption", "labels", "expected"), [
    ("Puma Men Navy Blue T-shirt", SHIRT, (True, True, True)),
    ("puma men navy blue t-shirt", SHIRT, (True, True, True)),
    ("Puma Men Blue T-shirt", SHIRT, (False, True, True)),  # Blue is not Navy Blue
    ("Puma Men Navy Blue T-shirt", {**SHIRT, "baseColour": "Blue"}, (False, True, True)),
    ("Puma Men Navy Blue White T-shirt", SHIRT, (False, True, True)),  # a second colour contradicts
    ("Puma Navy Blue T-shirt", SHIRT, (True, False, True)),  # gender not mentioned
    ("Puma Men Women Navy Blue T-shirt", SHIRT, (True, False, True)),
    ("Puma Men Navy Blue Casual Shoes", SHIRT, (True, True, False)),
    ("Puma Men Navy Blue Tshirts", SHIRT, (True, True, False)),  # the label is not the noun names use
    ("Davidoff Men Perfume", {"gender": "Men", "articleType": "Perfume and Body Mist", "baseColour": "Blue"},
     (False, True, True)),
    ("Puma Men Neon T-shirt", {**SHIRT, "baseColour": "Neon"}, (True, True, True)),  # unknown colour, mentioned
    ("Puma Men Black T-shirt", {**SHIRT, "baseColour": "Neon"}, (False, True, True)),
    ("Puma Men Dhoti", {**SHIRT, "articleType": "Dhoti"}, (False, True, True)),  # unknown type: its own label
    ("Puma Men Navy Blue Dhoti", {**SHIRT, "articleType": "Dhoti"}, (True, True, True)),
])
def test_agreement(lex: CaptionLexicon, caption: str, labels: dict[str, str], expected: tuple[bool, bool, bool]):
    assert lex.agreement(caption, labels) == dict(zip(("baseColour", "gender", "articleType"), expected, strict=True))


def test_agreement_ignores_kinds_without_a_label(lex: CaptionLexicon):
    assert lex.agreement("Puma Men Red T-shirt", {"articleType": "Tshirts", "gender": ""}) == {
        "baseColour": True, "gender": True, "articleType": True,
    }


# -- harmonise ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("caption", "labels", "expected"), [
    # wrong colour replaced, multi-word both ways
    ("Puma Men Black T-shirt", SHIRT, "Puma Men Navy Blue T-shirt"),
    ("Puma Men Navy Blue T-shirt", {**SHIRT, "baseColour": "Black"}, "Puma Men Black T-shirt"),
    # missing gender inserted after the brand
    ("Puma Navy Blue T-shirt", SHIRT, "Puma Men Navy Blue T-shirt"),
    ("Puma", SHIRT, "Men Navy Blue Puma T-shirt"),  # one word: no brand to skip
    ("T-shirt", SHIRT, "Men Navy Blue T-shirt"),
    ("", SHIRT, "Men Navy Blue T-shirt"),
    # a leading colour is not a brand: the gender goes before it
    ("Navy Blue T-shirt", SHIRT, "Men Navy Blue T-shirt"),
    # missing colour inserted right after the gender
    ("Puma Men Slim Fit T-shirt", SHIRT, "Puma Men Navy Blue Slim Fit T-shirt"),
    # wrong gender replaced
    ("Roadster Women Navy Blue T-shirt", SHIRT, "Roadster Men Navy Blue T-shirt"),
    # wrong noun replaced, missing noun appended
    ("Nike Men Black Casual Shoes", {"baseColour": "Black", "gender": "Men", "articleType": "Sports Shoes"},
     "Nike Men Black Sports Shoes"),
    ("Nike Men Black Running", {"baseColour": "Black", "gender": "Men", "articleType": "Sports Shoes"},
     "Nike Men Black Running Sports Shoes"),
    # duplicate wrong colours: the first becomes the label, the rest go
    ("Tokyo Talkies Women Red, White Top", {"baseColour": "Blue", "gender": "Women", "articleType": "Tops"},
     "Tokyo Talkies Women Blue, Top Tops"),
    ("Puma Men Red White Black T-shirt", SHIRT, "Puma Men Navy Blue T-shirt"),
    # label already there: only the wrong ones go
    ("Puma Men Red Navy Blue White T-shirt", SHIRT, "Puma Men Navy Blue T-shirt"),
    ("Puma Men Women Boys T-shirt", SHIRT, "Puma Men Navy Blue T-shirt"),
    # punctuation of a replaced phrase is kept; whitespace collapsed
    ("  Puma   Men (Black) T-shirt ", SHIRT, "Puma Men (Navy Blue) T-shirt"),
    # all three wrong at once
    ("Titan Women Silver Analog Watch", {"baseColour": "Black", "gender": "Men", "articleType": "Casual Shoes"},
     "Titan Men Black Analog Casual Shoes"),
    # unknown labels are written as they are
    ("Puma Men Black T-shirt", {**SHIRT, "baseColour": "Neon", "articleType": "Dhoti"}, "Puma Men Neon Dhoti"),
    # a kind without a label is left alone
    ("Puma Red T-shirt", {"articleType": "Tshirts", "gender": "Men"}, "Puma Men Red T-shirt"),
])
def test_harmonise(lex: CaptionLexicon, caption: str, labels: dict[str, str], expected: str):
    fixed = lex.harmonise(caption, labels)
    assert fixed == expected
    assert all(lex.agreement(fixed, labels).values())


def test_harmonise_reruns_when_an_edit_forms_a_new_phrase(lex: CaptionLexicon):
    # Deleting "Red" would leave "Navy Blue", which is not Blue: the second pass fixes that too.
    assert lex.harmonise("Puma Men Navy Red Blue T-shirt", {**SHIRT, "baseColour": "Blue"}) == "Puma Men Blue T-shirt"
    # Replacing "Red" with Grey would form "Grey Melange".
    assert lex.harmonise("Puma Men Red Melange T-shirt", {**SHIRT, "baseColour": "Grey"}) == "Puma Men Grey T-shirt"


@pytest.mark.parametrize("caption", [
    "Puma Men Navy Blue T-shirt", "  Puma  men NAVY blue, Slim Fit t-shirt.", "Men Navy Blue T-shirt",
])
def test_harmonise_is_idempotent(lex: CaptionLexicon, caption: str):
    assert lex.harmonise(caption, SHIRT) == " ".join(caption.split())
    once = lex.harmonise("Roadster Women Red White Shoes", SHIRT)
    assert lex.harmonise(once, SHIRT) == once


# -- json ---------------------------------------------------------------------------------------------------------


def test_json_round_trip(lex: CaptionLexicon, tmp_path):
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps(lex.to_json()))
    back = CaptionLexicon.from_json(json.loads(path.read_text()))
    assert back == lex
    assert back.nouns == lex.nouns and back.colours == lex.colours and back.genders == lex.genders
    caption = "Nike Women Grey Melange Running Sports Shoes"
    assert back.mentions(caption) == lex.mentions(caption)


def test_matcher_follows_edits_to_the_lists():
    lexicon = CaptionLexicon(colours=["Blue"], genders=["Men"], nouns={})
    assert lexicon.mentions("Men Teal Kurta")["baseColour"] == []
    lexicon.colours.append("Teal")
    lexicon.nouns["Kurtas"] = "Kurta"
    assert lexicon.mentions("Men Teal Kurta") == {"baseColour": ["Teal"], "gender": ["Men"], "articleType": ["Kurtas"]}


# -- property: harmonise always agrees ----------------------------------------------------------------------------

FILLER = ["Puma", "Nike", "Slim", "Fit", "Navy", "Off", "Melange", "Sea", "Shoes", "Casual", "Sports", "Running",
          "Analog", "(Pack", "of", "2)", ",", "-", "&", "Men's", "Tshirts", "Watches", "Gift", "Free"]
# An odd lexicon on purpose: a noun equal to a colour, a noun that starts a longer colour ("Grey" + "Melange ...").
ODD = CaptionLexicon(colours=["Cream", "Blue", "Navy Blue", "Grey", "Grey Melange", "Off White", "White"],
                     genders=["Men", "Women", "Unisex"],
                     nouns={"Face Moisturisers": "Cream", "Tshirts": "T-shirt", "Odd": "Melange Tshirt",
                            "Casual Shoes": "Casual Shoes", "Shoes": "Shoes"})


def _random_caption(rng: random.Random, lexicon: CaptionLexicon) -> str:
    pool = FILLER + lexicon.colours + lexicon.genders + list(lexicon.nouns.values())
    words = []
    for _ in range(rng.randint(0, 8)):
        phrase = rng.choice(pool)
        words.append(rng.choice([phrase, phrase.lower(), phrase.upper(), phrase + ","]))
    return " ".join(words)


def _random_labels(rng: random.Random, lexicon: CaptionLexicon) -> dict[str, str]:
    return {"baseColour": rng.choice(lexicon.colours), "gender": rng.choice(lexicon.genders),
            "articleType": rng.choice(sorted(lexicon.nouns))}


def _check_property(lexicon: CaptionLexicon, caption: str, labels: dict[str, str]) -> None:
    fixed = lexicon.harmonise(caption, labels)
    assert all(lexicon.agreement(fixed, labels).values()), (caption, labels, fixed)
    assert lexicon.harmonise(fixed, labels) == fixed, (caption, labels, fixed)


@pytest.mark.parametrize("which", ["learnt", "odd"])
def test_harmonise_always_agrees_random(lex: CaptionLexicon, which: str):
    lexicon = lex if which == "learnt" else ODD
    rng = random.Random(1234)
    for _ in range(1500):
        _check_property(lexicon, _random_caption(rng, lexicon), _random_labels(rng, lexicon))


def test_harmonise_always_agrees_even_for_adversarial_lexicons():
    # Phrases of all kinds drawn from four words overlap and extend each other every way possible; the edit loop
    # does not always converge here, and the last-resort rebuild must still agree.
    rng = random.Random(99)
    vocab = ["a", "b", "c", "d"]

    def phrase() -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 2)))

    for _ in range(300):
        colours, genders = sorted({phrase() for _ in range(3)}), sorted({phrase() for _ in range(2)})
        lexicon = CaptionLexicon(colours=colours, genders=genders, nouns={f"type{i}": phrase() for i in range(2)})
        for _ in range(10):
            caption = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 5)))
            _check_property(lexicon, caption, _random_labels(rng, lexicon))


def test_harmonise_always_agrees_hypothesis(lex: CaptionLexicon):
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    words = st.sampled_from(FILLER + lex.colours + lex.genders + list(lex.nouns.values()))

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(caption=st.lists(words, max_size=8).map(" ".join),
                      colour=st.sampled_from(lex.colours), gender=st.sampled_from(lex.genders),
                      article=st.sampled_from(sorted(lex.nouns)))
    def check(caption: str, colour: str, gender: str, article: str) -> None:
        _check_property(lex, caption, {"baseColour": colour, "gender": gender, "articleType": article})

    check()


# -- consistency_rate ---------------------------------------------------------------------------------------------


def test_consistency_rate_on_a_known_set(lex: CaptionLexicon):
    captions = [
        "Puma Men Navy Blue T-shirt",  # all agree
        "Puma Men Blue T-shirt",  # colour wrong
        "Puma Women Navy Blue Casual Shoes",  # gender and noun wrong
        "Puma Navy Blue T-shirt",  # gender missing
    ]
    rate = consistency_rate(lex, captions, [SHIRT] * 4)
    assert rate == {"baseColour": 0.75, "gender": 0.5, "articleType": 0.75, "all": 0.25, "support": 4}
    fixed = [lex.harmonise(c, SHIRT) for c in captions]
    assert consistency_rate(lex, fixed, [SHIRT] * 4) == {
        "baseColour": 1.0, "gender": 1.0, "articleType": 1.0, "all": 1.0, "support": 4,
    }


def test_consistency_rate_edge_cases(lex: CaptionLexicon):
    assert consistency_rate(lex, [], []) == {"support": 0}
    with pytest.raises(ValueError):
        consistency_rate(lex, ["Puma Men Navy Blue T-shirt"], [])


def test_a_brand_that_holds_a_colour_word_is_a_brand():
    """"Red Tape" names are brown, black, tan shoes: the lexicon learns the phrase as a brand, so neither the
    caption's agreement nor the audit reads its "Red" as a colour."""
    names = [(colour, f"Red Tape Men {colour} Casual Shoes") for colour in ("Brown", "Black", "Tan", "Brown")]
    names += [("Red", "Puma Men Red T-shirt"), ("Red", "Red Tape Men Red Casual Shoes")]
    lexicon = CaptionLexicon.learn([("Casual Shoes", n) for _, n in names] + [("Tshirts", names[4][1])],
                                   colours=["Red", "Brown", "Black", "Tan"], genders=["Men"], coloured=names)
    assert lexicon.brands == ["Red Tape"]
    assert CaptionLexicon.from_json(lexicon.to_json()).brands == ["Red Tape"]
    assert lexicon.mentions("Red Tape Men Brown Casual Shoes")["baseColour"] == ["Brown"]
    labels = {"gender": "Men", "baseColour": "Black", "articleType": "Casual Shoes"}
    assert lexicon.harmonise("Red Tape Men Brown Casual Shoes", labels) == "Red Tape Men Black Casual Shoes"
    # One name alone does not make a brand: a colour that starts names is still a colour.
    once = CaptionLexicon.learn([("Tshirts", "Red Shirt Co Men Blue T-shirt")], colours=["Red", "Blue"],
                                genders=["Men"], coloured=[("Blue", "Red Shirt Co Men Blue T-shirt")])
    assert once.brands == []
