"""Run a benchmark: ask every question through a backend, cache the answers, score them.

Three backends answer ``Prompt``s, all greedily so a score is reproducible:

* ``InProcessBackend``: this project's model through the inference engine (continuous
  batching, image features cached across MMBench's rotated copies of one image);
* ``OpenAIBackend``: any OpenAI-compatible chat endpoint (this project's ``jvlm serve``,
  vLLM, ...) through the ``openai`` client, several requests in flight at once, images
  sent inline as data URIs so the server never fetches anything;
* ``TransformersTextBackend``: a plain causal LM folder (the Qwen3 text backbone), for the
  "did the vision model forget any text skills" comparison.

Answers are appended to a JSONL ``AnswerCache`` as each chunk of questions finishes, keyed by
sample id, model and the prompt's fingerprint (text, images, token budget). A run that is
interrupted, or first run with ``limit``, continues where it stopped: only questions without
an answer for the same model and prompt are generated again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jvlm.errors import BenchmarkError, EndpointError, JVLMError
from jvlm.eval.loaders import BENCHMARKS, PathLike, Sample, load_benchmark
from jvlm.eval.prompts import Prompt, PromptSettings, build_prompt, image_bytes
from jvlm.eval.report import TaskResult, score_task
from jvlm.inference.reasoning import split_reasoning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """One answer; ``error`` is set (and ``text`` empty) when the request itself was refused,
    e.g. an unreadable image or a prompt over the context length. Such a sample scores 0."""

    text: str
    error: str | None = None


class Backend(Protocol):
    #: shown in reports
    name: str
    #: identity in the answer cache: must change whenever the answers could
    key: str
    #: prompts per chunk; the cache is written after each chunk
    batch_size: int
    #: True when the backend cannot see images
    text_only: bool

    def generate(self, prompts: Sequence[Prompt]) -> list[Completion]: ...


def clean_prediction(text: str) -> str:
    """The answer as scored: a leading reasoning block removed by the same rule as the CLI and
    server use (``jvlm.inference.reasoning.split_reasoning``), whitespace trimmed."""
    return split_reasoning(text)[1].strip()


def folder_key(folder: PathLike, *extra: object) -> str:
    """Identity of a model folder: its config and the names, sizes and times of its weights,
    so retraining into the same folder does not reuse the old model's answers."""
    folder = Path(folder)
    digest = hashlib.sha256(repr(extra).encode())
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{folder.name}@{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------- backends


class InProcessBackend:
    """This project's model, in this process, through ``jvlm.inference.engine.Engine``."""

    text_only = False

    def __init__(self, model, processor, *, name: str, key: str | None = None, batch_size: int = 8,
                 feature_cache_bytes: int = 256 * 2**20, setup=None):
        from jvlm.inference.engine import Engine
        from jvlm.inference.feature_cache import FeatureCache

        self.processor = processor
        self.name = name
        self.key = key or name
        self.batch_size = batch_size
        self.setup = setup  # the decode path (``DecodeSetup``) when known
        self.feature_cache = FeatureCache(feature_cache_bytes) if feature_cache_bytes > 0 else None
        self.engine = Engine(model, processor, max_batch_size=batch_size, feature_cache=self.feature_cache)

    @classmethod
    def from_folder(cls, folder: PathLike, *, dtype=None, device=None, batch_size: int = 8,
                    progress: bool = False, quantize: str = "none", kernels: str = "auto") -> InProcessBackend:
        """Load as ``jvlm infer`` does: ``dtype`` (None: "auto"), ``quantize`` "none" / "int8" /
        "int4" and ``kernels`` "auto" / "torch" (``jvlm.inference.quantize.prepare``)."""
        from jvlm.inference.quantize import prepare
        from jvlm.loading import load
        from jvlm.resolve import resolve_model

        resolved = resolve_model(folder)  # a folder, jvlm-demo, or a Hugging Face repo id
        folder = resolved.path
        model, processor = load(folder, dtype=dtype, device=device, progress=progress)
        setup = prepare(model, quantize, kernels, requested_dtype=dtype or "auto")
        # answers depend on the compute dtype and the weight format, not on which kernel ran;
        # float weights keep the key they had before quantized formats existed
        quantized = (setup.weights,) if quantize != "none" else ()
        key = folder_key(folder, str(model.dtype), *quantized)
        return cls(model, processor, name=Path(resolved.name).name, key=key, batch_size=batch_size, setup=setup)

    def generate(self, prompts: Sequence[Prompt]) -> list[Completion]:
        from jvlm.inference.prompt import build_request
        from jvlm.inference.request import SamplingParams

        out: list[Completion | None] = [None] * len(prompts)
        requests = []
        for i, prompt in enumerate(prompts):
            params = SamplingParams(max_new_tokens=prompt.max_new_tokens, temperature=0.0)
            try:
                request = build_request(self.processor, prompt.messages(), list(prompt.images),
                                        max_crops=prompt.max_crops, params=params, feature_cache=self.feature_cache,
                                        context_length=self.engine.context_length)
            except JVLMError as err:  # this sample's fault (bad image, too long); the others go on
                out[i] = Completion("", error=str(err))
                continue
            requests.append((i, request))
        results = self.engine.generate_many([request for _, request in requests])
        for (i, _), result in zip(requests, results):
            out[i] = Completion(result.text)
        return out


def _data_uri(image) -> str:
    from PIL import Image

    data = image_bytes(image)
    try:
        fmt = Image.open(io.BytesIO(data)).format or ""
    except OSError:  # not an image PIL knows: the server will say so; send it as it is
        fmt = ""
    mime = Image.MIME.get(fmt.upper(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _openai_messages(prompt: Prompt) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    if not prompt.images:
        return [*messages, {"role": "user", "content": prompt.text}]
    parts = [{"type": "image_url", "image_url": {"url": _data_uri(image)}} for image in prompt.images]
    return [*messages, {"role": "user", "content": [*parts, {"type": "text", "text": prompt.text}]}]


def _v1_url(url: str) -> str:
    """'http://host:8000' -> 'http://host:8000/v1' (the client wants the API root)."""
    url = url.rstrip("/")
    return url if re.search(r"//[^/]+/.+", url) else f"{url}/v1"


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint, greedy, ``concurrency`` requests at a time."""

    text_only = False

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 concurrency: int = 4, timeout_s: float = 600.0, max_retries: int = 3):
        import openai

        self._openai = openai
        self.base_url = _v1_url(base_url)
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # local servers often need none
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)
        self.model = model or self._served_model()
        self.name = self.model
        self.key = f"openai:{self.base_url}:{self.model}"
        self.batch_size = max(1, concurrency)

    def _served_model(self) -> str:
        try:
            models = list(self.client.models.list())
        except self._openai.OpenAIError as err:
            raise EndpointError(f"cannot list the models of {self.base_url} ({err}); is the server running? "
                                "Pass the model name explicitly if the endpoint has no /models") from err
        if not models:
            raise EndpointError(f"{self.base_url}/models lists no model; pass the model name explicitly")
        return models[0].id

    def _one(self, prompt: Prompt) -> Completion:
        extra = {"max_crops": prompt.max_crops} if prompt.max_crops is not None else None
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=_openai_messages(prompt), max_tokens=prompt.max_new_tokens,
                temperature=0.0, extra_body=extra)
        except (self._openai.BadRequestError, self._openai.UnprocessableEntityError) as err:
            return Completion("", error=f"refused by the server: {err}")  # this sample's fault
        except self._openai.OpenAIError as err:
            raise EndpointError(f"{self.base_url} failed: {err}; answers so far are cached, rerun to continue") from err
        return Completion(response.choices[0].message.content or "")

    def generate(self, prompts: Sequence[Prompt]) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:
            return list(pool.map(self._one, prompts))


class TransformersTextBackend:
    """A causal LM folder loaded with Transformers (e.g. Qwen3ForCausalLM), text prompts only."""

    text_only = True

    def __init__(self, folder: PathLike, *, dtype=None, device=None, batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import jvlm
        from jvlm.loading import parse_dtype, resolve_device

        jvlm._register_with_transformers()  # a jvlm folder loads too, even under the jvlm command

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = resolve_device(device)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=parse_dtype(dtype) or "auto")
        self.model.to(self.device).eval()
        self.name = Path(folder).name
        self.key = folder_key(folder, str(self.model.dtype))
        self.batch_size = batch_size

    def _render(self, prompt: Prompt) -> str:
        if not self.tokenizer.chat_template:  # a base model without a template reads plain text
            return f"{prompt.system}\n\n{prompt.text}\n" if prompt.system else f"{prompt.text}\n"
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": prompt.text})
        # enable_thinking=False: Qwen3 templates otherwise let the model reason at length first.
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                  enable_thinking=False)

    def generate(self, prompts: Sequence[Prompt]) -> list[Completion]:
        if any(prompt.images for prompt in prompts):
            raise BenchmarkError(f"{self.name} is a text-only model; it can only be scored on text-only tasks")
        by_budget: dict[int, list[int]] = {}  # one generate call per token budget
        for i, prompt in enumerate(prompts):
            by_budget.setdefault(prompt.max_new_tokens, []).append(i)
        texts: dict[int, str] = {}
        for budget, indices in by_budget.items():
            # A chat template writes its own special tokens; plain text gets the tokenizer's (BOS).
            batch = self.tokenizer([self._render(prompts[i]) for i in indices], return_tensors="pt", padding=True,
                                   add_special_tokens=not self.tokenizer.chat_template).to(self.device)
            with self.torch.inference_mode():
                ids = self.model.generate(**batch, max_new_tokens=budget, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            new = ids[:, batch["input_ids"].shape[1]:]  # (B, new tokens)
            for i, row in zip(indices, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                texts[i] = row
        return [Completion(texts[i]) for i in range(len(prompts))]


def load_text_backbone(folder: PathLike, *, dtype=None, device=None, batch_size: int = 8) -> Backend:
    """A jvlm folder runs text-only through the engine; any other causal LM through Transformers."""
    config = Path(folder) / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"--text-backbone {folder}: cannot read {config} ({err}); pass a model folder") from err
    if model_type in ("jvlm", "jina_vlm"):
        return InProcessBackend.from_folder(folder, dtype=dtype, device=device, batch_size=batch_size)
    return TransformersTextBackend(folder, dtype=dtype, device=device, batch_size=batch_size)


# ------------------------------------------------------------------------- cache


class AnswerCache:
    """Append-only JSONL of answers, one line per question, flushed as chunks finish.

    A line cut short by a crash is skipped with a warning (its question is simply asked
    again); when the same key appears twice the later line wins.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        with self.path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning("%s, line %d: unreadable cache entry (interrupted write?); its question "
                                   "will be asked again", self.path, number)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def add(self, entries: list[dict]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            if handle.tell() > 0 and not self._ends_with_newline():
                handle.write("\n")  # never glue a new entry onto a half-written line
            handle.writelines(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
            handle.flush()
            os.fsync(handle.fileno())
        for entry in entries:
            self._entries[entry["key"]] = entry

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"


def answer_key(model_key: str, task: str, sample_id: str, prompt: Prompt) -> str:
    payload = json.dumps([model_key, task, sample_id, prompt.fingerprint()], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


# --------------------------------------------------------------------------- run


def select_samples(samples: list[Sample], limit: int | None, circular: bool = False) -> list[Sample]:
    """The first ``limit`` questions; for CircularEval the first ``limit`` questions with all
    their rotations (VLMEvalKit stores the rotated copies at the end of the file)."""
    if limit is None:
        return samples
    if limit < 1:
        raise BenchmarkError(f"limit must be at least 1, got {limit}")
    if not circular:
        return samples[:limit]
    groups = list(dict.fromkeys(sample.meta["circular_group"] for sample in samples))  # in file order
    keep = set(groups[:limit])
    return [sample for sample in samples if sample.meta["circular_group"] in keep]


@dataclass
class RunStats:
    n_cached: int = 0
    n_generated: int = 0
    elapsed_s: float = 0.0


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)


def answer_samples(task: str, samples: list[Sample], backend: Backend, *, settings: PromptSettings | None = None,
                   cache: AnswerCache | None = None, progress: bool = False) -> tuple[dict[str, Completion], RunStats]:
    """Answers by sample id: cached ones reused, the rest generated chunk by chunk and cached."""
    settings = settings or PromptSettings()
    if backend.text_only and any(sample.images for sample in samples):
        raise BenchmarkError(f"{task} has images but {backend.name} is text-only; "
                             "score a text backbone on text-only tasks (mmlu, gsm8k, arc_challenge, hellaswag)")
    ids = [sample.id for sample in samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise BenchmarkError(f"{task}: sample ids must be unique to cache answers; repeated: {duplicates}")
    started = time.perf_counter()
    stats = RunStats()
    answers: dict[str, Completion] = {}
    todo: list[tuple[Sample, Prompt, str]] = []
    for sample in samples:
        prompt = build_prompt(sample, settings)
        key = answer_key(backend.key, task, sample.id, prompt)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            answers[sample.id] = Completion(hit["prediction"], hit.get("error"))
        else:
            todo.append((sample, prompt, key))
    stats.n_cached = len(answers)
    # Similar prompts side by side pad less in a batch; answers do not depend on the order.
    todo.sort(key=lambda item: (len(item[1].images), len(item[1].text)))
    chunk_size = max(1, 2 * backend.batch_size)
    with _progress(progress) as bar:
        tracker = bar.add_task(f"{task} · {backend.name}", total=len(samples), completed=stats.n_cached)
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            completions = backend.generate([prompt for _, prompt, _ in chunk])
            entries = []
            for (sample, _, key), completion in zip(chunk, completions):
                completion = Completion(clean_prediction(completion.text), completion.error)
                if completion.error:
                    logger.warning("%s %s: %s", task, sample.id, completion.error)
                answers[sample.id] = completion
                entries.append({"key": key, "task": task, "id": sample.id, "model": backend.name,
                                "prediction": completion.text, "error": completion.error})
            if cache is not None:
                cache.add(entries)
            stats.n_generated += len(chunk)
            bar.advance(tracker, len(chunk))
    stats.elapsed_s = time.perf_counter() - started
    logger.info("%s: %d answers from the cache, %d generated in %.1f s", task, stats.n_cached,
                stats.n_generated, stats.elapsed_s)
    return answers, stats


def evaluate(task: str, data: PathLike | list[Sample], backend: Backend, *, limit: int | None = None,
             settings: PromptSettings | None = None, cache: AnswerCache | PathLike | None = None,
             progress: bool = False, role: str = "model", **loader_options) -> TaskResult:
    """Load (unless ``data`` is already samples), answer and score one benchmark.

    ``task`` is a name in ``jvlm.eval.loaders.BENCHMARKS``; ``loader_options`` go to its
    loader (e.g. ``image_root``). ``role`` is 'model' or 'text_backbone' in the report.
    """
    if task not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {task!r}; known: {', '.join(sorted(BENCHMARKS))}")
    if role not in ("model", "text_backbone"):
        raise BenchmarkError(f"role must be 'model' or 'text_backbone', got {role!r}")
    settings = settings or PromptSettings()
    samples = data if isinstance(data, list) else load_benchmark(task, data, **loader_options)
    samples = select_samples(samples, limit, circular=BENCHMARKS[task].aggregate == "circular")
    if not samples:
        raise BenchmarkError(f"{task}: no samples to evaluate in {data}")
    if cache is not None and not isinstance(cache, AnswerCache):
        cache = AnswerCache(cache)
    answers, stats = answer_samples(task, samples, backend, settings=settings, cache=cache, progress=progress)
    predictions = {sample_id: answer.text for sample_id, answer in answers.items()}
    errors = {sample_id: answer.error for sample_id, answer in answers.items() if answer.error}
    return score_task(task, samples, predictions, errors, model=backend.name, role=role, settings=settings.to_dict(),
                      run={"n_cached": stats.n_cached, "n_generated": stats.n_generated,
                           "elapsed_s": round(stats.elapsed_s, 3)})
