"""Benchmark loaders: each public benchmark file, as distributed, into a list of ``Sample``.

One function per benchmark reads the format its authors (or lmms-eval / VLMEvalKit,
where that is how it is usually obtained) publish, from local paths only; nothing
here downloads. Records are checked as they are read, and a malformed file raises
``BenchmarkError`` naming the file and the line, row or entry, so a broken download
fails at load time rather than halfway through an evaluation run.

``BENCHMARKS`` maps each benchmark name to its loader, the scorer that grades it
(a name in ``jvlm.eval.scorers.SCORERS``), the metric it reports and how per-sample
scores are aggregated.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from jvlm.errors import BenchmarkError
from jvlm.eval.samples import BenchmarkSpec, ImageSource, PathLike, Sample, read_jsonl
from jvlm.eval.scorers import gsm8k_extract_answer

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------ readers


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist; pass the benchmark file as distributed")
    return path


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from err


def _read_tsv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    # Base64 image cells are far larger than the csv module's default 128 KiB field cap.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise BenchmarkError(f"{path}, header: missing column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"  # the row's last line (cells may span lines)
            if None in row or None in row.values():
                raise BenchmarkError(f"{where}: has a different number of cells than the header")
            yield where, row


def _read_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise BenchmarkError(f"{path} is a parquet file; reading it needs pyarrow: pip install pyarrow") from err
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise BenchmarkError(f"{path}: not a readable parquet file ({err})") from err
    for number, row in enumerate(rows):
        yield f"{path}, row {number}", row


def _read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a parquet, JSONL or JSON-list file (the shapes Hugging Face exports take)."""
    if path.suffix == ".parquet":
        yield from _read_parquet(path)
    elif path.suffix == ".jsonl":
        yield from read_jsonl(path)
    else:
        yield from _json_entries(path, _read_json(path))


def _json_entries(path: Path, data: Any, key: str | None = None) -> Iterator[tuple[str, dict]]:
    """Entries of a JSON list, or of the list under ``key`` ('data' in the VQA releases)."""
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise BenchmarkError(f"{path}: expected a JSON object with a {key!r} list")
        data = data[key]
    if not isinstance(data, list):
        raise BenchmarkError(f"{path}: expected a JSON list of questions, found {type(data).__name__}")
    for number, record in enumerate(data):
        where = f"{path}, entry {number}" + (f" of {key!r}" if key else "")
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: expected a JSON object, found {type(record).__name__}")
        yield where, record


def _field(record: dict, key: str, where: str) -> Any:
    value = record.get(key)
    if value is None or value == "":
        raise BenchmarkError(f"{where}: missing field {key!r}; found fields {sorted(record)}")
    return value


def _answers(record: dict, key: str, where: str) -> list[str]:
    """Gold answers as a list; test splits ship without them, which is allowed."""
    value = record.get(key)
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, list):
        return [str(v) for v in value]
    raise BenchmarkError(f"{where}: field {key!r} should be a string or a list, found {type(value).__name__}")


# ------------------------------------------------------------------------- images


def _image_file(root: Path, name: str, where: str) -> Path:
    """``root/name``, or ``root/basename`` when the record's path has a folder prefix
    ('documents/x.png') that the unpacked image folder does not."""
    for candidate in (root / name, root / Path(name).name):
        if candidate.is_file():
            return candidate
    raise BenchmarkError(f"{where}: image {name!r} not found under {root}; pass image_root=<folder of images>")


def _default_root(path: Path, *folders: str) -> Path:
    """The image folder as unpacked next to the annotation file or next to its folder
    (``OCRBench/OCRBench.json`` + ``OCRBench_Images/``); else the file's own folder."""
    for base in (path.parent, path.parent.parent):
        for folder in folders:
            if (base / folder).is_dir():
                return base / folder
    return path.parent


def _decode_base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise BenchmarkError(f"{where}: image cell is not valid base64 ({err})") from err


def _embedded_image(value: Any, base: Path, where: str) -> ImageSource:
    """A Hugging Face image cell ({'bytes', 'path'}), raw bytes, or a path next to the file."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        return _image_file(base, value, where)
    raise BenchmarkError(f"{where}: no image (expected bytes or a path), found {type(value).__name__}")


# --------------------------------------------------------------- VQA-style loaders


@dataclass(frozen=True)
class _JsonVqaFormat:
    """Where one JSON VQA release keeps each field of a question."""

    task: str
    list_key: str | None  # 'data' in the VQA releases; None for a bare JSON list
    id_key: str | None  # None: number the questions in file order
    question_key: str
    image_key: str
    answers_key: str
    image_suffix: str = ""  # TextVQA names the image by id, without '.jpg'
    image_folders: tuple[str, ...] = ()  # looked for beside the JSON when image_root is not given
    category_key: str | None = None
    meta_keys: tuple[str, ...] = ()


def _load_json_vqa(fmt: _JsonVqaFormat, path: PathLike, image_root: PathLike | None) -> list[Sample]:
    path = _existing(path)
    root = Path(image_root) if image_root else _default_root(path, *fmt.image_folders)
    samples = []
    for where, record in _json_entries(path, _read_json(path), fmt.list_key):
        image = f"{_field(record, fmt.image_key, where)}{fmt.image_suffix}"
        sample = Sample(
            id=str(_field(record, fmt.id_key, where)) if fmt.id_key else f"{path.stem}-{len(samples)}",
            question=str(_field(record, fmt.question_key, where)),
            images=[_image_file(root, image, where)],
            answers=_answers(record, fmt.answers_key, where),
            task=fmt.task,
            category=str(_field(record, fmt.category_key, where)) if fmt.category_key else None,
            meta={"file": path.name, **{key: record[key] for key in fmt.meta_keys if key in record}},
        )
        samples.append(sample)
    return samples


_DOCVQA = _JsonVqaFormat("docvqa", "data", "questionId", "question", "image", "answers", meta_keys=("question_types",))
_INFOVQA = _JsonVqaFormat(
    "infovqa", "data", "questionId", "question", "image_local_name", "answers", meta_keys=("answer_type",)
)
_TEXTVQA = _JsonVqaFormat(
    "textvqa", "data", "question_id", "question", "image_id", "answers", ".jpg", ("train_images",)
)
_CHARTQA = _JsonVqaFormat("chartqa", None, None, "query", "imgname", "label", image_folders=("png",))
_OCRBENCH = _JsonVqaFormat(
    "ocrbench",
    None,
    None,
    "question",
    "image_path",
    "answers",
    image_folders=("OCRBench_Images",),
    category_key="type",
    meta_keys=("dataset_name",),
)


def load_docvqa(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """DocVQA (``val_v1.0.json``): {'data': [{questionId, question, image, answers}]}; the
    image field's 'documents/' prefix may be absent from the unpacked image folder."""
    return _load_json_vqa(_DOCVQA, path, image_root)


def load_infovqa(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """InfographicVQA (``infographicsVQA_val_v1.0.json``): 'data' entries naming image_local_name."""
    return _load_json_vqa(_INFOVQA, path, image_root)


def load_textvqa(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """TextVQA (``TextVQA_0.5.1_val.json``): 'data' entries with ten human answers; images
    are ``<image_id>.jpg`` in ``train_images/`` (the validation images ship there)."""
    return _load_json_vqa(_TEXTVQA, path, image_root)


def load_chartqa(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """ChartQA (``test_human.json`` / ``test_augmented.json``): [{imgname, query, label}],
    images in the sibling ``png/`` folder; ``meta['file']`` tells the two splits apart."""
    return _load_json_vqa(_CHARTQA, path, image_root)


def load_ocrbench(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """OCRBench (``OCRBench.json``): [{dataset_name, image_path, question, answers, type}],
    images under ``OCRBench_Images/``; ``type`` is the scoring category."""
    return _load_json_vqa(_OCRBENCH, path, image_root)


_CHARXIV_CATEGORIES = {1: "text-in-chart", 2: "text-in-general", 3: "number-in-chart", 4: "number-in-general"}


def load_charxiv(path: PathLike, image_root: PathLike | None = None) -> list[Sample]:
    """CharXiv reasoning questions (``data/reasoning_val.json``): {id: {figure_id, query,
    answer, inst_category}}, figures at ``images/<figure_id>.jpg`` beside ``data/``."""
    path = _existing(path)
    root = Path(image_root) if image_root else _default_root(path, "images")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected a JSON object keyed by figure id, found {type(data).__name__}")
    samples = []
    for key, record in data.items():
        where = f"{path}, entry {key!r}"
        if not isinstance(record, dict):
            raise BenchmarkError(f"{where}: expected a JSON object, found {type(record).__name__}")
        figure_id = _field(record, "figure_id", where)
        inst_category = _field(record, "inst_category", where)
        if inst_category not in _CHARXIV_CATEGORIES:
            raise BenchmarkError(f"{where}: inst_category must be 1-4, found {inst_category!r}")
        samples.append(
            Sample(
                id=str(key),
                question=str(_field(record, "query", where)),
                images=[_image_file(root, f"{figure_id}.jpg", where)],
                answers=[str(_field(record, "answer", where))],
                task="charxiv",
                category=_CHARXIV_CATEGORIES[inst_category],
                meta={"inst_category": inst_category, "qa_source": record.get("qa_source")},
            )
        )
    return samples


# ------------------------------------------------------------ multiple choice (images)


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def load_ai2d(path: PathLike) -> list[Sample]:
    """AI2D as distributed by lmms-eval (parquet or JSONL): question, options (list),
    answer (0-based option index as a string) and an embedded image."""
    path = _existing(path)
    samples = []
    for where, record in _read_records(path):
        options = _field(record, "options", where)
        answer = str(_field(record, "answer", where)).strip()
        if not answer.isdigit() or int(answer) >= len(options):
            raise BenchmarkError(f"{where}: answer should index one of {len(options)} options, found {answer!r}")
        samples.append(
            Sample(
                id=str(record.get("question_id", len(samples))),
                question=str(_field(record, "question", where)),
                images=[_embedded_image(_field(record, "image", where), path.parent, where)],
                answers=[_letter(int(answer))],
                choices=[str(option) for option in options],
                task="ai2d",
            )
        )
    return samples


_TSV_LANGUAGE = re.compile(r"_(ar|cn|zh|en|pt|ru|tr)$", re.IGNORECASE)


def _language_from_name(path: Path) -> str | None:
    match = _TSV_LANGUAGE.search(path.stem)
    return None if match is None else {"cn": "zh"}.get(match.group(1).lower(), match.group(1).lower())


def _tsv_images(cell: str, images_by_index: dict[str, str], where: str) -> list[bytes]:
    """VLMEvalKit image cells: base64, a JSON list of base64 (several images), or the
    ``index`` of an earlier row holding the same image (MMBench's rotated copies)."""
    if len(cell) <= 64 and cell in images_by_index:
        cell = images_by_index[cell]
    if cell.startswith("["):
        try:
            parts = json.loads(cell)
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{where}: image cell looks like a list but is not valid JSON ({err.msg})") from err
        return [_decode_base64(str(part), where) for part in parts]
    return [_decode_base64(cell, where)]


def _load_mcq_tsv(path: PathLike, task: str, language: str | None, circular: bool) -> list[Sample]:
    """The VLMEvalKit multiple-choice TSV: index, question, A, B, ..., answer, base64 image,
    optional hint / category / l2-category / split."""
    path = _existing(path)
    language = language or _language_from_name(path)
    rows = list(_read_tsv(path, ("index", "question", "answer", "image")))
    images_by_index = {row["index"]: row["image"] for _, row in rows if len(row["image"]) > 64}
    samples = []
    for where, row in rows:
        choices = []
        for letter in map(_letter, range(26)):
            if not (row.get(letter) or "").strip():
                break
            choices.append(row[letter])
        answer = row["answer"].strip()
        if answer not in map(_letter, range(len(choices))):
            raise BenchmarkError(f"{where}: answer should be one of the option letters, found {answer!r}")
        meta = {key: row[key] for key in ("hint", "l2-category", "split") if (row.get(key) or "").strip()}
        if circular:
            # VLMEvalKit numbers rotated copies index + k * 1e6; they share the original's group.
            if not row["index"].strip().isdigit():
                raise BenchmarkError(f"{where}: index must be an integer, found {row['index']!r}")
            meta["circular_group"] = int(row["index"]) % 1_000_000
        samples.append(
            Sample(
                id=row["index"],
                question=row["question"],
                images=list(_tsv_images(row["image"], images_by_index, where)),
                answers=[answer],
                choices=choices,
                task=task,
                language=language,
                category=row.get("category") or None,
                meta=meta,
            )
        )
    return samples


def load_seedbench2_plus(path: PathLike) -> list[Sample]:
    """SEED-Bench-2-Plus as the VLMEvalKit TSV (``SEEDBench2_Plus.tsv``)."""
    return _load_mcq_tsv(path, "seedbench2_plus", None, circular=False)


def load_mmmb(path: PathLike, language: str | None = None) -> list[Sample]:
    """MMMB, one TSV per language (``mmmb_ar.tsv`` ...); language read from the name if not given."""
    return _load_mcq_tsv(path, "mmmb", language, circular=False)


def load_mmbench(path: PathLike, language: str | None = None) -> list[Sample]:
    """MMBench dev TSVs, including the multilingual ones (``mmbench_dev_ar.tsv`` ...), whose
    rotated copies are grouped in ``meta['circular_group']`` for CircularEval."""
    return _load_mcq_tsv(path, "mmbench", language, circular=True)


_INLINE_OPTION = re.compile(r"^\s*([A-Z])[.)]\s+(.+?)\s*$", re.MULTILINE)


def load_realworldqa(path: PathLike) -> list[Sample]:
    """RealWorldQA (parquet or JSONL): question (options inline as 'A. ...'), answer, image."""
    path = _existing(path)
    samples = []
    for where, record in _read_records(path):
        question = str(_field(record, "question", where))
        inline = _INLINE_OPTION.findall(question)
        labels_in_order = [label for label, _ in inline] == [_letter(i) for i in range(len(inline))]
        samples.append(
            Sample(
                id=str(record.get("id", len(samples))),
                question=question,
                images=[_embedded_image(_field(record, "image", where), path.parent, where)],
                answers=[str(_field(record, "answer", where)).strip()],
                choices=[text for _, text in inline] if inline and labels_in_order else None,
                task="realworldqa",
            )
        )
    return samples


# --------------------------------------------------------------------- text only


def _mmlu_file(path: Path) -> list[Sample]:
    subject = re.sub(r"_(test|val|dev)$", "", path.stem)
    samples = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            where = f"{path}, row {number}"
            if len(row) != 6:
                raise BenchmarkError(f"{where}: expected 6 cells (question, A, B, C, D, answer), found {len(row)}")
            if row[5].strip() not in ("A", "B", "C", "D"):
                raise BenchmarkError(f"{where}: answer should be A-D, found {row[5]!r}")
            samples.append(
                Sample(
                    id=f"{subject}-{number}",
                    question=row[0],
                    answers=[row[5].strip()],
                    choices=row[1:5],
                    task="mmlu",
                    category=subject,
                )
            )
    return samples


def load_mmlu(path: PathLike) -> list[Sample]:
    """MMLU CSVs (no header: question, A, B, C, D, answer): one ``<subject>_test.csv`` or a
    folder of them; the subject becomes the category."""
    path = _existing(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise BenchmarkError(f"{path}: no .csv files; expected MMLU's data/test/<subject>_test.csv")
    return [sample for file in files for sample in _mmlu_file(file)]


def load_gsm8k(path: PathLike) -> list[Sample]:
    """GSM8K (``test.jsonl``): question and a worked answer ending in '#### <number>'."""
    path = _existing(path)
    samples = []
    for where, record in read_jsonl(path):
        solution = str(_field(record, "answer", where))
        final = gsm8k_extract_answer(solution) if "####" in solution else None
        if final is None:
            raise BenchmarkError(f"{where}: answer has no '#### <number>' final line")
        samples.append(
            Sample(
                id=str(len(samples)),
                question=str(_field(record, "question", where)),
                answers=[final],
                task="gsm8k",
                meta={"solution": solution},
            )
        )
    return samples


def load_arc(path: PathLike) -> list[Sample]:
    """ARC (``ARC-Challenge-Test.jsonl``): {id, question: {stem, choices: [{text, label}]},
    answerKey}. Labels are '1'-'4' on some questions; answers become letters by position."""
    path = _existing(path)
    samples = []
    for where, record in read_jsonl(path):
        question = _field(record, "question", where)
        if not isinstance(question, dict):
            raise BenchmarkError(f"{where}: 'question' should be an object with 'stem' and 'choices'")
        options = _field(question, "choices", where)
        labels = [str(option.get("label")) for option in options]
        key = str(_field(record, "answerKey", where))
        if key not in labels:
            raise BenchmarkError(f"{where}: answerKey {key!r} is not one of the labels {labels}")
        samples.append(
            Sample(
                id=str(record.get("id", len(samples))),
                question=str(_field(question, "stem", where)),
                answers=[_letter(labels.index(key))],
                choices=[str(option.get("text")) for option in options],
                task="arc_challenge",
                meta={"labels": labels},
            )
        )
    return samples


def _hellaswag_text(text: str) -> str:
    """WikiHow contexts carry '[title]'-style markers; drop them as the reference harness does."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def load_hellaswag(path: PathLike) -> list[Sample]:
    """HellaSwag (``hellaswag_val.jsonl``): ctx_a, ctx_b, endings (4), label, activity_label."""
    path = _existing(path)
    samples = []
    for where, record in read_jsonl(path):
        endings = _field(record, "endings", where)
        label = record.get("label")
        answers = []
        if label not in (None, ""):
            if not str(label).isdigit() or int(label) >= len(endings):
                raise BenchmarkError(f"{where}: label should index one of {len(endings)} endings, found {label!r}")
            answers = [_letter(int(label))]
        context = f"{_field(record, 'ctx_a', where)} {str(record.get('ctx_b', '')).capitalize()}".strip()
        activity = str(record.get("activity_label", ""))
        samples.append(
            Sample(
                id=str(record.get("ind", len(samples))),
                question=_hellaswag_text(f"{activity}: {context}"),
                answers=answers,
                choices=[_hellaswag_text(str(e)) for e in endings],
                task="hellaswag",
                category=activity or None,
            )
        )
    return samples


# ---------------------------------------------------------------------- registry


MULTILINGUAL_LANGUAGES = ("ar", "zh", "en", "pt", "ru", "tr")
#: the eight English benchmarks averaged into the model's "VQA average"
VQA_AVERAGE = ("ai2d", "chartqa", "textvqa", "docvqa", "infovqa", "ocrbench", "seedbench2_plus", "charxiv")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    "ai2d": BenchmarkSpec(load_ai2d, "choice_accuracy", "accuracy"),
    "chartqa": BenchmarkSpec(load_chartqa, "relaxed_accuracy", "relaxed accuracy"),
    "textvqa": BenchmarkSpec(load_textvqa, "vqa_accuracy", "vqa accuracy"),
    "docvqa": BenchmarkSpec(load_docvqa, "anls", "anls"),
    "infovqa": BenchmarkSpec(load_infovqa, "anls", "anls"),
    "ocrbench": BenchmarkSpec(load_ocrbench, "ocrbench_score", "ocrbench score (of 1000)", "ocrbench_total"),
    "seedbench2_plus": BenchmarkSpec(load_seedbench2_plus, "choice_accuracy", "accuracy"),
    "charxiv": BenchmarkSpec(load_charxiv, "charxiv_reasoning_score", "reasoning accuracy (judge-free)"),
    "realworldqa": BenchmarkSpec(load_realworldqa, "exact_match", "accuracy"),
    "mmlu": BenchmarkSpec(load_mmlu, "choice_accuracy", "accuracy"),
    "gsm8k": BenchmarkSpec(load_gsm8k, "gsm8k_accuracy", "exact match"),
    "arc_challenge": BenchmarkSpec(load_arc, "choice_accuracy", "accuracy"),
    "hellaswag": BenchmarkSpec(load_hellaswag, "choice_accuracy", "accuracy"),
}
for _language in MULTILINGUAL_LANGUAGES:
    BENCHMARKS[f"mmmb_{_language}"] = BenchmarkSpec(
        partial(load_mmmb, language=_language), "choice_accuracy", "accuracy"
    )
    BENCHMARKS[f"mmbench_{_language}"] = BenchmarkSpec(
        partial(load_mmbench, language=_language), "choice_accuracy", "circular accuracy", "circular"
    )


def load_benchmark(name: str, path: PathLike, **options: Any) -> list[Sample]:
    """Load benchmark ``name`` from ``path``; ``options`` go to its loader (e.g. image_root)."""
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    samples = spec.loader(path, **options)
    logger.info("loaded %d samples of %s from %s", len(samples), name, path)
    return samples

def load_plugins() -> list[str]:
    """Add the benchmarks that installed packages offer through the ``jvlm.benchmarks`` entry
    point group (e.g. a recipe's own held-out split); returns the names added.

    Each entry point names a callable returning ``{name: BenchmarkSpec}``; a built-in name is
    never replaced. A plugin that fails to load is logged and skipped, so a broken extra
    package cannot take the built-in benchmarks down with it.
    """
    from importlib.metadata import entry_points

    added = []
    for point in entry_points(group="jvlm.benchmarks"):
        try:
            specs = point.load()()
        except Exception as err:  # noqa: BLE001 - a plugin's own bug; reported, not fatal
            logger.warning("benchmark plugin %s (%s) failed to load: %s", point.name, point.value, err)
            continue
        for name, spec in specs.items():
            if name not in BENCHMARKS:
                BENCHMARKS[name] = spec
                added.append(name)
    return added


load_plugins()
