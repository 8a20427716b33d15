"""Synthetic data generator: determinism, coverage, held-out splits, shaping, JSONL output."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from jvlm_demo import fonts
from jvlm_demo import synth_lexicon as lex
from jvlm_demo.demo import DOCUMENT_TASKS
from jvlm_demo.synth_core import Painter
from jvlm_demo.synth_phrases import ANSWERS, LABELS
from jvlm_demo.synthetic import IMAGE_TASKS, TASKS, generate, main, write_jsonl
from jvlm.inference.reasoning import split_reasoning
from jvlm_demo.fonts import MissingFontError


def _fonts_missing_reason() -> str | None:
    try:
        fonts.check_fonts(lex.LANGUAGES)
    except MissingFontError as exc:
        return f"fonts for the synthetic data are not installed (run scripts/install_fonts.sh): {exc}"
    return None


needs_fonts = pytest.mark.skipif(_fonts_missing_reason() is not None, reason=str(_fonts_missing_reason()))

ALL_PAIRS = len(TASKS) * len(lex.LANGUAGES)  # one block of the balanced order covers every pair
SMALL = 160  # image side for tests that do not look at pixels closely


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _fingerprint(sample) -> tuple:
    return (sample.task, sample.language, sample.question, sample.answer,
            tuple(hashlib.sha256(_png(im)).hexdigest() for im in sample.images))


@needs_fonts
def test_same_seed_gives_identical_pngs_and_text():
    first = list(generate(ALL_PAIRS, seed=7, image_size=SMALL))
    second = list(generate(ALL_PAIRS, seed=7, image_size=SMALL))
    assert [(s.id, s.question, s.answer, s.task, s.language) for s in first] == \
        [(s.id, s.question, s.answer, s.task, s.language) for s in second]
    assert [[_png(im) for im in s.images] for s in first] == [[_png(im) for im in s.images] for s in second]
    other = list(generate(ALL_PAIRS, seed=8, image_size=SMALL))
    assert [_fingerprint(s) for s in other] != [_fingerprint(s) for s in first]


@needs_fonts
def test_every_task_and_language_yields_valid_samples():
    samples = list(generate(ALL_PAIRS, seed=0, image_size=SMALL))
    assert {(s.task, s.language) for s in samples} == {(t, lang) for t in TASKS for lang in lex.LANGUAGES}
    for s in samples:
        assert s.question.strip() and s.answer.strip(), s
        assert "{" not in s.question and "}" not in s.question, f"unfilled template slot: {s.question}"
        if s.task in IMAGE_TASKS:
            assert len(s.images) == 1 and s.images[0].size == (SMALL, SMALL) and s.images[0].mode == "RGB"
            # an image a model must read is not blank
            assert np.asarray(s.images[0]).std() > 5, f"{s.task}/{s.language} rendered a flat image"
        else:
            assert s.images == []


SCRIPT_CHECKS = {
    "zh": lambda t: any("\u4e00" <= c <= "\u9fff" for c in t),
    "ar": lambda t: any("\u0600" <= c <= "\u06ff" for c in t),
    "ru": lambda t: any("\u0400" <= c <= "\u04ff" for c in t),
}


def test_questions_are_written_in_the_sample_language():
    for s in generate(2 * len(lex.LANGUAGES) * 3, seed=3, tasks=["arithmetic", "translation", "facts"]):
        if s.language in SCRIPT_CHECKS:
            assert SCRIPT_CHECKS[s.language](s.question), f"{s.language} question in another script: {s.question}"


@needs_fonts
def test_closed_answer_vocabularies_for_scene_tasks():
    """Shape and sign answers come from the sample language's small vocabulary."""
    for s in generate(120, seed=5, tasks=["shapes", "sign"], image_size=SMALL):
        lang = s.language
        colours = {lex.colour_name(c, lang) for c in lex.COLOURS}
        if s.task == "shapes":
            allowed = {str(i) for i in range(10)} | colours | {v["name"][lang] for v in lex.SHAPES.values()}
            allowed |= {ANSWERS[k][lang][0] for k in ("left", "right", "top", "bottom")}
        else:
            allowed = colours | {row[lang] for row in lex.SIGNS.values()}
        assert s.answer in allowed, f"{s.task}/{lang}: {s.answer!r} is outside the closed vocabulary"


def test_held_out_splits_never_repeat_a_train_sample():
    """Small text-only spaces repeat across seeds of one split, but never across splits."""
    text_tasks = ["arithmetic", "translation", "facts"]
    train = {_fingerprint(s) for s in generate(900, seed=0, split="train", tasks=text_tasks)}
    train_again = {_fingerprint(s) for s in generate(900, seed=1, split="train", tasks=text_tasks)}
    assert train & train_again, "expected repeats within one split, else this test proves nothing"
    for split in ("val", "test"):
        held_out = {_fingerprint(s) for s in generate(300, seed=0, split=split, tasks=text_tasks)}
        assert not held_out & train and not held_out & train_again
    val = {_fingerprint(s) for s in generate(300, seed=0, split="val", tasks=text_tasks)}
    test = {_fingerprint(s) for s in generate(300, seed=0, split="test", tasks=text_tasks)}
    assert not val & test


@needs_fonts
def test_held_out_image_samples_differ_from_train():
    train = {_fingerprint(s) for s in generate(ALL_PAIRS, seed=0, split="train", tasks=IMAGE_TASKS, image_size=128)}
    test = {_fingerprint(s) for s in generate(ALL_PAIRS, seed=0, split="test", tasks=IMAGE_TASKS, image_size=128)}
    assert not train & test


@needs_fonts
def test_arabic_is_shaped_and_right_to_left():
    # Shaped: joined letters differ from the isolated forms that an unshaped layout draws.
    word = "سوق المدينة"
    size = 40
    painter = Painter((400, 100), (255, 255, 255))
    painter.text((390, 50), word, "ar", size, (0, 0, 0), anchor="rm")
    path = fonts.find_font("arabic")
    basic = Image.new("RGB", (400, 100), (255, 255, 255))
    ImageDraw.Draw(basic).text((390, 50), word, font=ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC),
                               fill=(0, 0, 0), anchor="rm")
    assert _png(painter.image) != _png(basic)
    # Joining narrows a word: medial forms are narrower than the isolated ones.
    assert painter.text_width("بببب", "ar", size) < fonts.load_font("ar", size).getlength("ب") * 4 * 0.9

    # Right to left: the first letter in reading order (tall alef) sits on the right.
    rtl = Painter((300, 120), (255, 255, 255))
    rtl.text((150, 60), "ا     ب", "ar", 60, (0, 0, 0), anchor="mm")
    ink = np.asarray(rtl.image.convert("L")) < 128
    rows = lambda half: np.nonzero(half.any(axis=1))[0]
    left_top, right_top = rows(ink[:, :150]).min(), rows(ink[:, 150:]).min()
    assert right_top < left_top, "alef (taller, first in reading order) should be drawn on the right"


@needs_fonts
def test_every_drawn_word_has_glyphs_in_its_font():
    """Catches a word whose characters the chosen font cannot draw (it would show as boxes)."""
    for lang in lex.LANGUAGES:
        font = fonts.load_font(lang, 20)
        texts = [v[lang][0] for v in LABELS.values()]
        texts += [v["name"][lang] for v in lex.COLOURS.values()] + [row[lang] for row in lex.ITEMS.values()]
        texts += [row[lang] for row in lex.SIGNS.values()] + [row[lang] for row in lex.WEEKDAYS_SHORT]
        texts += [row[lang] for row in lex.MONTHS_SHORT] + lex.CITIES[lang] + lex.STORES[lang]
        texts += [lex.full_name(lang, first, last) for first in lex.FIRST_NAMES[lang] for last in lex.LAST_NAMES[lang][:1]]
        texts += [lex.format_date(2024, 3, 15, lang), lex.format_price(1234, lang), "555-0142:"]
        missing = {t: fonts.missing_glyphs(font, t) for t in texts}
        assert not {t: m for t, m in missing.items() if m}, f"{lang}: characters without glyphs"


@needs_fonts
def test_write_jsonl_rows_match_messages_format_and_images_resolve(tmp_path):
    samples = list(generate(ALL_PAIRS, seed=2, image_size=SMALL))
    path = write_jsonl(samples, tmp_path / "out")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(samples)
    text_only = 0
    for row, sample in zip(rows, samples):
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"] == [{"type": "text", "text": sample.answer}]
        assert user["content"][-1] == {"type": "text", "text": sample.question}
        images = [part["image"] for part in user["content"] if part["type"] == "image"]
        assert len(images) == len(sample.images)
        assert (row["task"], row["language"]) == (sample.task, sample.language)
        for rel in images:
            assert not rel.startswith("/")
            with Image.open(path.parent / rel) as im:
                assert im.size == (SMALL, SMALL)
        text_only += not images
    assert text_only == 3 * len(lex.LANGUAGES)  # arithmetic, translation, facts in every language


@needs_fonts
def test_cli_writes_the_same_data_as_the_api(tmp_path):
    assert main(["--out", str(tmp_path / "cli"), "--n", "12", "--seed", "4", "--split", "val",
                 "--image-size", str(SMALL)]) == 0
    api = write_jsonl(generate(12, seed=4, split="val", image_size=SMALL), tmp_path / "api")
    assert (tmp_path / "cli" / "data.jsonl").read_bytes() == api.read_bytes()
    for png in sorted((tmp_path / "api" / "images").iterdir()):
        assert (tmp_path / "cli" / "images" / png.name).read_bytes() == png.read_bytes()


@needs_fonts
def test_image_size_is_a_parameter():
    (sample,) = generate(1, seed=0, tasks=["bar_chart"], image_size=(512, 640))
    assert sample.images[0].size == (512, 640)
    with pytest.raises(ValueError, match="image_size"):
        next(generate(1, seed=0, image_size=10))


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="split"):
        next(generate(1, seed=0, split="dev"))
    with pytest.raises(ValueError, match="receipt"):
        next(generate(1, seed=0, tasks=["poems"]))
    with pytest.raises(ValueError, match="languages"):
        next(generate(1, seed=0, languages=["xx"]))


def test_missing_font_error_names_the_apt_package(monkeypatch):
    monkeypatch.setitem(fonts.FONT_CHOICES, "han", fonts.FontChoice(
        family="No Such Family", regular=("/nonexistent/font.ttc",), bold=(), package="fonts-wqy-microhei"))
    fonts.find_font.cache_clear()
    try:
        with pytest.raises(MissingFontError, match="fonts-wqy-microhei"):
            fonts.find_font("han")
        with pytest.raises(MissingFontError, match="install_fonts.sh"):
            fonts.check_fonts(["en", "zh"])
    finally:
        fonts.find_font.cache_clear()


@needs_fonts
def test_several_questions_per_image_are_about_that_image_and_stay_in_split():
    """Follow-up turns reuse the first turn's image, have distinct answers, and obey the split."""
    from jvlm_demo.synth_core import Draft
    from jvlm_demo.synthetic import SPLIT_BUCKETS, TASK_FAMILIES, content_bucket

    samples = list(generate(ALL_PAIRS, seed=3, split="train", image_size=SMALL, questions=4))
    assert any(len(s.more) == 3 for s in samples), "expected full conversations for most families"
    low, high = SPLIT_BUCKETS["train"]
    for s in samples:
        answers = [s.answer] + [a for _, a in s.more]
        assert len(set(answers)) == len(answers), f"{s.task}: repeated answer in one conversation {answers}"
    # Each follow-up is about the same image (the image does not depend on how many
    # questions are drawn), and its bucket is a train bucket.
    first = next(s for s in samples if s.task == "bar_chart" and s.more)
    again = next(generate(1, seed=3, split="train", tasks=["bar_chart"], languages=[first.language],
                          image_size=SMALL, questions=4))
    assert _png(again.images[0]) == _png(next(generate(1, seed=3, split="train", tasks=["bar_chart"],
                                                        languages=[first.language], image_size=SMALL)).images[0])
    for q, a in first.more:
        assert low <= content_bucket("bar_chart", first.language, Draft(q, a, first.spec)) < high
    assert TASK_FAMILIES["bar_chart"].ask is not None and TASK_FAMILIES["arithmetic"].ask is None


@needs_fonts
def test_multi_turn_rows_alternate_user_and_assistant(tmp_path):
    samples = list(generate(12, seed=4, split="train", tasks=["receipt", "arithmetic"], image_size=SMALL, questions=3))
    path = write_jsonl(samples, tmp_path)
    for sample, line in zip(samples, path.read_text(encoding="utf-8").splitlines()):
        messages = json.loads(line)["messages"]
        assert len(messages) == 2 * (1 + len(sample.more))
        assert [m["role"] for m in messages] == ["user", "assistant"] * (1 + len(sample.more))
        images = [p for m in messages for p in m["content"] if p["type"] == "image"]
        assert len(images) == (1 if sample.task == "receipt" else 0), "the image is given once, in the first turn"
        assert [m["content"][-1]["text"] for m in messages[1::2]] == [sample.answer] + [a for _, a in sample.more]


def test_questions_argument_is_checked():
    with pytest.raises(ValueError, match="questions"):
        next(generate(1, seed=0, questions=0))



def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@needs_fonts
@pytest.mark.parametrize("task", DOCUMENT_TASKS + ("sign",))
def test_printed_text_stays_on_the_canvas_and_apart_at_the_demo_size(task):
    # The demo model reads 224 px images: text cut by the edge or printed over other
    # text would make some answers unreadable, whatever the model.
    for sample in generate(60, 5, "train", [task], image_size=224):
        image = sample.images[0]
        boxes = [run.box for run in image.info["text_runs"]]
        assert boxes, f"{sample.id}: no text was drawn"
        for left, top, right, bottom in boxes:
            assert left >= 0 and top >= 0 and right <= image.width and bottom <= image.height, sample.id
        for i, a in enumerate(boxes):
            assert not any(_overlaps(a, b) for b in boxes[i + 1:]), f"{sample.id}: text boxes overlap"


@needs_fonts
def test_numbers_in_documents_are_printed_large_enough_to_read_at_224_px():
    # Digits are the answers of most document questions; at the demo's 224 px crop with
    # 14 px patches they are printed at least 12 px high (format v3; v2 printed 8-10 px).
    # A chart's axis may print the same number small as well: the largest print counts.
    sizes = {}
    for task in DOCUMENT_TASKS:
        for sample in generate(60, 6, "train", [task], image_size=224):
            printed = [run.size for run in sample.images[0].info["text_runs"] if run.text == sample.answer]
            if printed and any(ch.isdigit() for ch in sample.answer):
                sizes.setdefault(task, []).append(max(printed))
    assert set(sizes) == set(DOCUMENT_TASKS), f"no numeric answer found printed for {set(DOCUMENT_TASKS) - set(sizes)}"
    assert all(min(v) >= 12 for v in sizes.values()), {task: min(v) for task, v in sizes.items()}


@needs_fonts
def test_transcription_reads_a_receipt_line_by_line_in_page_order():
    from jvlm_demo.synthetic import TRANSCRIBE_PROMPTS, transcription

    for lang in ("en", "ar"):
        sample = next(generate(1, 3, "test", ["receipt"], [lang], image_size=224))
        read = transcription(sample)
        assert read.question == TRANSCRIBE_PROMPTS[lang] and read.more == [] and read.images == sample.images
        lines = read.answer.split("\n")
        assert lines[0] == sample.spec["store"]
        items = [f"{lex.ITEMS[key][lang]} {lex.format_price(cents, lang)}" for key, cents in sample.spec["items"]]
        # an item's name and price share one line, in reading order (the name first in both scripts)
        assert lines[2:2 + len(items)] == items
        assert lines[-1].endswith(lex.format_price(sum(c for _, c in sample.spec["items"]), lang))


@needs_fonts
def test_transcription_skips_axis_ticks_and_keeps_chart_values():
    from jvlm_demo.synthetic import transcription

    for sample in generate(6, 4, "train", ["bar_chart"], ["en"], image_size=224):
        words = transcription(sample).answer.split()
        assert sorted(int(w) for w in words if w.isdigit()) == sorted(sample.spec["values"])
        assert all(lex.ITEMS[key]["en"] in transcription(sample).answer for key in sample.spec["items"])


def test_transcription_needs_a_rendered_image():
    from jvlm_demo.synthetic import transcription

    sample = next(generate(1, 0, "train", ["arithmetic"], ["en"]))
    with pytest.raises(ValueError, match="transcription needs an image"):
        transcription(sample)


@needs_fonts
def test_key_values_pair_every_label_with_the_value_questions_about_it_expect():
    """Each key-value line must agree with the image's own question: a line that paired a
    label with a neighbour's value would teach the wrong lookup."""
    from jvlm_demo.synthetic import KEY_VALUE_PROMPTS, KEY_VALUE_TASKS, key_values

    checked = 0
    for task in KEY_VALUE_TASKS:
        for sample in generate(24, 7, "train", [task], ["en", "zh", "ar"], image_size=224):
            kv = key_values(sample)
            assert kv.question == KEY_VALUE_PROMPTS[sample.language] and kv.images == sample.images
            pairs = dict(line.rsplit(": ", 1) for line in kv.answer.split("\n"))
            assert len(pairs) == len(kv.answer.split("\n"))  # labels are distinct
            named = [label for label in pairs if all(part in sample.question for part in label.split(", "))]
            if sample.answer.isdigit() and named:
                assert [pairs[label] for label in named] == [sample.answer]
                checked += 1
            else:  # "which is largest/smallest": the answer is the label of an extreme value
                values = {label: int(v) for label, v in pairs.items()}
                assert sample.answer in (max(values, key=values.get), min(values, key=values.get))
                checked += 1
    assert checked == 72


def test_key_values_refuse_families_without_a_grid():
    from jvlm_demo.synthetic import key_values

    sample = next(generate(1, 0, "train", ["sign"], ["en"], image_size=224))
    with pytest.raises(ValueError, match="key-value answers exist for"):
        key_values(sample)


@needs_fonts
def test_read_then_answer_scores_as_the_plain_answer():
    """Chart and table answers carry a reading block first; the evaluation runner must score
    the answer after it, or a model trained this way would be marked wrong when right."""
    from jvlm_demo.synthetic import key_values, read_then_answer
    from jvlm.eval.runner import clean_prediction

    for task in ("bar_chart", "table", "sign", "arithmetic"):
        sample = next(generate(1, 2, "train", [task], ["ar"], image_size=224, questions=3))
        thought = read_then_answer(sample)
        assert clean_prediction(thought.answer) == sample.answer
        assert thought.more == sample.more  # follow-ups answer directly: the reading is in the context
        if task in ("bar_chart", "table"):
            assert thought.answer.startswith("<think>\n" + key_values(sample).answer + "\n</think>\n")
        else:
            assert thought == sample


def test_readout_scores_labels_and_values_line_by_line():
    from jvlm_demo.demo import score_readout

    gold = "rice, Tue: 77\nrice, Wed: 91\nmilk, Tue: 84"
    assert score_readout(gold, gold) == (3, 3, 3)
    # a wrong label keeps its right value; a missing line loses both; extra lines cost nothing
    assert score_readout(gold, "bread, Tue: 77\nrice, Wed: 19") == (3, 1, 1)
    assert score_readout(gold, gold + "\nmilk, Wed: 13") == (3, 3, 3)


def test_demo_data_refuses_an_unknown_set(tmp_path):
    from jvlm_demo.demo import write_data

    with pytest.raises(ValueError, match="unknown data sets"):
        write_data(tmp_path, only=["stage99"])
    assert not any(tmp_path.iterdir())


@needs_fonts
def test_compared_reading_ends_one_step_from_the_answer():
    """With compare=True the block's last line holds the answer: the asked line repeated, or
    the running best of a largest/smallest question, which must be the true extreme."""
    from jvlm_demo.synthetic import read_then_answer
    from jvlm.eval.runner import clean_prediction

    kinds = set()
    for sample in generate(60, 9, "train", ["bar_chart", "line_chart", "table"], image_size=224):
        text = read_then_answer(sample, compare=True).answer
        assert clean_prediction(text) == sample.answer
        lines = split_reasoning(text)[0].split("\n")
        if sample.answer.isdigit():
            assert lines[-1].endswith(f": {sample.answer}") and lines[-1] in lines[:-1]
            kinds.add("value")
        else:
            values = [int(line.split(" | ")[0].rsplit(": ", 1)[1]) for line in lines]
            label, value = lines[-1].split(" | ")[1].rsplit(" ", 1)
            assert label == sample.answer and int(value) in (max(values), min(values))
            kinds.add("extreme")
    assert kinds == {"value", "extreme"}


def test_value_reading_can_stop_at_the_asked_line():
    """With stop_at_asked the reading of a value question is the full reading cut right after
    the asked line (image order kept, nothing repeated), so its last value is the answer;
    largest/smallest readings are the same as without it."""
    from jvlm_demo.synthetic import key_values, read_then_answer
    from jvlm.eval.runner import clean_prediction

    cut_short = 0
    for sample in generate(60, 10, "train", ["bar_chart", "line_chart", "table"], image_size=224):
        text = read_then_answer(sample, compare=True, stop_at_asked=True).answer
        assert clean_prediction(text) == sample.answer
        if not sample.answer.isdigit():
            assert text == read_then_answer(sample, compare=True).answer
            continue
        lines = split_reasoning(text)[0].split("\n")
        full = key_values(sample).answer.split("\n")
        assert lines == full[:len(lines)] and len(set(lines)) == len(lines)
        label = lines[-1].rsplit(": ", 1)[0]
        assert lines[-1].endswith(f": {sample.answer}") and all(part in sample.question for part in label.split(", "))
        cut_short += len(lines) < len(full)
    assert cut_short, "some asked lines are not the last of the chart or table"


@needs_fonts
def test_reading_can_state_its_goal_first():
    """With state_goal the reading opens with one goal line and is otherwise unchanged: the
    label a value reading stops at, exactly as that line starts, or which way the best so far
    of a largest/smallest reading goes, true to the data."""
    from jvlm_demo.synthetic import GOAL_LARGEST, GOAL_MARK, GOAL_SMALLEST, read_then_answer
    from jvlm.eval.runner import clean_prediction

    goals = set()
    for sample in generate(60, 11, "train", ["bar_chart", "line_chart", "table"], image_size=224):
        text = read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True).answer
        plain = read_then_answer(sample, compare=True, stop_at_asked=True).answer
        assert clean_prediction(text) == sample.answer
        first, rest = text.removeprefix("<think>\n").split("\n", 1)
        assert "<think>\n" + rest == plain and first.startswith(GOAL_MARK)
        goal = first.removeprefix(GOAL_MARK)
        lines = rest.split("</think>")[0].strip().split("\n")
        if sample.answer.isdigit():
            assert lines[-1] == f"{goal}: {sample.answer}"
            assert all(not line.startswith(goal + ":") for line in lines[:-1])
            goals.add("label")
        else:
            values = [int(line.split(" | ")[0].rsplit(": ", 1)[1]) for line in lines]
            assert goal == (GOAL_LARGEST if int(lines[-1].rsplit(" ", 1)[1]) == max(values) else GOAL_SMALLEST)
            goals.add(goal)
    assert goals == {"label", GOAL_LARGEST, GOAL_SMALLEST}


def _demo_tokens():
    """The shipped demo tokenizer as text -> token ids (no special tokens): what the model
    sees of a reading."""
    from tokenizers import Tokenizer

    from shipped import DEMO_DIR

    tokenizer = Tokenizer.from_file(str(DEMO_DIR / "tokenizer.json"))
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


@needs_fonts
def test_aligned_reading_writes_labels_as_their_lines_start():
    """With aligned, a label in the goal or in a carried best follows "(", so the tokenizer
    cuts it into exactly the tokens its own line starts with (the stop and the carry then
    compare equal tokens), and each carry shows a comparison that is true of the numbers it
    names; the lines read and the answer are those of the unaligned reading."""
    from jvlm_demo.synthetic import GOAL_LARGEST, GOAL_MARK, GOAL_SMALLEST, read_then_answer
    from jvlm.eval.runner import clean_prediction
    tokens = _demo_tokens()
    style = dict(compare=True, stop_at_asked=True, state_goal=True)
    kinds = set()
    for sample in generate(60, 15, "train", ["bar_chart", "line_chart", "table"], image_size=224, questions=1):
        text = read_then_answer(sample, **style, aligned=True).answer
        plain = read_then_answer(sample, **style).answer
        assert clean_prediction(text) == sample.answer
        first, *lines = split_reasoning(text)[0].split("\n")
        plain_lines = split_reasoning(plain)[0].split("\n")[1:]
        goal = first.removeprefix(GOAL_MARK)
        if sample.answer.isdigit():
            assert lines == plain_lines and goal.startswith("(") and goal.endswith(")")
            label = goal[1:-1]
            assert lines[-1] == f"{label}: {sample.answer}"
            # the goal's label tokens are the last line's first tokens
            assert tokens(f"{GOAL_MARK}(")[:2] == tokens(first)[:2]
            assert tokens(lines[-1])[:len(tokens(label))] == tokens(label)
            assert tokens(label) == tokens(f"({label}")[1:]
            kinds.add("value")
            continue
        assert goal in (GOAL_LARGEST, GOAL_SMALLEST)
        best = None
        for i, (line, plain_line) in enumerate(zip(lines, plain_lines, strict=True)):
            read, _, carried = line.rstrip(")").rpartition(" (")
            label, value = plain_line.split(" | ")[0].rsplit(": ", 1)
            assert read.startswith(f"{label}: {value}")
            assert carried == plain_line.split(" | ")[1]
            if i:
                symbol, shown = read.removeprefix(f"{label}: {value} ").split(" ")
                assert int(shown) == best and symbol == ("<" if int(value) < best else ">" if int(value) > best else "=")
            best_label = carried.rsplit(" ", 1)[0]
            assert tokens(f"({best_label}")[1:] == tokens(best_label)  # carried as its line starts
            best = int(carried.rsplit(" ", 1)[1])
        kinds.add(goal)
    assert kinds == {"value", GOAL_LARGEST, GOAL_SMALLEST}
    with pytest.raises(ValueError, match="aligned"):
        read_then_answer(sample, compare=True, stop_at_asked=True, aligned=True)


def test_goal_line_needs_a_stopping_reading():
    """A goal is only defined for the compared, stop-at-asked reading; asking for it with
    another reading is a mistake that must not pass silently, whatever the sample's family."""
    from jvlm_demo.synthetic import read_then_answer

    for task in ("table", "receipt", "sign"):  # whichever family the first sample happens to be
        sample = next(iter(generate(1, 12, "train", [task], image_size=224)))
        with pytest.raises(ValueError, match="state_goal"):
            read_then_answer(sample, compare=True, state_goal=True, receipts=True)


@needs_fonts
def test_receipt_price_questions_can_be_read_out():
    """With receipts, a price question's answer opens with the receipt's item lines down to
    the asked item (led by it as the goal), and scores as the plain price; totals, dates,
    counts and stores keep their direct answer."""
    from jvlm_demo.synthetic import GOAL_MARK, read_then_answer
    from jvlm.eval.runner import clean_prediction

    read = direct = 0
    for sample in generate(120, 13, "train", ["receipt"], image_size=224, questions=1):
        out = read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True, receipts=True)
        assert clean_prediction(out.answer) == sample.answer
        if out.answer == sample.answer:
            direct += 1
            continue
        read += 1
        first, *lines = split_reasoning(out.answer)[0].split("\n")
        item = first.removeprefix(GOAL_MARK)
        assert lines[-1] == f"{item}: {sample.answer}" and item in sample.question
        assert all(not line.startswith(item + ":") for line in lines[:-1])
        assert out.answer == read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True,
                                              receipts=True).answer  # deterministic
    assert read and direct
    # without the flag a receipt is never touched
    assert read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True) == sample


@needs_fonts
def test_receipt_reading_stops_at_the_named_item_not_one_inside_a_word():
    """"rice" is spelled inside "price": when two items cost the asked amount, the reading
    must stop at the item the question names as a word, not fail or stop at the other."""
    from dataclasses import replace

    from jvlm_demo.synthetic import read_then_answer

    sample = next(generate(1, 13, "train", ["receipt"], ["en"], image_size=224))
    sample = replace(sample, spec={**sample.spec, "items": [["rice", 425], ["coffee", 425]]},
                     question="What is the price of coffee?", answer="4.25")
    out = read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True, receipts=True, aligned=True)
    assert out.answer == "<think>\n? (coffee)\nrice: 4.25\ncoffee: 4.25\n</think>\n4.25"


@needs_fonts
def test_table_reading_by_row_finds_the_row_then_the_column():
    """With by_row, a table reading stops twice at one label each: it names the rows in the
    table's order down to the asked one, then writes that row's cells down to the asked
    column, under the goal ``? (row) (day)``; every value is the table's, every label is cut
    into the tokens its line starts with, and charts read exactly as without the flag."""
    from jvlm_demo.synthetic import GOAL_MARK, key_values, read_then_answer, reading_drill
    from jvlm.eval.runner import clean_prediction
    tokens = _demo_tokens()
    style = dict(compare=True, stop_at_asked=True, state_goal=True, aligned=True)
    depths = set()
    for sample in generate(90, 16, "train", ["bar_chart", "line_chart", "table"], image_size=224):
        text = read_then_answer(sample, **style, by_row=True).answer
        assert clean_prediction(text) == sample.answer
        assert reading_drill(sample, **style, by_row=True).answer == text
        if sample.task != "table":
            assert text == read_then_answer(sample, **style).answer
            continue
        first, *lines = split_reasoning(text)[0].split("\n")
        row, day = first.removeprefix(GOAL_MARK).removeprefix("(").removesuffix(")").split(") (")
        assert row in sample.question and day in sample.question
        rows = [line for line in lines if ": " not in line]
        cells = lines[len(rows):]
        assert rows[-1] == row and row not in rows[:-1] and all(": " in cell for cell in cells)
        assert cells[-1] == f"{day}: {sample.answer}" and all(not c.startswith(day + ":") for c in cells[:-1])
        table = key_values(sample).answer.split("\n")
        assert [line.split(",")[0] for line in table][::len(table) // len(sample.spec["rows"])][:len(rows)] == rows
        assert [f"{row}, {cell}" for cell in cells] == [line for line in table if line.startswith(f"{row}, ")][:len(cells)]
        for label in (row, day):
            assert tokens(f"({label}")[1:] == tokens(label)
        depths.add((len(rows) > 1, len(cells) > 1))
    assert depths == {(False, False), (False, True), (True, False), (True, True)}
    with pytest.raises(ValueError, match="by_row"):
        read_then_answer(sample, compare=True, stop_at_asked=True, state_goal=True, by_row=True)


@needs_fonts
def test_reading_drill_gives_the_lines_and_keeps_the_reading():
    """A drill is text-only: its question holds every key-value line of the chart or table
    (image order) above the original question, and its answer is exactly the reading the
    image sample would get, so what it trains is the same output."""
    from jvlm_demo.synthetic import key_values, read_then_answer, reading_drill

    style = dict(compare=True, stop_at_asked=True, state_goal=True)
    samples = list(generate(30, 14, "train", ["bar_chart", "line_chart", "table"], image_size=224))
    for sample in samples:
        drill = reading_drill(sample, **style)
        assert drill.images == [] and drill.more == []
        assert drill.question == key_values(sample).answer + "\n\n" + sample.question
        assert drill.answer == read_then_answer(sample, **style).answer
    with pytest.raises(ValueError, match="reading drills"):
        reading_drill(next(iter(generate(1, 14, "train", ["receipt"], image_size=224))), **style)


def test_facts_reading_writes_the_one_word_the_answer_follows_from():
    """With facts, a facts question first writes the word its answer follows from, as the
    question spells it; that word alone must decide the answer (one answer per word and
    language, across every wording), so the model can learn the answer from it, and outside
    Chinese (no spaces to cut at) it is cut into the same tokens as in the question, so it
    is copied token for token. The training-only rewordings are read the same way and agree
    with the usual wordings on every word's answer. "Which is larger" questions (answer in
    the question) and other families are left as they were."""
    from jvlm_demo.synthetic import GOAL_MARK, read_then_answer
    from jvlm.eval.runner import clean_prediction
    tokens = _demo_tokens()
    answer_of: dict[tuple[str, str], str] = {}
    wordings: dict[tuple[str, str], set[str]] = {}
    samples = [*generate(600, 3, "train", ["facts"]), *generate(600, 3, "train", ["facts"], reworded_facts=True)]
    for sample in samples:
        text = read_then_answer(sample, facts=True).answer
        assert clean_prediction(text) == sample.answer
        if any(ch.isdigit() for ch in sample.question):
            assert text == sample.answer
            continue
        reading = split_reasoning(text)[0]
        assert reading.startswith(GOAL_MARK) and "\n" not in reading
        key = reading.removeprefix(GOAL_MARK)
        if key.startswith("("):
            key = key.removeprefix("(").removesuffix(")")
            assert f" {key}" not in sample.question and key in sample.question
            written = tokens(f"({key}")[1:]
        else:
            assert f" {key}" in sample.question
            written = tokens(f" {key}")
        if sample.language != "zh":
            question = tokens(sample.question)
            assert any(question[i:i + len(written)] == written for i in range(len(question)))
        assert answer_of.setdefault((sample.language, key), sample.answer) == sample.answer
        wordings.setdefault((sample.language, key), set()).add(sample.question)
    assert len({lang for lang, _ in answer_of}) == 6
    assert sum(len(w) > 1 for w in wordings.values()) > 20  # one word read alike under two wordings
    assert sum(len(w) > 3 for w in wordings.values()) > 20  # ... and under more with the rewordings
    assert ("ru", "помидора") in answer_of or ("ru", "помидоры") in answer_of
    for sample in generate(20, 3, "train", ["arithmetic", "translation"]):
        assert read_then_answer(sample, facts=True) == sample


def test_reworded_facts_are_training_only_and_never_a_held_out_sentence():
    """The rewordings teach that a fact's answer follows from its word, not its sentence. They
    must never reach a held-out split, never repeat a usual phrasing (or the held-out score
    would partly measure memorised questions), and leave every other family's draws as they were."""
    usual = {s.question for split in ("train", "test") for s in generate(1200, 5, split, ["facts"])}
    reworded = list(generate(1200, 5, "train", ["facts"], reworded_facts=True))
    assert not usual & {s.question for s in reworded}
    assert all(not any(ch.isdigit() for ch in s.question) for s in reworded)  # no "which is larger"
    assert {s.language for s in reworded} == set(lex.LANGUAGES)
    others = ["arithmetic", "sign"]
    assert ([(s.question, s.answer) for s in generate(24, 5, "train", others, reworded_facts=True, image_size=128)]
            == [(s.question, s.answer) for s in generate(24, 5, "train", others, image_size=128)])
    with pytest.raises(ValueError, match="training data"):
        next(generate(1, 5, "test", ["facts"], reworded_facts=True))
