"""Scorers against hand-worked cases, including the boundaries where conventions differ."""

from __future__ import annotations

import logging

import pytest

from jvlm.eval.scorers import (
    OCRBENCH_CATEGORIES,
    anls,
    charxiv_reasoning_score,
    choice_accuracy,
    circular_eval,
    circular_rotations,
    exact_match,
    extract_choice,
    gsm8k_accuracy,
    gsm8k_extract_answer,
    normalize_vqa_answer,
    ocrbench_breakdown,
    ocrbench_score,
    ocrbench_total,
    relaxed_accuracy,
    vqa_accuracy,
)

# ---------------------------------------------------------------------------- ANLS


def test_anls_ignores_case_and_extra_whitespace():
    assert anls("  1/8/93 ", ["1/8/93"]) == 1.0
    assert anls("Hello   World", ["hello world"]) == 1.0


def test_anls_exactly_at_threshold_is_kept():
    # 5 substitutions over 10 characters: similarity 1 - 5/10 = 0.5, kept as in the DocVQA code.
    assert anls("abcdeVWXYZ", ["abcdefghij"]) == pytest.approx(0.5)


def test_anls_just_below_threshold_scores_zero():
    # One more edit: similarity 0.4, read as a wrong answer rather than a misread one.
    assert anls("abcdUVWXYZ", ["abcdefghij"]) == 0.0


def test_anls_partial_credit_for_an_ocr_slip_and_best_gold_counts():
    # 'lnvoice' vs 'invoice': one substitution over 7 characters.
    assert anls("lnvoice", ["receipt", "invoice"]) == pytest.approx(6 / 7)


def test_anls_long_winded_answer_scores_zero():
    assert anls("The date mentioned in this letter is 1/8/93", ["1/8/93"]) == 0.0


def test_scorers_refuse_empty_gold_answers():
    with pytest.raises(ValueError, match="no gold answers"):
        anls("x", [])


# ------------------------------------------------------------------ relaxed accuracy


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("12%", "12", 1.0),  # unit printed separately on the chart
        ("12%", "0.12", 1.0),  # percent read as a fraction
        ("0.12", "12%", 1.0),
        ("105", "100", 1.0),  # exactly 5% off: inclusive
        ("95", "100", 1.0),
        ("105.1", "100", 0.0),  # just over 5%
        ("94.9", "100", 0.0),
        ("1,234", "1234", 1.0),
        ("$5", "5", 1.0),
        ("17.", "17", 1.0),
        ("0", "0", 1.0),
        ("0.01", "0", 0.0),  # a zero gold admits no relative slack
        ("Yes.", "yes", 1.0),
        ("North America", "America", 0.0),
    ],
)
def test_relaxed_accuracy_cases(prediction, gold, expected):
    assert relaxed_accuracy(prediction, [gold]) == expected


def test_relaxed_accuracy_tolerance_is_relative_to_gold():
    # |100 - 95.2| / 95.2 = 0.0504 > 5%, while |95.2 - 100| / 100 = 0.048 is within.
    assert relaxed_accuracy("100", ["95.2"]) == 0.0
    assert relaxed_accuracy("95.2", ["100"]) == 1.0


# ---------------------------------------------------------------------- VQA accuracy


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two dogs.", "2 dogs"),
        ("The red car", "red car"),
        ("an apple", "apple"),
        ("yes!", "yes"),
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),
        ("3.5 mph.", "3.5 mph"),  # decimal point kept, final period dropped
        ("hi-fi", "hi fi"),  # punctuation inside a word becomes a space
        ("yes - no", "yes no"),  # punctuation beside a space disappears
        ("1,000", "1000"),
        ("What?", "what"),
    ],
)
def test_vqa_normalisation(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


def test_vqa_accuracy_three_of_ten_annotators():
    # 'Two.' normalises to '2'. Leaving out one of the three '2' answers leaves 2/3;
    # leaving out any of the seven others leaves 3 matches -> 1. (3 * 2/3 + 7) / 10.
    answers = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("Two.", answers) == pytest.approx(0.9)


def test_vqa_accuracy_articles_and_punctuation_do_not_matter():
    # Two annotators said 'red car': (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    answers = ["red car", "a red car"] + ["car"] * 8
    assert vqa_accuracy("The red car.", answers) == pytest.approx(0.6)


def test_vqa_accuracy_four_agreeing_annotators_is_full_credit():
    assert vqa_accuracy("don't", ["dont"] * 4 + ["no"] * 6) == 1.0


def test_vqa_accuracy_one_annotator_is_partial_credit():
    assert vqa_accuracy("blue", ["blue"] + ["green"] * 9) == pytest.approx(0.3)


def test_vqa_accuracy_single_gold_falls_back_to_exact_match():
    assert vqa_accuracy("The cat", ["cat"]) == 1.0
    assert vqa_accuracy("dog", ["cat"]) == 0.0


# --------------------------------------------------------------------------- OCRBench


def test_ocrbench_substring_match_ignores_case():
    assert ocrbench_score("The sign says HELLO world", ["hello"], "Regular Text Recognition") == 1
    assert ocrbench_score("goodbye", ["hello"], "Regular Text Recognition") == 0


def test_ocrbench_formula_category_ignores_whitespace_only():
    gold = ["x ^ { 2 } + 1"]
    hme = "Handwritten Mathematical Expression Recognition"
    assert ocrbench_score("$x^{2}+1$", gold, hme) == 1
    assert ocrbench_score("x^{2}+1", gold, "HME100k") == 1
    # Outside the formula category spaces count, so the same answer misses.
    assert ocrbench_score("x^{2}+1", gold, "Regular Text Recognition") == 0
    # Formula letters are case-sensitive.
    assert ocrbench_score("X^{2}+1", gold, hme) == 0


def test_ocrbench_empty_gold_never_matches():
    assert ocrbench_score("anything", [""], "Doc-oriented VQA") == 0


def test_ocrbench_total_and_breakdown():
    results = []
    for category, size in OCRBENCH_CATEGORIES.items():
        right = size // 2
        results += [(category, 1)] * right + [(category, 0)] * (size - right)
    breakdown = ocrbench_breakdown(results)
    assert breakdown["Text Recognition"] == 6 * 25
    assert breakdown["Handwritten Mathematical Expression Recognition"] == 50
    assert breakdown["Final Score"] == ocrbench_total(results) == 500


def test_ocrbench_warns_when_not_on_the_full_1000(caplog):
    with caplog.at_level(logging.WARNING, logger="jvlm.eval.scorers"):
        assert ocrbench_total([("Doc-oriented VQA", 1)]) == 1
    assert "not 1000" in caplog.text


def test_ocrbench_rejects_unknown_category():
    with pytest.raises(ValueError, match="unknown OCRBench category"):
        ocrbench_total([("Poetry", 1)])


# ------------------------------------------------------------------- multiple choice

OPTIONS = ["dog", "cat", "red", "dark red"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("**C**", "C"),
        ("b) cat", "B"),
        ("B. cat", "B"),
        ("The answer is B", "B"),
        ("Answer: (c)", "C"),
        ("Option C is wrong; the answer is B.", "B"),  # the last declaration wins
        ("I think it's D.", "D"),
        ("答案是C", "C"),
        ("the cat", "B"),  # option text
        ("It is dark red.", "D"),  # 'red' is inside 'dark red', so not a second match
        ("A cat is sitting", "B"),  # "A" the article, not option A; "cat" is option B
        ("A or B", None),
        ("B/C", None),
        ("Bus", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, OPTIONS) == expected


def test_extract_choice_matches_option_text_as_whole_words():
    assert extract_choice("a category", ["cat", "dog"]) is None
    assert extract_choice("about 12 birds", ["2 birds", "12 birds"]) == "B"  # "2 birds" sits inside "12 birds"
    assert extract_choice("一只猫", ["狗", "猫"]) == "B"


def test_extract_choice_with_only_an_option_count():
    assert extract_choice("The correct option is (d)", 4) == "D"
    assert extract_choice("E", 4) is None  # not one of four options
    assert extract_choice("cat", 4) is None  # no option texts to match against


def test_choice_accuracy_accepts_letter_or_text_gold():
    assert choice_accuracy("The answer is B", "B", OPTIONS) == 1.0
    assert choice_accuracy("cat", "cat", OPTIONS) == 1.0
    assert choice_accuracy("A", "B", OPTIONS) == 0.0
    with pytest.raises(ValueError, match="neither an option letter"):
        choice_accuracy("A", "horse", OPTIONS)


def test_circular_rotations_follow_the_right_option():
    rotations = circular_rotations(["x", "y", "z", "w"], "B")
    assert [options for options, _ in rotations] == [
        ["x", "y", "z", "w"],
        ["y", "z", "w", "x"],
        ["z", "w", "x", "y"],
        ["w", "x", "y", "z"],
    ]
    for options, gold in rotations:
        assert options["ABCD".index(gold)] == "y"


def test_circular_eval_counts_a_question_only_if_every_rotation_is_right():
    results = {"q1": [True, True, True, True], "q2": [True, False, True, True], "q3": [1.0, 1.0]}
    assert circular_eval(results) == pytest.approx(2 / 3)


def test_circular_eval_defeats_a_fixed_letter_guess():
    # Always answering 'A' is right on one rotation in four: 25% plain accuracy, 0 circular.
    rotations = circular_rotations(["x", "y", "z", "w"], "A")
    hits = [choice_accuracy("A", gold, options) for options, gold in rotations]
    assert sum(hits) / len(hits) == 0.25
    assert circular_eval({"q": hits}) == 0.0
    # Naming the right option's text passes every rotation.
    assert circular_eval({"q": [choice_accuracy("x", gold, options) for options, gold in rotations]}) == 1.0


def test_circular_eval_rejects_empty_input():
    with pytest.raises(ValueError):
        circular_eval({})
    with pytest.raises(ValueError, match="no scored rotations"):
        circular_eval({"q": []})


# ------------------------------------------------------------ short-answer matching


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She sold 48 / 2 = 24 clips.\n#### 1,000", "1000"),
        ("2 + 3 = 5, so the answer is $42.00.", "42"),
        ("The temperature fell to -5 degrees.", "-5"),
        ("It costs 12.50 dollars", "12.5"),
        ("I cannot tell.", None),
    ],
)
def test_gsm8k_extract_answer(text, expected):
    assert gsm8k_extract_answer(text) == expected


def test_gsm8k_accuracy_compares_final_numbers():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert gsm8k_accuracy("In total she sold 72 clips.", gold) == 1.0
    assert gsm8k_accuracy("72 clips? No: 48 + 24 = 71.", gold) == 0.0


def test_exact_match_ignores_case_and_final_period():
    assert exact_match(" B. ", ["b"]) == 1.0
    assert exact_match("B) cat", ["B"]) == 0.0


def test_charxiv_numeric_questions_need_the_same_value():
    assert charxiv_reasoning_score("The value is 1.5e3", ["1500"], 3) == 1.0
    assert charxiv_reasoning_score("about 0.012", ["0.01"], 4) == 0.0
    assert charxiv_reasoning_score("no number here", ["3"], "number-in-general") == 0.0


def test_charxiv_text_questions_accept_any_order_of_terms():
    assert charxiv_reasoning_score("det, case", ["case, det"], 2) == 1.0
    assert charxiv_reasoning_score("case", ["case, det"], 2) == 0.0
