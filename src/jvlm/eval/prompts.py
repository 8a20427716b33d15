"""How a benchmark question becomes a prompt: the text the model reads and the images it sees.

Benchmarks are scored the standard way only if they are asked the standard way, so each
family keeps the wording its numbers are usually reported with: multiple-choice questions
list lettered options and ask for the letter (the LLaVA / lmms-eval wording), short-answer
VQA asks for "a single word or phrase", OCRBench and RealWorldQA questions already carry
their own instructions and are sent verbatim. The multilingual benchmarks (MMMB,
Multilingual MMBench) are asked in the question's language by default, because an English
instruction after an Arabic question measures code-switching as much as understanding.

A ``Prompt`` is plain data. Its ``fingerprint`` covers everything that can change the
answer (text, system message, images, token budget), which is what the answer cache keys on:
editing a template here invalidates old cached answers instead of silently reusing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from jvlm.errors import BenchmarkError
from jvlm.eval.loaders import BENCHMARKS, ImageSource, Sample

#: how each benchmark family is asked; keys are ``Sample.task`` values
TASK_FORMATS: dict[str, str] = {
    "ai2d": "choice",
    "seedbench2_plus": "choice",
    "mmmb": "choice",
    "mmbench": "choice",
    "mmlu": "choice",
    "arc_challenge": "choice",
    "hellaswag": "choice",
    "realworldqa": "verbatim",
    "ocrbench": "verbatim",
    "chartqa": "short",
    "textvqa": "short",
    "docvqa": "short",
    "infovqa": "short",
    "charxiv": "charxiv",
    "gsm8k": "math",
}

#: default generation budget per format: letters need few tokens, worked maths many
MAX_NEW_TOKENS: dict[str, int] = {
    "choice": 16,
    "verbatim": 128,
    "short": 64,
    "charxiv": 96,
    "math": 512,
}

# Multiple-choice instruction and hint label per language. The English wording is the one
# lmms-eval and LLaVA use; the others say the same thing in that language.
_CHOICE_INSTRUCTION = {
    "en": "Answer with the option's letter from the given choices directly.",
    "zh": "请直接用给定选项中的字母作答。",
    "ar": "أجب مباشرة بحرف الخيار الصحيح من الخيارات المعطاة.",
    "pt": "Responda diretamente com a letra da opção correta entre as alternativas dadas.",
    "ru": "Ответьте сразу буквой правильного варианта из предложенных.",
    "tr": "Verilen seçeneklerden doğru olanın harfiyle doğrudan cevap verin.",
}
_HINT_LABEL = {"en": "Hint", "zh": "提示", "ar": "تلميح", "pt": "Dica", "ru": "Подсказка", "tr": "İpucu"}

_SHORT_INSTRUCTION = "Answer the question using a single word or phrase."
_MATH_INSTRUCTION = (
    "Solve the problem step by step. Finish with a line of the form 'The answer is N', "
    "where N is the final number."
)
_CHARXIV_INSTRUCTION = {
    "text-in-chart": "Answer with the text exactly as it is written in the chart.",
    "text-in-general": "Answer with a short phrase.",
    "number-in-chart": "Answer with a single number as it is written in the chart.",
    "number-in-general": "Answer with a single number.",
}
_CHARXIV_SEVERAL = "If several items are asked for, separate them with commas."


@dataclass(frozen=True)
class PromptSettings:
    """Choices that change prompts, and therefore answers (part of the answer-cache key).

    ``instructions``: 'native' asks multilingual benchmarks in the question's language,
    'english' always uses the English instruction. ``max_new_tokens`` None means the
    family's default from ``MAX_NEW_TOKENS``. ``max_crops`` None means the model's own tile
    budget.
    """

    instructions: str = "native"
    system: str | None = None
    max_new_tokens: int | None = None
    max_crops: int | None = None

    def __post_init__(self) -> None:
        if self.instructions not in ("native", "english"):
            raise BenchmarkError(f"instructions must be 'native' or 'english', got {self.instructions!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise BenchmarkError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.max_crops is not None and self.max_crops < 1:
            raise BenchmarkError(f"max_crops must be at least 1, got {self.max_crops}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Prompt:
    """One request: a single user turn with the images first, then the text."""

    text: str
    images: tuple[ImageSource, ...] = ()
    system: str | None = None
    max_new_tokens: int = 64
    max_crops: int | None = None

    def messages(self) -> list[dict]:
        """Hugging Face chat messages with one ``{"type": "image"}`` slot per image, filled
        from ``images`` in order: the layout the server builds from an OpenAI request, so
        both paths render the same prompt."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        if not self.images:
            return [*messages, {"role": "user", "content": self.text}]
        parts = [{"type": "image"} for _ in self.images]
        return [*messages, {"role": "user", "content": [*parts, {"type": "text", "text": self.text}]}]

    def fingerprint(self) -> str:
        """A digest of everything that can change the answer; images by content."""
        digest = hashlib.sha256()
        header = {"text": self.text, "system": self.system, "max_new_tokens": self.max_new_tokens,
                  "max_crops": self.max_crops, "images": [image_digest(image) for image in self.images]}
        digest.update(json.dumps(header, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()[:32]


def image_bytes(image: ImageSource) -> bytes:
    """The encoded image (as stored in the benchmark), from a path or as is."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    try:
        return Path(image).read_bytes()
    except OSError as err:
        raise BenchmarkError(f"cannot read image {image}: {err}") from err


def image_digest(image: ImageSource) -> str:
    return hashlib.sha256(image_bytes(image)).hexdigest()[:16]


def task_format(task: str) -> str:
    """How benchmark family ``task`` is asked: the built-in table's format, else the one its
    (plugin) ``BenchmarkSpec`` names."""
    if task in TASK_FORMATS:
        return TASK_FORMATS[task]
    spec = BENCHMARKS.get(task)
    if spec is not None and spec.prompt_format in MAX_NEW_TOKENS:
        return spec.prompt_format
    raise BenchmarkError(
        f"no prompt format for benchmark {task!r}; known: {', '.join(sorted(TASK_FORMATS))}; a plugin "
        f"benchmark names one of {sorted(MAX_NEW_TOKENS)} in its BenchmarkSpec.prompt_format"
    )


def default_max_new_tokens(task: str) -> int:
    """The generation budget of benchmark family ``task``: its spec's own, else its format's."""
    spec = BENCHMARKS.get(task)
    if spec is not None and spec.max_new_tokens:
        return spec.max_new_tokens
    return MAX_NEW_TOKENS[task_format(task)]


def format_options(choices: list[str]) -> str:
    """'A. cat\\nB. dog' — one lettered option per line."""
    return "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices))


def _language(sample: Sample, settings: PromptSettings) -> str:
    if settings.instructions == "english" or sample.language not in _CHOICE_INSTRUCTION:
        return "en"
    return sample.language


def _choice_text(sample: Sample, settings: PromptSettings) -> str:
    if not sample.choices:
        raise BenchmarkError(f"{sample.task} sample {sample.id!r} has no options to list")
    language = _language(sample, settings)
    lines = []
    hint = str(sample.meta.get("hint") or "").strip()
    if hint:
        lines.append(f"{_HINT_LABEL[language]}: {hint}")
    if sample.task == "mmlu" and sample.category:
        # MMLU's own harness names the subject; it tells the model which register to use.
        lines.append(f"The following is a multiple choice question about {sample.category.replace('_', ' ')}.")
    if sample.task == "hellaswag":
        lines.append("Which ending completes the text most plausibly?")
    lines += [sample.question.strip(), format_options(sample.choices), _CHOICE_INSTRUCTION[language]]
    return "\n".join(lines)


def _charxiv_text(sample: Sample) -> str:
    instruction = _CHARXIV_INSTRUCTION.get(sample.category or "", _CHARXIV_INSTRUCTION["text-in-general"])
    if sample.category in ("text-in-chart", "text-in-general"):
        instruction = f"{instruction} {_CHARXIV_SEVERAL}"
    return f"{sample.question.strip()}\n{instruction}"


def build_prompt(sample: Sample, settings: PromptSettings | None = None) -> Prompt:
    """The prompt for one benchmark sample, in its family's standard wording."""
    settings = settings or PromptSettings()
    kind = task_format(sample.task)
    if kind == "choice":
        text = _choice_text(sample, settings)
    elif kind == "short":
        text = f"{sample.question.strip()}\n{_SHORT_INSTRUCTION}"
    elif kind == "charxiv":
        text = _charxiv_text(sample)
    elif kind == "math":
        text = f"{sample.question.strip()}\n{_MATH_INSTRUCTION}"
    else:  # verbatim: the benchmark's question already says how to answer
        text = sample.question.strip()
    return Prompt(
        text=text,
        images=tuple(sample.images),
        system=settings.system,
        max_new_tokens=settings.max_new_tokens or default_max_new_tokens(sample.task),
        max_crops=settings.max_crops,
    )
