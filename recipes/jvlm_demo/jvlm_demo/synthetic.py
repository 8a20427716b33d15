"""Synthetic multilingual document and scene data, deterministic from a seed.

The project's small default model is trained on this: image question answering over
receipts, forms, charts, tables, signs and shape scenes, plus text-only arithmetic,
translation and facts, in English, Chinese, Arabic, Portuguese, Russian and Turkish. Each
sample's question and answer are in one language, drawn per sample.

Determinism: sample ``i`` of ``(split, seed)`` depends only on those three values, so the
same call gives byte-identical PNGs and identical text (on machines with the same fonts,
see ``scripts/install_fonts.sh``).

Held-out splits: every draft (task, language, question, answer, image spec) is hashed into
one of 1000 buckets; train owns 900, val and test 50 each, and each split only keeps
drafts from its own buckets (redrawing otherwise). No val/test sample can therefore equal
a train sample, whatever the seeds. Questions have several phrasings, so a fact held out
under one wording is usually still taught under another.

    python -m jvlm_demo.synthetic --out data/synth --n 1000 --seed 0 --split train
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from PIL import Image

from jvlm_demo import synth_charts, synth_docs, synth_text
from jvlm_demo.fonts import check_fonts
from jvlm_demo.synth_core import Draft, Painter, TaskFamily, is_rtl_text
from jvlm_demo.synth_lexicon import LANGUAGES, RTL_LANGUAGES

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 378  # one crop of the vision encoder
#: part of every seed: change it when what is drawn (questions, answers, image specs) changes
SEED_VERSION = "jvlm-synthetic/v2"
#: the output as a whole, layouts included: v3 prints document text larger than v2, from
#: the same draws (same questions and answers, so v2 and v3 held-out splits ask the same)
FORMAT_VERSION = "jvlm-synthetic/v3"

TASK_FAMILIES: dict[str, TaskFamily] = {
    f.name: f
    for f in (
        TaskFamily("receipt", synth_docs.make_receipt, synth_docs.render_receipt, synth_docs.ask_receipt),
        TaskFamily("form", synth_docs.make_form, synth_docs.render_form, synth_docs.ask_form),
        TaskFamily("bar_chart", synth_charts.make_bar_chart, synth_charts.render_bar_chart, synth_charts.ask_bar_chart),
        TaskFamily("line_chart", synth_charts.make_line_chart, synth_charts.render_line_chart, synth_charts.ask_line_chart),
        TaskFamily("table", synth_docs.make_table, synth_docs.render_table, synth_docs.ask_table),
        TaskFamily("sign", synth_docs.make_sign, synth_docs.render_sign, synth_docs.ask_sign),
        TaskFamily("shapes", synth_charts.make_shapes, synth_charts.render_shapes, synth_charts.ask_shapes),
        TaskFamily("arithmetic", synth_text.make_arithmetic),
        TaskFamily("translation", synth_text.make_translation),
        TaskFamily("facts", synth_text.make_facts),
    )
}
TASKS: tuple[str, ...] = tuple(TASK_FAMILIES)
#: the facts family asked in its training-only rewordings (``generate(..., reworded_facts=True)``)
REWORDED_FACTS_FAMILY = TaskFamily("facts", partial(synth_text.make_facts, reworded=True))
IMAGE_TASKS: tuple[str, ...] = tuple(name for name, f in TASK_FAMILIES.items() if f.has_image)

#: split -> [first, last) of the 1000 content buckets it owns
SPLIT_BUCKETS: dict[str, tuple[int, int]] = {"train": (0, 900), "val": (900, 950), "test": (950, 1000)}
MAX_ATTEMPTS = 5000  # redraws per sample before giving up on a split's share of the space


@dataclass
class Sample:
    """One question–answer pair, with zero or one image, plus optional follow-up turns.

    ``more`` holds further (question, answer) pairs about the same image (or, for
    text-only families, further questions of the same family): a multi-turn conversation.
    """

    id: str
    images: list[Image.Image] = field(repr=False)
    question: str
    answer: str
    task: str
    language: str
    more: list[tuple[str, str]] = field(default_factory=list)
    spec: dict | None = field(default=None, repr=False)  # what the image was drawn from (None: text-only)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(_digest(SEED_VERSION, *parts)[:16], "big"))


def content_bucket(task: str, language: str, draft: Draft) -> int:
    """Which of the 1000 split buckets this content belongs to (seed-independent)."""
    content = json.dumps([task, language, draft.question, draft.answer, draft.spec],
                         ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(_digest("split", content)[:8], "big") % 1000


def _normalise_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and 128 <= s <= 2048 for s in size):
        raise ValueError(f"image_size must be an int or (width, height) with sides in 128..2048, got {image_size!r}")
    return size  # type: ignore[return-value]


def _check_choice(kind: str, chosen: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...]:
    if chosen is None:
        return tuple(known)
    chosen = tuple(chosen)
    unknown = [c for c in chosen if c not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown or empty {kind} {unknown or chosen!r}; expected a non-empty subset of {list(known)}")
    return chosen


def generate(
    n: int,
    seed: int,
    split: str = "train",
    tasks: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE,
    questions: int = 1,
    reworded_facts: bool = False,
) -> Iterator[Sample]:
    """Yield ``n`` samples of ``split`` for ``seed``, lazily (rendering as it goes).

    Task families and languages are balanced: each block of ``len(tasks) * len(languages)``
    samples holds every (task, language) pair once, in a seeded random order.
    ``questions`` > 1 makes multi-turn samples: up to that many distinct questions per
    image (fewer when the image does not support that many), or that many text-only
    questions of the family. Every turn obeys the split's buckets on its own.
    ``reworded_facts`` asks facts in training-only sentences (``synth_phrases.REWORDED_FACTS``);
    only the train split takes it, so held-out questions keep the wordings they always had.
    """
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {list(SPLIT_BUCKETS)}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= questions <= 16:
        raise ValueError(f"questions must be in 1..16, got {questions}")
    if reworded_facts and split != "train":
        raise ValueError(f"reworded facts are training data; split {split!r} keeps the usual wordings")
    tasks = _check_choice("tasks", tasks, TASKS)
    languages = _check_choice("languages", languages, LANGUAGES)
    size = _normalise_size(image_size)
    if any(TASK_FAMILIES[t].has_image for t in tasks):
        check_fonts(languages)  # fail before the first sample, naming every missing package
    pairs = [(t, lang) for t in tasks for lang in languages]
    low, high = SPLIT_BUCKETS[split]
    block_order: list[tuple[str, str]] = []
    for index in range(n):
        if index % len(pairs) == 0:
            block_order = list(pairs)
            _rng("order", split, seed, index // len(pairs)).shuffle(block_order)
        task, lang = block_order[index % len(pairs)]
        family = REWORDED_FACTS_FAMILY if reworded_facts and task == "facts" else TASK_FAMILIES[task]
        for attempt in range(MAX_ATTEMPTS):
            draft = family.make(_rng("sample", split, seed, index, attempt), lang)
            if low <= content_bucket(task, lang, draft) < high:
                break
        else:
            raise RuntimeError(
                f"no {split} sample for task {task!r}/{lang!r} in {MAX_ATTEMPTS} draws: the task's content "
                "space is too small for a held-out share; widen its vocabulary or phrasings"
            )
        more = _follow_ups(family, draft, lang, (split, seed, index), questions - 1, (low, high))
        images = [family.render(draft.spec, lang, size)] if family.render is not None else []
        yield Sample(f"{split}-{seed}-{index:06d}", images, draft.question, draft.answer, task, lang, more,
                     draft.spec)


def _follow_ups(family: TaskFamily, first: Draft, lang: str, key: tuple, count: int,
                buckets: tuple[int, int]) -> list[tuple[str, str]]:
    """Up to ``count`` more in-split (question, answer) turns after ``first``.

    Answers are distinct within a conversation: a rephrased question whose answer is
    already on screen would teach copying from the context instead of reading the image.
    """
    seen, turns = {first.answer}, []
    for attempt in range(count * 8):
        if len(turns) == count:
            break
        rng = _rng("more", *key, attempt)
        draft = family.ask(rng, first.spec, lang) if family.ask is not None else family.make(rng, lang)
        if draft.answer in seen or not buckets[0] <= content_bucket(family.name, lang, draft) < buckets[1]:
            continue
        seen.add(draft.answer)
        turns.append((draft.question, draft.answer))
    return turns


#: the instruction of a transcription sample, per language
TRANSCRIBE_PROMPTS = {
    "en": "Read out all the text in the image.",
    "zh": "读出图中的全部文字。",
    "ar": "اقرأ كل النص الموجود في الصورة.",
    "pt": "Leia todo o texto da imagem.",
    "ru": "Прочитайте весь текст на изображении.",
    "tr": "Görseldeki bütün metni okuyun.",
}
#: printed text smaller than this share of the image's largest text (axis ticks) is left out
TRANSCRIBE_MIN_SIZE = 0.6


def transcription(sample: Sample) -> Sample:
    """The same image, asked for all of its text instead of one answer (dense reading supervision).

    A question-answer sample supervises one to four short answers per image; a transcript
    makes every printed word and number a target. Lines follow the page from top to bottom;
    text whose vertical centres lie within half a line of each other forms one line, read
    left to right (right to left for Arabic). Small print (axis ticks) is skipped.
    """
    runs = sample.images[0].info.get("text_runs") if sample.images else None
    if not runs:
        raise ValueError(f"{sample.id}: transcription needs an image rendered with text (task {sample.task!r})")
    largest = max(run.size for run in runs)
    kept = [(run.text, (run.box[1] + run.box[3]) / 2, run.box[0], run.box[3] - run.box[1]) for run in runs
            if run.size >= TRANSCRIBE_MIN_SIZE * largest]
    kept.sort(key=lambda t: t[1])
    lines: list[list[tuple[str, float, float, float]]] = []
    for item in kept:
        if lines and abs(item[1] - lines[-1][0][1]) < 0.5 * max(item[3], lines[-1][0][3]):
            lines[-1].append(item)
        else:
            lines.append([item])
    rtl = sample.language in RTL_LANGUAGES
    transcript = "\n".join(" ".join(t[0] for t in sorted(line, key=lambda t: -t[2] if rtl else t[2])) for line in lines)
    return replace(sample, id=f"{sample.id}-read", question=TRANSCRIBE_PROMPTS[sample.language], answer=transcript,
                   more=[])


#: the instruction of a key-value sample (a chart or table written out as label-value lines)
KEY_VALUE_PROMPTS = {
    "en": "List every label in the image with its value.",
    "zh": "列出图中每个标签及其数值。",
    "ar": "اذكر كل تسمية في الصورة مع قيمتها.",
    "pt": "Liste cada rótulo da imagem com o seu valor.",
    "ru": "Перечислите все подписи на изображении с их значениями.",
    "tr": "Görseldeki her etiketi değeriyle yazın.",
}
#: families whose image is a grid of label -> value lookups, and so has a key-value form
KEY_VALUE_TASKS = ("bar_chart", "line_chart", "table")


def key_values(sample: Sample) -> Sample:
    """The same chart or table, answered with every label and its value, one pair per line.

    A transcript reads the page row by row, so in a chart each value lands on the line of its
    height, far from its label; here each line pairs them (``milk: 20``; for a table, row and
    column: ``rice, Tue: 77``), in the order the image shows them. This is the lookup that
    "what is the value of X" and "which is largest" need, supervised for every label at once.
    """
    from jvlm_demo import synth_lexicon as lex

    spec, lang = sample.spec, sample.language
    if sample.task not in KEY_VALUE_TASKS or spec is None:
        raise ValueError(f"{sample.id}: key-value answers exist for {list(KEY_VALUE_TASKS)}, not {sample.task!r}")
    if sample.task == "bar_chart":
        pairs = [f"{lex.ITEMS[k][lang]}: {v}" for k, v in zip(spec["items"], spec["values"])]
    elif sample.task == "line_chart":
        pairs = [f"{lex.MONTHS_SHORT[m][lang]}: {v}" for m, v in zip(spec["months"], spec["values"])]
    else:
        pairs = [f"{lex.ITEMS[r][lang]}, {lex.WEEKDAYS_SHORT[c][lang]}: {v}"
                 for r, row in zip(spec["rows"], spec["values"]) for c, v in zip(spec["cols"], row)]
    return replace(sample, id=f"{sample.id}-kv", question=KEY_VALUE_PROMPTS[lang], answer="\n".join(pairs), more=[])


#: how a reasoning block is written: the eval runner (``jvlm.eval.runner.clean_prediction``)
#: and chat clients that follow the Qwen3 convention drop it from the scored answer
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n"


#: first line of a reading that states its goal (``read_then_answer(state_goal=True)``)
GOAL_MARK = "? "
#: the goal of a "which is largest/smallest" reading, the same in every language
GOAL_LARGEST, GOAL_SMALLEST = "max", "min"


def read_then_answer(sample: Sample, compare: bool = False, stop_at_asked: bool = False,
                     state_goal: bool = False, receipts: bool = False, aligned: bool = False,
                     by_row: bool = False, facts: bool = False) -> Sample:
    """A question answered after a reading block: a chart or table written out as label-value
    lines (receipts and facts with the flags below).

    The first answer becomes ``<think>\n{key-value lines}\n</think>\n{answer}``: the model
    reads every label and value first and then looks the answer up in text it wrote itself,
    a copy from context that a small decoder does far better than a look-up across the visual
    tokens. Follow-up turns answer directly: the reading is already in the conversation.
    With ``compare``, the reading ends in one step from the answer: a "which is
    largest/smallest" reading carries the best so far on every line (``_running_extreme``),
    and a "what is the value of X" reading repeats X's line last (``_asked_line``). With
    ``stop_at_asked`` as well, a value reading instead stops at X's line, in the image's
    order (``_reading_to_asked``): the answer is then the value just written. With
    ``state_goal`` as well, the reading opens with what it looks for, in the reading's own
    words: ``? mar`` or ``? rice, Tue`` (the label to stop at, as its line will start) or
    ``? max`` / ``? min`` (which way the best so far goes). Each later step then compares a
    line with a few tokens written just above it rather than with the question. With
    ``receipts``, a receipt's "how much is X" question is read the same way (its goal, then
    its item lines down to X's: ``_receipt_reading``). With ``aligned`` as well, every label
    written after the goal mark or in a carried best follows an opening parenthesis,
    ``? (rice, Tue)`` and ``Apr: 30 < 45 (Mar 45)``: the byte-level tokenizer then cuts it
    into the very tokens its own line starts with (after a space it would not: `` rice`` and
    ``rice`` are different tokens), so the stop and the carry compare equal tokens; and each
    carried best shows the comparison that kept or replaced it (this line's value against
    the best so far). With ``by_row`` as well, a table cell is found in two scans that each
    stop at one label instead of at a (row, column) pair: the row names down to the asked
    row, then that row's cells down to the asked column, under the goal ``? (rice) (Tue)``:
    ``milk`` / ``rice`` / ``Mon: 12`` / ``Tue: 77`` (``_row_then_column``). With ``facts``, a
    facts question whose answer follows from one word (the day before, the number word, the
    shape, the item: ``synth_text.fact_key``) first writes that word as the question spells
    it, ``? пятницей``: the answer is then looked up from that word alone, the same under
    every wording of the question. Other families and questions are returned unchanged.
    """
    if state_goal and not (compare and stop_at_asked):
        raise ValueError("state_goal needs compare=True and stop_at_asked=True")
    if aligned and not state_goal:
        raise ValueError("aligned needs state_goal=True")
    if by_row and not aligned:
        raise ValueError("by_row needs aligned=True")
    largest = None  # set by a "which is largest/smallest" reading; any other reading stops at a label
    if facts and sample.task == "facts":
        key = synth_text.fact_key(sample.question, sample.answer, sample.language)
        if key is None:
            return sample
        return replace(sample, answer=f"{THINK_OPEN}{GOAL_MARK}{key}{THINK_CLOSE}{sample.answer}")
    if receipts and sample.task == "receipt":
        reading = _receipt_reading(sample)
        if reading is None:
            return sample
    elif sample.task not in KEY_VALUE_TASKS:
        return sample
    else:
        reading = key_values(sample).answer
        if compare and sample.task != "table" and not sample.answer.isdigit():
            reading, largest = _running_extreme(reading, sample.answer, aligned)
        elif by_row and sample.task == "table":
            reading = _row_then_column(reading, sample.question, sample.answer)
        elif compare and stop_at_asked:
            reading = _reading_to_asked(reading, sample.question, sample.answer)
        elif compare:
            reading += "\n" + _asked_line(reading, sample.question, sample.answer)
    if state_goal:
        reading = f"{GOAL_MARK}{_goal(reading, largest, aligned)}\n{reading}"
    return replace(sample, answer=f"{THINK_OPEN}{reading}{THINK_CLOSE}{sample.answer}")


def _goal(reading: str, largest: bool | None, aligned: bool) -> str:
    """What a reading looks for: which way its best so far goes, or else the label of its
    last ``label: value`` line, where it stops (in parentheses when ``aligned``), led by the
    last row name of a by-row table reading: ``(rice) (Tue)``."""
    if largest is not None:
        return GOAL_LARGEST if largest else GOAL_SMALLEST
    lines = reading.split("\n")
    label = lines[-1].rpartition(": ")[0]
    rows = [line for line in lines if ": " not in line]  # a by-row table reading's row names
    if rows:
        return f"({rows[-1]}) ({label})"
    return f"({label})" if aligned else label


def reading_drill(sample: Sample, **reading: bool) -> Sample:
    """A chart or table question without its image: the key-value lines are given above the
    question, and the answer is ``read_then_answer(sample, **reading)``'s, reading and all.

    The steps a reading takes after each line (carry the best so far, or stop at the asked
    label) compare numbers and labels the model has itself just written; a drill trains
    those steps on short text-only rows, many more per second than with an image in front.
    """
    if sample.task not in KEY_VALUE_TASKS:
        raise ValueError(f"{sample.id}: reading drills exist for {list(KEY_VALUE_TASKS)}, not {sample.task!r}")
    listing = key_values(sample).answer
    answered = read_then_answer(sample, **reading)
    return replace(answered, id=f"{sample.id}-drill", images=[], question=f"{listing}\n\n{sample.question}", more=[])


def _asked_line(reading: str, question: str, answer: str) -> str:
    """The reading's line for the label (and, in a table, the column) the question names,
    written once more at the end: the answer is then the value right before it, and finding
    that line is one match of a label the model just copied from the question."""
    for line in reading.split("\n"):
        label, _, value = line.rpartition(": ")
        if value == answer and all(part in question for part in label.split(", ")):
            return line
    raise ValueError(f"no line of the reading answers {question!r} with {answer!r}")


def _reading_to_asked(reading: str, question: str, answer: str) -> str:
    """The reading's lines up to and including the one the question asks about: the model
    scans the chart or table in its order and stops when the label it reads is the asked one
    (a match of the line it is writing against the question), so the answer is a copy of the
    value on the line just before it, with no search back through the reading."""
    lines = reading.split("\n")
    return "\n".join(lines[:lines.index(_asked_line(reading, question, answer)) + 1])


def _named(candidates: list[tuple[int, tuple[str, ...]]], question: str) -> list[int]:
    """Of the candidates (an index and the labels that name it), those whose labels all
    occur in the question; of several, those it names as words of their own if any ("rice"
    is in "price", Turkish "süt" in "sütununda": a label inside a longer word is not asked)."""
    found = [(i, names) for i, names in candidates if all(name in question for name in names)]
    if len(found) > 1:
        found = [(i, names) for i, names in found
                 if all(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", question) for name in names)] or found
    return [i for i, _ in found]


def _row_then_column(reading: str, question: str, answer: str) -> str:
    """A table's ``row, day: value`` reading turned into two single-label scans: the row
    names, in the table's order, down to the asked row, then that row's ``day: value`` cells
    down to the asked column. Each line then ends the scan or not by one label, where a
    ``row, day: value`` line would stop only when both its labels match, and readings ran
    past the asked cell or stopped at one sharing only its row or its column."""
    cells = []  # (row, day, value) in reading order
    for line in reading.split("\n"):
        label, _, value = line.rpartition(": ")
        row, day = label.split(", ")
        cells.append((row, day, value))
    hits = _named([(k, (row, day)) for k, (row, day, value) in enumerate(cells) if value == answer], question)
    if len(hits) != 1:
        raise ValueError(f"{len(hits)} cells of the table answer {question!r} with {answer!r}")
    row, day, _ = cells[hits[0]]
    rows = list(dict.fromkeys(r for r, _, _ in cells))
    in_row = [(d, value) for r, d, value in cells if r == row]
    days = [d for d, _ in in_row]
    return "\n".join(rows[:rows.index(row) + 1] + [f"{d}: {value}" for d, value in in_row[:days.index(day) + 1]])


def _receipt_reading(sample: Sample) -> str | None:
    """A receipt's item lines (``eggs: 13.75``, as printed) down to the one a price question
    asks about; None for the receipt's other questions (total, date, count, store), which are
    answered directly. A price question is one whose answer is an item's price and whose text
    names that item."""
    from jvlm_demo import synth_lexicon as lex

    spec, lang = sample.spec, sample.language
    lines = [f"{lex.ITEMS[key][lang]}: {lex.format_price(cents, lang)}" for key, cents in spec["items"]]
    asked = _named([(i, (lex.item_the(key, lang),)) for i, (key, cents) in enumerate(spec["items"])
                    if lex.format_price(cents, lang) == sample.answer], sample.question)
    if not asked:
        return None
    if len(asked) > 1:
        raise ValueError(f"{sample.id}: {sample.question!r} names more than one item priced {sample.answer}")
    return "\n".join(lines[:asked[0] + 1])


def _running_extreme(reading: str, answer: str, aligned: bool = False) -> tuple[str, bool]:
    """Key-value lines each followed by the best so far (``Mar: 45 | Mar 45``) for "which is
    largest/smallest": one comparison of two nearby numbers per line instead of an arg-max
    over all of them at once. Whether the best is the largest or the smallest follows from
    the gold answer (the question asks for one of the two); it is returned with the lines.
    ``aligned`` writes ``Apr: 30 < 45 (Mar 45)`` instead: the comparison of this line's
    value with the best so far (``<``, ``>`` or ``=``), then the new best in parentheses."""
    pairs = [line.rsplit(": ", 1) for line in reading.split("\n")]
    values = [int(v) for _, v in pairs]
    largest = pairs[values.index(max(values))][0] == answer
    lines, best = [], None
    for (label, value), number in zip(pairs, values):
        shown = f"{label}: {value}"
        if aligned and best is not None:
            shown += f" {'<' if number < best[1] else '>' if number > best[1] else '='} {best[1]}"
        if best is None or (number > best[1] if largest else number < best[1]):
            best = (label, number)
        lines.append(f"{shown} ({best[0]} {best[1]})" if aligned else f"{shown} | {best[0]} {best[1]}")
    return "\n".join(lines), largest


def to_messages_row(sample: Sample, image_paths: Sequence[str]) -> dict:
    """A JSONL row in the Hugging Face chat "messages" format (image parts first)."""
    user = [{"type": "image", "image": path} for path in image_paths]
    user.append({"type": "text", "text": sample.question})
    messages = [
        {"role": "user", "content": user},
        {"role": "assistant", "content": [{"type": "text", "text": sample.answer}]},
    ]
    for question, answer in sample.more:
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {
        "messages": messages,
        "task": sample.task,
        "language": sample.language,
        "id": sample.id,
    }


def write_jsonl(samples: Iterable[Sample], out_dir: str | Path, filename: str = "data.jsonl") -> Path:
    """Write ``out_dir/filename`` plus ``out_dir/images/NNNNNN.png``; return the JSONL path.

    Image paths in the rows are relative to the JSONL file, so the folder can be moved.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    path = out / filename
    image_count = 0
    with path.open("w", encoding="utf-8") as fh:
        for sample in samples:
            rel_paths = []
            for image in sample.images:
                image_count += 1
                rel = f"images/{image_count:06d}.png"
                image.save(out / rel, format="PNG")
                rel_paths.append(rel)
            fh.write(json.dumps(to_messages_row(sample, rel_paths), ensure_ascii=False) + "\n")
    return path


def _caption_language(text: str, language: str) -> str:
    """Font to caption ``text`` with: a text-only question may quote a word in another script."""
    if is_rtl_text(text):
        return "ar"
    if any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text):
        return "zh"
    return language


def contact_sheet(samples: Sequence[Sample], columns: int = 4, cell: int = 300) -> Image.Image:
    """A grid of thumbnails with each question and answer beneath, for eyeballing the data."""
    text_h = 84
    rows = max(1, -(-len(samples) // columns))
    sheet = Painter((columns * cell, rows * (cell + text_h)), (255, 255, 255))
    sheet.unit = 1.0  # captions in plain pixels
    for k, sample in enumerate(samples):
        x, y = (k % columns) * cell, (k // columns) * (cell + text_h)
        if sample.images:
            thumb = sample.images[0].copy()
            thumb.thumbnail((cell - 8, cell - 8))
            sheet.image.paste(thumb, (x + (cell - thumb.width) // 2, y + 4))
        else:
            sheet.draw.rectangle([x + 4, y + 4, x + cell - 4, y + cell - 4], outline=(200, 200, 200))
            lang = _caption_language(sample.question, sample.language)
            for i, line in enumerate(sheet.wrap(sample.question, lang, 16, cell - 24)[:8]):
                sheet.text((x + 12, y + 24 + i * 24), line, lang, 16, anchor="lm")
        sheet.text((x + 4, y + cell + 12), f"{sample.task} / {sample.language}", "en", 11, (120, 120, 120))
        for i, (line, colour) in enumerate([(sample.question, (20, 20, 20)), (sample.answer, (0, 0, 170))]):
            lang = _caption_language(line, sample.language)
            size = sheet.fit(line, lang, 13, cell - 8, floor_px=7)
            sheet.text((x + 4, y + cell + 34 + i * 24), line, lang, size, colour)
    return sheet.image


def preview(seed: int = 0, per_task: int = len(LANGUAGES), image_size: int | tuple[int, int] = DEFAULT_IMAGE_SIZE) -> Image.Image:
    """Contact sheet of ``per_task`` samples of every family, one family per row."""
    samples = []
    for task in TASKS:
        samples += list(generate(per_task, seed, "train", tasks=[task], image_size=image_size))
    return contact_sheet(samples, columns=per_task)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jvlm_demo.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (gets data.jsonl and images/)")
    parser.add_argument("--n", type=int, default=1000, help="number of samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=list(SPLIT_BUCKETS), default="train")
    parser.add_argument("--tasks", help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--languages", help=f"comma-separated subset of {','.join(LANGUAGES)}")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="square image side in pixels")
    parser.add_argument("--questions", type=int, default=1,
                        help="questions per sample (more than 1 makes multi-turn training conversations)")
    parser.add_argument("--preview", type=Path, help="also save a contact sheet of every family to this PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    tasks = args.tasks.split(",") if args.tasks else None
    languages = args.languages.split(",") if args.languages else None
    stream = generate(args.n, args.seed, args.split, tasks, languages, args.image_size, args.questions)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task(f"{args.split} samples", total=args.n)

        def counted(samples: Iterable[Sample]) -> Iterator[Sample]:
            for sample in samples:
                yield sample
                progress.advance(bar)

        path = write_jsonl(counted(stream), args.out)
    print(f"wrote {args.n} samples to {path}")
    if args.preview:
        preview(args.seed, image_size=args.image_size).save(args.preview)
        print(f"wrote preview to {args.preview}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
