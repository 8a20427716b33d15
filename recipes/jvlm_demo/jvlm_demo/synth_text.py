"""Text-only task families: small arithmetic, word translation, and facts of the world.

These keep the decoder's language ability exercised (the paper mixes text-only data in for
the same reason) and tie the image vocabulary across languages: the translation task asks
exactly the colour, shape, item and number words that the images print.
"""

from __future__ import annotations

import random

from jvlm_demo import synth_lexicon as lex
from jvlm_demo.synth_core import Draft, pick
from jvlm_demo.synth_phrases import REWORDED_FACTS, WEEKDAYS_RU_INS, ask


def make_arithmetic(rng: random.Random, lang: str) -> Draft:
    """One operation on small numbers (operands up to 20, products up to 9 x 9); subtraction
    never goes below zero. The ranges are bounded so a small model can learn them all."""
    op = pick(rng, ["+", "+", "-", "×"])
    if op == "+":
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        result = a + b
    elif op == "-":
        a = rng.randint(0, 20)
        b = rng.randint(0, a)
        result = a - b
    else:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        result = a * b
    return Draft(ask(rng, "arith", lang, a=str(a), op=op, b=str(b)), str(result))


def _translatable() -> list[dict[str, str]]:
    """Every lexicon word with one form per language: colours, shapes, items, numbers."""
    words = [entry["name"] for entry in lex.COLOURS.values()]
    words += [entry["name"] for entry in lex.SHAPES.values()]
    words += list(lex.ITEMS.values())
    words += list(lex.NUMBER_WORDS.values())
    return words


TRANSLATABLE = _translatable()


def make_translation(rng: random.Random, lang: str) -> Draft:
    """Ask for the ``lang`` word of a word given in another language.

    The answer is always in the sample's language, like every other answer; the source
    word's language is drawn from the rest. Pairs whose two forms are identical (e.g.
    Portuguese "bananas" for English "bananas") are skipped: they teach nothing.
    """
    while True:
        entry = pick(rng, TRANSLATABLE)
        source = pick(rng, [other for other in lex.LANGUAGES if other != lang])
        if entry[source].lower() != entry[lang].lower():
            break
    return Draft(ask(rng, "translate", lang, word=entry[source]), entry[lang])


def make_facts(rng: random.Random, lang: str, reworded: bool = False) -> Draft:
    """Fixed facts a model can memorise: sides of shapes, weekday order, number words, sizes.

    ``reworded`` asks the facts whose answer follows from one word (not "which is larger")
    in the training-only ``REWORDED_FACTS`` sentences instead of the held-out splits' ones.
    """
    kinds = ["sides", "next_day", "next_day", "digits", "digits", "larger", "larger", "colour"]
    kind = pick(rng, [k for k in kinds if k != "larger"] if reworded else kinds)
    templates = REWORDED_FACTS if reworded else None
    if kind == "sides":
        shape = pick(rng, lex.SHAPE_SIDES)
        facts = lex.SHAPE_SIDES[shape]
        if lang in ("ru", "tr"):
            slot = facts[lang]
        elif lang in ("ar", "pt"):
            slot = lex.SHAPES[shape]["the"][lang]
        else:
            slot = lex.SHAPES[shape]["name"][lang]
        return Draft(ask(rng, "facts.sides", lang, templates, shape=slot), str(facts["n"]))
    if kind == "next_day":
        i = rng.randrange(7)
        day = lex.WEEKDAYS_RU_GEN[i] if lang == "ru" else lex.WEEKDAYS[i][lang]
        question = ask(rng, "facts.next_day", lang, templates, day=day, day_ins=WEEKDAYS_RU_INS[i],
                       day_nom=lex.WEEKDAYS[i][lang])
        return Draft(question, lex.WEEKDAYS[(i + 1) % 7][lang])
    if kind == "digits":
        n = pick(rng, lex.NUMBER_WORDS)
        return Draft(ask(rng, "facts.digits", lang, templates, word=lex.NUMBER_WORDS[n][lang]), str(n))
    if kind == "larger":
        a, b = rng.sample(range(100), 2)
        return Draft(ask(rng, "facts.larger", lang, a=str(a), b=str(b)), str(max(a, b)))
    item = pick(rng, lex.ITEM_COLOURS)
    return Draft(ask(rng, f"facts.colour.{item}", lang, templates), lex.colour_name(lex.ITEM_COLOURS[item], lang))


#: the stem of each colour-fact item as its questions spell it (``facts.colour.<item>`` in
#: ``synth_phrases.QUESTIONS`` and ``REWORDED_FACTS``)
ITEM_STEMS: dict[str, dict[str, str]] = {
    "bananas": dict(zip(lex.LANGUAGES, ("banana", "香蕉", "موز", "banana", "банан", "muz"))),
    "tomatoes": dict(zip(lex.LANGUAGES, ("tomato", "西红柿", "طماطم", "tomate", "помидор", "domates"))),
    "milk": dict(zip(lex.LANGUAGES, ("milk", "牛奶", "حليب", "leite", "молок", "Süt"))),
}


def fact_key(question: str, answer: str, lang: str) -> str | None:
    """The word a ``make_facts`` answer follows from, as the question spells it.

    The day before the answer for a next-day question, the number word in quotes for a
    digits question, the shape for a sides question, the item for a colour question: each
    answer is a function of that one word, whatever the wording around it. None for the
    "which is larger" questions (their answer is in the question) and unknown questions.
    Outside Chinese the match grows to its whole word, so an inflected form is kept whole
    (Russian ``помидора``, Turkish ``Sütün``). A word the question does not write after a
    space is given in parentheses, ``(dört)``: written after the reading's ``? `` it would
    be cut into other tokens than in the question (`` dört`` and ``dört`` differ), and the
    reading copies it token for token.
    """
    forms: list[str] = []
    days = [day[lang] for day in lex.WEEKDAYS]
    if answer in days:
        i = (days.index(answer) - 1) % 7
        forms = [days[i]] + ([lex.WEEKDAYS_RU_GEN[i], WEEKDAYS_RU_INS[i]] if lang == "ru" else [])
    elif answer.isdigit():
        word = lex.NUMBER_WORDS.get(int(answer), {}).get(lang)
        if word and any(f"{q0}{word}{q1}" in question for q0, q1 in ("“”", "«»")):
            forms = [word]
        else:
            forms = [form for shape, facts in lex.SHAPE_SIDES.items() if str(facts["n"]) == answer
                     for form in (lex.SHAPES[shape]["name"][lang], lex.SHAPES[shape]["the"][lang], facts.get(lang))]
    else:
        forms = [stems[lang] for item, stems in ITEM_STEMS.items()
                 if lex.colour_name(lex.ITEM_COLOURS[item], lang) == answer]
    found = [form for form in forms if form and form in question]
    if not found:
        return None
    stem = max(found, key=len)
    start = question.index(stem)
    end = start + len(stem)
    if lang != "zh":
        while start > 0 and question[start - 1].isalpha():
            start -= 1
        while end < len(question) and question[end].isalpha():
            end += 1
    key = question[start:end]
    return key if question[start - 1:start] == " " else f"({key})"
