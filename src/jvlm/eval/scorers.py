"""Benchmark scorers: one small pure function per standard metric.

Each function reproduces the behaviour of the evaluation code the benchmark's numbers
are usually reported with (the VQA/EvalAI answer normalisation, the DocVQA ANLS, the
ChartQA relaxed accuracy, OCRBench's substring rule, MMBench's CircularEval), so a
score computed here can sit beside a published one. Where conventions differ between
toolkits the docstring says which one is followed and why.

No function here reads files, calls a model or a judge; they take strings and return
floats, so they are cheap to test and to reuse from any runner.
"""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations

logger = logging.getLogger(__name__)


def _as_list(answers: str | Sequence[str]) -> list[str]:
    """Accept one gold answer or several; refuse none, since nothing could match."""
    golds = [answers] if isinstance(answers, str) else [str(a) for a in answers]
    if not golds:
        raise ValueError("no gold answers given; a sample without answers cannot be scored")
    return golds


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _strip_end_punctuation(text: str) -> str:
    """Drop trailing punctuation ('12.' -> '12') but keep '%', which carries meaning."""
    while text and (text[-1] in string.punctuation or text[-1].isspace()) and text[-1] != "%":
        text = text[:-1]
    return text


# ---------------------------------------------------------------------------- ANLS


def _edit_distance():
    """rapidfuzz's edit distance (C++; a pure-Python one is O(n*m) per pair in the interpreter)."""
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        from jvlm.errors import BenchmarkError

        raise BenchmarkError("ANLS scoring needs rapidfuzz; install the eval extra: .venv/bin/pip install -e '.[eval]'") from None
    return Levenshtein.distance


def anls(prediction: str, answers: str | Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity for one question (DocVQA, InfoVQA).

    Both sides are lower-cased and their whitespace collapsed; the similarity to a gold
    answer is 1 - edit_distance / max(len); the best gold answer counts. A similarity
    below ``threshold`` scores 0 (the answer is taken as wrong, not as misread); exactly
    at the threshold it is kept, as in the DocVQA challenge code.
    """
    distance = _edit_distance()
    pred = _collapse(prediction)
    best = 0.0
    for answer in _as_list(answers):
        gold = _collapse(answer)
        length = max(len(gold), len(pred))
        similarity = 1.0 if length == 0 else 1.0 - distance(gold, pred) / length
        best = max(best, similarity)
    return best if best >= threshold else 0.0


# ------------------------------------------------------------------ relaxed accuracy

_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def _chart_number(text: str) -> tuple[float, bool] | None:
    """'1,234', '$12', '12%', '12.' -> (value, is_percent); None when not a plain number."""
    cleaned = _strip_end_punctuation(text.strip()).replace(",", "").replace("$", "").strip()
    is_percent = cleaned.endswith("%")
    if is_percent:
        cleaned = cleaned[:-1].strip()
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        return None
    return float(cleaned), is_percent


def _within(pred: float, gold: float, tolerance: float) -> bool:
    if gold == 0:
        return pred == 0
    return abs(pred - gold) / abs(gold) <= tolerance


def relaxed_accuracy(prediction: str, answers: str | Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA relaxed accuracy: numbers within ``tolerance`` of the gold value, else exact text.

    The tolerance is relative to the gold answer and inclusive (105 vs 100 is right at 5%).
    Commas, '$' and trailing punctuation are ignored. A percent sign is read both ways:
    '12%' matches '12' (charts often print the unit separately) and also '0.12'. The
    strict variant that always divides by 100 would mark '12%' vs '12' wrong, which is a
    formatting accident rather than a misread chart. Text answers must match exactly,
    ignoring case and surrounding whitespace.
    """
    pred_number = _chart_number(prediction)
    pred_text = _collapse(_strip_end_punctuation(prediction))
    for answer in _as_list(answers):
        gold_number = _chart_number(answer)
        if pred_number is not None and gold_number is not None:
            (pred, pred_pct), (gold, gold_pct) = pred_number, gold_number
            readings = [(pred, gold)]
            if pred_pct or gold_pct:
                readings += [(pred / 100 if pred_pct else pred, gold), (pred, gold / 100 if gold_pct else gold)]
            if any(_within(p, g, tolerance) for p, g in readings):
                return 1.0
        elif pred_text == _collapse(_strip_end_punctuation(answer)):
            return 1.0
    return 0.0


# ---------------------------------------------------------------------- VQA accuracy

# Marks that the EvalAI answer processor deletes (when next to a space) or turns into a
# space (when inside a word). Apostrophes stay: they belong to contractions.
_VQA_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", "!"]
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
# Canonical spellings; every variant with one or more apostrophes dropped maps to them
# ("dont" -> "don't", "couldnt've" -> "couldn't've"). Words whose apostrophe-free form
# is itself a word ("we'll" / "well", "it's" / "its") are deliberately absent.
_CONTRACTION_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've
hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am
mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't
she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's
someone'd someone'd've someone'll someone's something'd something'd've something'll
that's there'd there'd've there're there's they'd they'd've they'll they're they've
'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd
where's where've who'd who'd've who'll who's who've why'll why're why's won't would've
wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've
""".split()


def _contraction_table(forms: Iterable[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for form in forms:
        positions = [i for i, char in enumerate(form) if char == "'"]
        for count in range(1, len(positions) + 1):
            for dropped in combinations(positions, count):
                table["".join(c for i, c in enumerate(form) if i not in dropped)] = form
    return table


_CONTRACTIONS = _contraction_table(_CONTRACTION_FORMS)


def normalize_vqa_answer(text: str) -> str:
    """The EvalAI/VQA answer normalisation, applied alike to predictions and gold answers.

    Lower-case; drop commas and '?'; split off possessive 's; remove or space out
    punctuation; drop periods that are not decimal points; map number words to digits;
    drop articles; restore apostrophes in contractions.
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    original = text
    for mark in _VQA_PUNCTUATION:
        # Decided on the text before any replacement, as the reference processor does.
        touches_space = (mark + " ") in original or (" " + mark) in original
        text = text.replace(mark, "" if touches_space else " ")
    text = _PERIOD_NOT_DECIMAL.sub("", text)
    words = [_NUMBER_WORDS.get(word, word) for word in text.split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Standard VQA accuracy: min(#annotators agreeing / 3, 1), averaged over leave-one-out.

    With the usual ten human answers this averages the score over the ten subsets of
    nine, so agreeing with 3 annotators gives 0.9 and with 4 or more gives 1.0. With a
    single gold answer the formula is degenerate (always 0); exact match after
    normalisation is used instead.
    """
    golds = [normalize_vqa_answer(a) for a in _as_list(answers)]
    pred = normalize_vqa_answer(prediction)
    if len(golds) == 1:
        return float(pred == golds[0])
    matches = sum(gold == pred for gold in golds)
    per_subset = [min(1.0, (matches - (gold == pred)) / 3) for gold in golds]
    return sum(per_subset) / len(per_subset)


# --------------------------------------------------------------------------- OCRBench

#: OCRBench's ten question types and how many of its 1000 questions each holds.
OCRBENCH_CATEGORIES: dict[str, int] = {
    "Regular Text Recognition": 50,
    "Irregular Text Recognition": 50,
    "Artistic Text Recognition": 50,
    "Handwriting Recognition": 50,
    "Digit String Recognition": 50,
    "Non-Semantic Text Recognition": 50,
    "Scene Text-centric VQA": 200,
    "Doc-oriented VQA": 200,
    "Key Information Extraction": 200,
    "Handwritten Mathematical Expression Recognition": 100,
}
_OCRBENCH_RECOGNITION = list(OCRBENCH_CATEGORIES)[:6]
# The formula category is named by its type or by its source data set (HME100k).
_OCRBENCH_FORMULA = {"Handwritten Mathematical Expression Recognition", "HME100k"}


def ocrbench_score(prediction: str, answers: str | Sequence[str], category: str) -> int:
    """OCRBench: 1 if any gold answer occurs inside the prediction, else 0.

    Matching ignores case and turns newlines into spaces. Handwritten formulas are
    compared case-sensitively with all whitespace removed, since LaTeX spacing is
    arbitrary but letter case is not. Empty gold answers never match (they would
    otherwise be found in every prediction).
    """
    if category in _OCRBENCH_FORMULA:
        pred = re.sub(r"\s+", "", prediction)
        golds = [re.sub(r"\s+", "", a) for a in _as_list(answers)]
    else:
        pred = prediction.lower().strip().replace("\n", " ")
        golds = [a.lower().strip().replace("\n", " ") for a in _as_list(answers)]
    return int(any(gold and gold in pred for gold in golds))


def ocrbench_breakdown(results: Iterable[tuple[str, float]]) -> dict[str, int]:
    """Points per OCRBench category, plus 'Text Recognition' (the six recognition types)
    and 'Final Score' (out of 1000), from ``(category, score)`` pairs."""
    points = dict.fromkeys(OCRBENCH_CATEGORIES, 0)
    count = 0
    for category, score in results:
        if category not in points:
            raise ValueError(f"unknown OCRBench category {category!r}; expected one of {list(points)}")
        points[category] += int(score)
        count += 1
    if count != sum(OCRBENCH_CATEGORIES.values()):
        logger.warning("OCRBench scored on %d questions, not 1000: the total is not comparable", count)
    points["Text Recognition"] = sum(points[c] for c in _OCRBENCH_RECOGNITION)
    points["Final Score"] = sum(points[c] for c in OCRBENCH_CATEGORIES)
    return points


def ocrbench_total(results: Iterable[tuple[str, float]]) -> int:
    """OCRBench's headline number: questions answered right, out of 1000."""
    return ocrbench_breakdown(results)["Final Score"]


# ------------------------------------------------------------------- multiple choice

_DECLARATION = re.compile(r"(?i:\b(?:answer|option|choice)\b(?:\s+is)?|答案(?:是|为)?)\s*[:：=]?\s*")
_STANDALONE_CAPITAL = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])")


def _letters(choices: Sequence[str] | int) -> list[str]:
    count = choices if isinstance(choices, int) else len(choices)
    if not 1 <= count <= 26:
        raise ValueError(f"a multiple-choice question needs 1-26 options, got {count}")
    return [chr(ord("A") + i) for i in range(count)]


_AFTER_LABEL_WORDS = {"or", "and", "is", "was", "seems", "looks", "appears", "because", "since", "vs"}


def _is_article(text: str, end: int) -> bool:
    """'A' followed by a lower-case word reads as the article ('A dog ...'), not option A;
    but 'A or B' and 'A is correct' still name the option."""
    if text[end - 1] != "A":
        return False
    following = re.match(r"\s+([a-z]+)", text[end:])
    return following is not None and following.group(1) not in _AFTER_LABEL_WORDS


def _leading_label(text: str, letters: list[str]) -> str | None:
    """An option label at the start of ``text``: 'B', '(B)', 'B.', '**B**', 'b)', 'B: ...'."""
    match = re.match(r"[\s*\"'`]*[(\[]?\s*([A-Za-z])(\s*[)\]])?([.:：]?)", text)
    if match is None:
        return None
    letter, rest = match.group(1), text[match.end() :]
    if rest[:1].isalnum():  # 'Bus', 'B2'
        return None
    if re.match(r"\s*(?:or|and|/|&|,)\s*[(\[]?[A-Za-z](?![A-Za-z])", rest):
        return None  # 'A or B' names two options
    labelled = bool(match.group(2) or match.group(3))  # 'B)', '(B)', 'B.', 'B:'
    if letter.islower() and not (labelled or not rest.strip(" *.!\"'`\n")):
        return None  # a lone 'a' inside prose is a word, not a label
    if not labelled and _is_article(text, match.end(1)):
        return None
    return letter.upper() if letter.upper() in letters else None


def _mentions(text: str, option: str) -> bool:
    """``option`` occurs in ``text`` as whole words ('cat' is not in 'category'); scripts
    without spaces between words (Chinese) are matched as plain substrings."""

    def edge(char: str) -> bool:
        return char.isascii() and char.isalnum()

    before = r"(?<![A-Za-z0-9])" if edge(option[0]) else ""
    after = r"(?![A-Za-z0-9])" if edge(option[-1]) else ""
    return re.search(before + re.escape(option) + after, text) is not None


def extract_choice(text: str, choices: Sequence[str] | int) -> str | None:
    """Read which option a free-form answer picks; None when it cannot be told.

    ``choices`` is the list of option texts (in A, B, C ... order) or just their number.
    Tried in order: an explicit declaration ('The answer is B', 'Answer: (c)'), a label
    at the start ('B', '(B)', 'B. cat'), a single option letter standing alone in the
    text, and finally the text of exactly one option. Ambiguous answers ('A or B')
    give None rather than a guess.
    """
    letters = _letters(choices)
    text = text.strip()
    if not text:
        return None
    declared = None
    for match in _DECLARATION.finditer(text):
        declared = _leading_label(text[match.end() :], letters) or declared
    if declared:
        return declared
    leading = _leading_label(text, letters)
    if leading:
        return leading
    standalone = {
        m.group(1)
        for m in _STANDALONE_CAPITAL.finditer(text)
        if m.group(1) in letters and not _is_article(text, m.end())
    }
    if len(standalone) == 1:
        return standalone.pop()
    if isinstance(choices, int) or standalone:
        return None
    options = [_collapse(_strip_end_punctuation(str(option))) for option in choices]
    answer = _collapse(_strip_end_punctuation(text))
    if answer in options:
        return letters[options.index(answer)]
    if len(answer) > 2 * sum(len(option) for option in options):
        return None  # a long explanation mentions options it rejects
    found = [i for i, option in enumerate(options) if option and _mentions(answer, option)]
    # 'dark red' also contains 'red': keep only options not inside another found option.
    found = [i for i in found if not any(i != j and options[i] in options[j] for j in found)]
    return letters[found[0]] if len(found) == 1 else None


def _gold_letter(answer: str, choices: Sequence[str] | int) -> str:
    letters = _letters(choices)
    if answer.strip().upper() in letters and len(answer.strip()) == 1:
        return answer.strip().upper()
    if not isinstance(choices, int):
        options = [_collapse(str(option)) for option in choices]
        if _collapse(answer) in options:
            return letters[options.index(_collapse(answer))]
    raise ValueError(f"gold answer {answer!r} is neither an option letter in {letters} nor an option's text")


def choice_accuracy(prediction: str, answer: str, choices: Sequence[str] | int) -> float:
    """1.0 when the option read from ``prediction`` is the gold one (a letter or option text)."""
    return float(extract_choice(prediction, choices) == _gold_letter(answer, choices))


def circular_rotations(choices: Sequence[str], answer: str) -> list[tuple[list[str], str]]:
    """MMBench CircularEval passes: the options shifted by 0..n-1 places, with the gold
    letter that follows the right option. ['x','y','z'], 'A' -> (xyz, A), (yzx, C), (zxy, B)."""
    letters = _letters(choices)
    gold_index = letters.index(_gold_letter(answer, choices))
    count = len(letters)
    return [
        (list(choices[shift:]) + list(choices[:shift]), letters[(gold_index - shift) % count]) for shift in range(count)
    ]


def circular_eval(results_by_question: Mapping[Hashable, Sequence[bool | float]]) -> float:
    """MMBench CircularEval: a question counts only if every rotation was answered right."""
    if not results_by_question:
        raise ValueError("no questions to score")
    passed = 0
    for question, rotations in results_by_question.items():
        if not rotations:
            raise ValueError(f"question {question!r} has no scored rotations")
        passed += all(bool(r) for r in rotations)
    return passed / len(results_by_question)


# ------------------------------------------------------------ short-answer matching

_ANSWER_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _canonical_number(raw: str) -> str:
    number = raw.replace(",", "").replace("$", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def gsm8k_extract_answer(text: str) -> str | None:
    """The final number of a GSM8K solution: the one after '####' if present, else the last
    number in the text; commas, '$' and trailing zero decimals dropped ('1,000.0' -> '1000')."""
    if "####" in text:
        numbers = _ANSWER_NUMBER.findall(text.rsplit("####", 1)[1])
        return _canonical_number(numbers[0]) if numbers else None
    numbers = _ANSWER_NUMBER.findall(text)
    return _canonical_number(numbers[-1]) if numbers else None


def gsm8k_accuracy(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when the prediction's final number equals the gold final number."""
    pred = gsm8k_extract_answer(prediction)
    golds = {gsm8k_extract_answer(a) for a in _as_list(answers)}
    return float(pred is not None and pred in golds)


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """Case-insensitive match after trimming whitespace and a trailing period ('B.' == 'b')."""
    pred = _collapse(prediction).rstrip(".")
    return float(any(pred == _collapse(a).rstrip(".") for a in _as_list(answers)))


_CHARXIV_NUMERIC = {3, 4, "number-in-chart", "number-in-general"}


def charxiv_reasoning_score(prediction: str, answers: str | Sequence[str], category: int | str) -> float:
    """Judge-free approximation of CharXiv's reasoning grading.

    The official grader is an LLM following per-category rules; this applies the same
    rules literally: numeric questions (categories 3, 4) need the same value in any
    notation ('1.5e3' == '1500'); text questions need the same terms, in any order when
    several are asked for. It is stricter than the judge on paraphrases.
    """
    golds = _as_list(answers)
    if category in _CHARXIV_NUMERIC:
        found = re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", prediction)
        if not found:
            return 0.0
        pred = float(found[-1].replace(",", ""))
        for gold in golds:
            parsed = _chart_number(gold)
            if parsed is not None and math.isclose(pred, parsed[0], rel_tol=1e-9, abs_tol=1e-12):
                return 1.0
        return 0.0

    def terms(text: str) -> frozenset[str]:
        return frozenset(_collapse(_strip_end_punctuation(t)) for t in text.split(","))

    return float(any(terms(prediction) == terms(gold) for gold in golds))


#: Scorer functions by the names used in ``jvlm.eval.loaders.BENCHMARKS``.
SCORERS = {
    "anls": anls,
    "relaxed_accuracy": relaxed_accuracy,
    "vqa_accuracy": vqa_accuracy,
    "ocrbench_score": ocrbench_score,
    "choice_accuracy": choice_accuracy,
    "exact_match": exact_match,
    "gsm8k_accuracy": gsm8k_accuracy,
    "charxiv_reasoning_score": charxiv_reasoning_score,
}
