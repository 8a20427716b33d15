"""Evaluation runners, prompts, answer cache and reports, with the tiny model.

The agreement test uses a tiny model whose weights are drawn wider than the default preset
(std 0.2): with the default, every prompt gets the same answer, and "both paths give the same
prediction" would hold whatever the paths did.
"""

from __future__ import annotations

import csv
import io
import json
import random
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from jvlm.errors import BenchmarkError, EndpointError
from jvlm.eval.loaders import Sample
from jvlm.eval.prompts import PromptSettings, build_prompt
from jvlm.eval.report import (
    TaskResult,
    read_results,
    score_task,
    summary_markdown,
    write_results,
    write_summary,
)
from jvlm.eval.runner import (
    AnswerCache,
    InProcessBackend,
    OpenAIBackend,
    TransformersTextBackend,
    evaluate,
    load_text_backbone,
    select_samples,
)

SHORT = PromptSettings(max_new_tokens=6)


@pytest.fixture(scope="module")
def lively_model_dir(tmp_path_factory, tiny_model_dir):
    from jvlm.loading import load, save_pretrained
    from jvlm.model.vlm import init_random

    model, processor = load(tiny_model_dir, dtype="fp32")
    init_random(model, seed=0, std=0.2)
    folder = tmp_path_factory.mktemp("lively-tiny")
    save_pretrained(model, folder, processor=processor)
    return folder


@pytest.fixture(scope="module")
def lively(lively_model_dir):
    return InProcessBackend.from_folder(lively_model_dir, dtype="fp32", batch_size=8)


def noise_png(rng: random.Random, path: Path | None = None) -> bytes:
    size = (rng.randint(16, 72), rng.randint(16, 72))
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def chartqa_fixture(root: Path, n: int, n_images: int = 1, seed: int = 0) -> Path:
    """ChartQA as distributed: test_human.json beside a png/ folder; several questions per
    chart, as in the real set (and the vision tower, the slow part on a CPU, runs less)."""
    rng = random.Random(seed)
    for k in range(n_images):
        noise_png(rng, root / "png" / f"chart{k}.png")
    words = ["what", "is", "the", "value", "of", "total", "share", "in", "year", "price", "blue", "red", "bar",
             "line", "highest", "lowest"]
    records = []
    for i in range(n):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "?"
        records.append({"imgname": f"chart{i % n_images}.png", "query": question, "label": str(rng.randint(1, 99))})
    path = root / "test_human.json"
    path.write_text(json.dumps(records))
    return path


def mmlu_fixture(root: Path, n: int) -> Path:
    """MMLU as distributed: <subject>_test.csv without a header."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "astronomy_test.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        for i in range(n):
            writer.writerow([f"Which planet is number {i}?", "Mars", "Venus", "Earth", "Jupiter", "ABCD"[i % 4]])
    return root


# ----------------------------------------------------------------------- prompts


def mcq(language: str | None = "en", task: str = "mmmb", **meta) -> Sample:
    return Sample(id="1", question="What is shown?", answers=["B"], choices=["cat", "dog"], task=task,
                  language=language, meta=meta)


def test_multiple_choice_lists_lettered_options_and_asks_for_the_letter():
    prompt = build_prompt(mcq(hint="A pet."))
    assert prompt.text.splitlines() == [
        "Hint: A pet.", "What is shown?", "A. cat", "B. dog",
        "Answer with the option's letter from the given choices directly.",
    ]
    assert prompt.max_new_tokens == 16  # a letter, not an essay


def test_multilingual_questions_get_the_instruction_in_their_language():
    chinese = build_prompt(mcq("zh", hint="宠物")).text
    assert chinese.startswith("提示: 宠物") and chinese.endswith("请直接用给定选项中的字母作答。")
    english = build_prompt(mcq("zh"), PromptSettings(instructions="english")).text
    assert english.endswith("Answer with the option's letter from the given choices directly.")


def test_short_answer_and_verbatim_formats():
    vqa = Sample(id="1", question="What is the date? ", answers=["1/8/93"], task="docvqa", images=[b"x"])
    prompt = build_prompt(vqa)
    assert prompt.text == "What is the date?\nAnswer the question using a single word or phrase."
    assert prompt.images == (b"x",) and prompt.messages()[0]["content"][0] == {"type": "image"}
    rwqa = Sample(id="1", question="Which way?\nA. left\nB. right\nPlease answer directly with only the letter.",
                  answers=["A"], choices=["left", "right"], task="realworldqa")
    assert build_prompt(rwqa).text == rwqa.question  # its options and instruction are already inline


def test_prompt_fingerprint_follows_everything_that_changes_the_answer():
    sample = Sample(id="1", question="q", answers=["a"], task="docvqa", images=[b"one"])
    base = build_prompt(sample).fingerprint()
    assert build_prompt(sample).fingerprint() == base
    assert build_prompt(sample, PromptSettings(max_new_tokens=3)).fingerprint() != base
    assert build_prompt(sample, PromptSettings(system="Be brief.")).fingerprint() != base
    other_image = Sample(id="1", question="q", answers=["a"], task="docvqa", images=[b"two"])
    assert build_prompt(other_image).fingerprint() != base


# ------------------------------------------------------------------------ scoring


def test_circular_limit_keeps_whole_rotation_groups():
    samples = [Sample(id=str(i), question="q", answers=["A"], choices=["x", "y"], task="mmbench",
                      meta={"circular_group": i % 1_000_000}) for i in (0, 1, 2, 1_000_000, 1_000_001, 1_000_002)]
    assert [s.id for s in select_samples(samples, 2, circular=True)] == ["0", "1", "1000000", "1000001"]
    assert [s.id for s in select_samples(samples, 2)] == ["0", "1"]


def test_circular_score_counts_a_question_only_if_every_rotation_is_right():
    samples = [Sample(id=sid, question="q", answers=[gold], choices=["x", "y"], task="mmbench", language="ar",
                      category="c", meta={"circular_group": group})
               for sid, gold, group in [("0", "A", 0), ("1000000", "B", 0), ("1", "A", 1), ("1000001", "B", 1)]]
    predictions = {"0": "A", "1000000": "B", "1": "A", "1000001": "A"}  # question 1 fails its rotation
    result = score_task("mmbench_ar", samples, predictions, model="m")
    assert result.score == 50.0 and result.details["questions"] == 2
    assert result.language == "ar" and result.breakdown == {"c": 50.0}


def test_ocrbench_reports_points_and_unanswered_samples_are_not_scored():
    samples = [Sample(id=str(i), question="q", answers=["hello"], task="ocrbench", category="Regular Text Recognition")
               for i in range(4)]
    result = score_task("ocrbench", samples, {"0": "HELLO world", "1": "hello", "2": "no", "3": "x"}, model="m")
    assert result.score == 2.0 and result.percent == 50.0  # points out of 1000 vs percent for averages
    assert result.details["points"]["Text Recognition"] == 2 and not result.details["comparable"]
    unlabelled = [Sample(id="0", question="q", answers=[], task="docvqa")]
    empty = score_task("docvqa", unlabelled, {"0": "x"}, model="m")
    assert (empty.score, empty.n_scored, empty.samples[0]["prediction"]) == (None, 0, "x")


# --------------------------------------------------------------- runs and cache


def test_in_process_and_server_runners_agree_on_twenty_questions(tmp_path, lively_model_dir, lively):
    data = chartqa_fixture(tmp_path / "chartqa", 20, n_images=4)
    local = evaluate("chartqa", data, lively, settings=SHORT)
    with running_server(lively_model_dir) as url:
        remote = evaluate("chartqa", data, OpenAIBackend(url, concurrency=4), settings=SHORT)
    local_answers = {s["id"]: s["prediction"] for s in local.samples}
    remote_answers = {s["id"]: s["prediction"] for s in remote.samples}
    assert len(local_answers) == 20 and remote_answers == local_answers
    assert len(set(local_answers.values())) > 5  # the questions really get different answers
    assert remote.model == "jina-vlm"  # the server's own name, read from /v1/models


def count_requests(backend: InProcessBackend, monkeypatch) -> list[str]:
    seen: list[str] = []
    original = backend.engine.add_request

    def spy(request):
        seen.append(request.request_id)
        return original(request)

    monkeypatch.setattr(backend.engine, "add_request", spy)
    return seen


def test_limit_then_full_run_reuses_cached_answers(tmp_path, lively, monkeypatch):
    data = mmlu_fixture(tmp_path / "mmlu", 6)
    cache = tmp_path / "answers.jsonl"
    calls = count_requests(lively, monkeypatch)
    first = evaluate("mmlu", data, lively, limit=2, settings=SHORT, cache=cache, progress=True)
    assert len(calls) == 2 and first.run["n_generated"] == 2
    full = evaluate("mmlu", data, lively, settings=SHORT, cache=cache)
    assert len(calls) == 6  # only the four new questions reached the model
    assert (full.run["n_cached"], full.run["n_generated"]) == (2, 4)
    assert [s["prediction"] for s in full.samples[:2]] == [s["prediction"] for s in first.samples]
    again = evaluate("mmlu", data, lively, limit=2, settings=PromptSettings(max_new_tokens=5), cache=cache)
    assert again.run["n_generated"] == 2  # another token budget is another prompt: nothing reused


class Interrupting:
    """Wraps a backend and raises KeyboardInterrupt on its second chunk, as Ctrl-C would."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.key, self.batch_size, self.text_only = inner.name, inner.key, 1, False

    def generate(self, prompts):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.inner.generate(prompts)


def test_interrupted_run_continues_and_survives_a_torn_last_line(tmp_path, lively, monkeypatch):
    data = mmlu_fixture(tmp_path / "mmlu", 5)
    cache = tmp_path / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate("mmlu", data, Interrupting(lively), settings=SHORT, cache=cache)
    assert len(AnswerCache(cache)) == 2  # the first chunk (2 x batch size 1) was saved
    with cache.open("a") as handle:
        handle.write('{"key": "half-writ')  # the process died mid-line
    calls = count_requests(lively, monkeypatch)
    resumed = evaluate("mmlu", data, lively, settings=SHORT, cache=cache)
    assert (resumed.run["n_cached"], len(calls)) == (2, 3)
    assert len(AnswerCache(cache)) == 5  # new entries start on a fresh line, all readable


def test_a_refused_sample_scores_zero_and_the_run_goes_on(tmp_path, lively):
    good = Sample(id="good", question="q?", answers=["1"], task="chartqa", images=[noise_png(random.Random(1))])
    broken = Sample(id="broken", question="q?", answers=["1"], task="chartqa", images=[b"not an image"])
    result = evaluate("chartqa", [good, broken], lively, settings=SHORT)
    errors = {s["id"]: s["error"] for s in result.samples}
    assert errors["good"] is None and "image" in errors["broken"].lower()
    assert result.n_errors == 1 and result.n_scored == 2


def test_unreachable_server_is_a_typed_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before anyone connects
    with pytest.raises(EndpointError, match="running"):
        OpenAIBackend(f"http://127.0.0.1:{port}", max_retries=0)


# ------------------------------------------------------------------ text backbone


@pytest.fixture(scope="module")
def qwen3_backbone_dir(tmp_path_factory, lively_model_dir):
    """A tiny Qwen3ForCausalLM folder sharing the tiny tokenizer (and its chat template)."""
    import shutil

    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("qwen3-tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        shutil.copy(lively_model_dir / name, folder / name)
    vocab = len(AutoTokenizer.from_pretrained(str(folder)))
    config = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    return folder


def test_qwen3_text_backbone_scores_text_tasks_and_refuses_images(tmp_path, qwen3_backbone_dir):
    backbone = load_text_backbone(qwen3_backbone_dir, dtype="fp32")
    assert isinstance(backbone, TransformersTextBackend)
    data = mmlu_fixture(tmp_path / "mmlu", 3)
    result = evaluate("mmlu", data, backbone, settings=SHORT, role="text_backbone")
    assert (result.role, result.n_scored, result.model) == ("text_backbone", 3, qwen3_backbone_dir.name)
    with pytest.raises(BenchmarkError, match="text-only"):
        evaluate("chartqa", chartqa_fixture(tmp_path / "chartqa", 1), backbone)


def test_a_jvlm_folder_as_backbone_runs_through_the_engine(lively_model_dir):
    assert isinstance(load_text_backbone(lively_model_dir), InProcessBackend)


# ------------------------------------------------------------------------ reports


def result(task: str, percent: float, model: str = "vlm", role: str = "model") -> TaskResult:
    return TaskResult(task=task, model=model, metric="accuracy", score=percent, percent=percent,
                      n_samples=10, n_scored=10, role=role)


def test_summary_tables_languages_average_and_backbone(tmp_path):
    results = [result(f"mmmb_{lang}", 40.0 + i) for i, lang in enumerate(("ar", "zh", "en", "pt", "ru", "tr"))]
    results += [result("mmlu", 55.0), result("mmlu", 60.0, model="qwen3", role="text_backbone"),
                result("docvqa", 80.0)]
    markdown = summary_markdown(results)
    assert "| vlm | 40.0 | 41.0 | 42.0 | 43.0 | 44.0 | 45.0 | 42.5 |" in markdown  # ar zh en pt ru tr
    assert "| mmlu | 55.0 | 60.0 | -5.0 |" in markdown  # vision model, backbone, difference
    assert "| docvqa | accuracy | 80.0 | 10 | 90.6 |" in markdown  # beside the published number
    assert "| mmmb_ar |" not in markdown  # languages are in their own table, not the main one
    assert "VQA average for vlm: not computed, missing ai2d" in markdown
    paths = write_summary(results, tmp_path / "summary")
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = write_results(results, tmp_path / "r.json")
    assert {(r.task, r.model, r.role) for r in read_results([written])} == {(r.task, r.model, r.role) for r in results}


def test_vqa_average_needs_all_eight_benchmarks():
    from jvlm.eval.loaders import VQA_AVERAGE

    results = [result(task, 70.0 + i) for i, task in enumerate(VQA_AVERAGE)]
    assert "| **VQA average** | mean of 8 | 73.5 |" in summary_markdown(results)


def test_results_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"results": []}))
    with pytest.raises(BenchmarkError, match="not a jvlm eval results file"):
        read_results([path])


# ------------------------------------------------------------------------- server


@contextmanager
def running_server(model_dir: Path):
    """This project's server on a free loopback port, ready, until the block ends."""
    from serving import serve

    from jvlm.serve.app import ServerConfig

    with serve(ServerConfig(model_dir=model_dir, dtype="fp32")) as (url, _state):
        yield url
