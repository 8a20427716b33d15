"""Score a model on a benchmark, in this process or through an OpenAI-compatible server.

Examples:
  jvlm eval --task docvqa --data DocVQA/val/val_v1.0.json --model ./jina-vlm --out results/docvqa.json
  jvlm eval --task mmbench_ar --data mmbench_dev_ar.tsv --server http://127.0.0.1:8000 --limit 100
  jvlm eval --task mmlu --data mmlu/data/test --model ./jina-vlm --text-backbone ./Qwen3-1.7B
  jvlm eval --report results/*.json --summary results/summary

Answers are cached next to --out (<out>.answers.jsonl), so an interrupted run, or a run first
made with --limit, continues without asking the same questions again. In-process answers are
keyed by the model folder's files; server answers by URL and served model name, so after
changing the model behind a server use --no-cache or another --cache file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jvlm.cli.options import DTYPE_HELP, add_decode_options, dtype_arg


def add_parser(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]  # the examples and the caching note
    what = p.add_argument_group("what to evaluate")
    what.add_argument("--task", help="benchmark name (see --list-tasks)")
    what.add_argument("--data", help="the benchmark file (or folder, for MMLU) as distributed")
    what.add_argument("--image-root", default=None, help="folder of the benchmark's images, if not beside the file")
    what.add_argument("--limit", type=int, default=None,
                      help="only the first N questions (MMBench: N questions with all their rotations)")
    what.add_argument("--list-tasks", action="store_true", help="list the benchmark names and exit")

    who = p.add_argument_group("which model (one of --model / --server)")
    who.add_argument("--model", help="model folder, cached Hugging Face repo id or jvlm-demo, run in this process")
    who.add_argument("--server", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000")
    who.add_argument("--server-model", default=None, help="model name to ask the server for (default: its first)")
    who.add_argument("--api-key", default=None, help="API key for --server (default: $OPENAI_API_KEY)")
    who.add_argument("--concurrency", type=int, default=4, help="requests in flight with --server (default: 4)")
    who.add_argument("--text-backbone", default=None,
                     help="also score this text-only model folder (e.g. Qwen3-1.7B) on a text-only task")
    who.add_argument("--batch-size", type=int, default=8, help="questions generated together in-process (default: 8)")
    who.add_argument("--dtype", default=None, type=dtype_arg, metavar="DTYPE",
                     help=f"weight precision: {DTYPE_HELP} (default: the checkpoint's)")
    who.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    add_decode_options(who)

    how = p.add_argument_group("prompting")
    how.add_argument("--max-new-tokens", type=int, default=None, help="answer budget (default: per benchmark)")
    how.add_argument("--max-crops", type=int, default=None, help="image tiles (default: the model's)")
    how.add_argument("--system", default=None, help="system message for every question")
    how.add_argument("--instructions", choices=("native", "english"), default="native",
                     help="multilingual benchmarks: instruction in the question's language or in English")

    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, help="results JSON (default: jvlm-eval/<task>.json)")
    out.add_argument("--cache", default=None, help="answer cache JSONL (default: beside --out)")
    out.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    out.add_argument("--summary", default=None, metavar="DIR", help="write summary.md and summary.png here")
    out.add_argument("--report", nargs="+", default=[], metavar="RESULTS",
                     help="results files to include in --summary (alone: summarise without evaluating)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")


def _list_tasks() -> int:
    from jvlm.eval.loaders import BENCHMARKS

    width = max(map(len, BENCHMARKS))
    for name, spec in BENCHMARKS.items():
        print(f"{name:<{width}}  {spec.metric}")
    return 0


def _check(args: argparse.Namespace) -> None:
    from jvlm.eval.loaders import BENCHMARKS
    from jvlm.eval.report import TEXT_ONLY_TASKS

    def fail(message: str) -> None:
        raise SystemExit(f"jvlm eval: error: {message}")

    if args.task is None:
        if not args.report:
            fail("--task is required (or --report FILES with --summary DIR to summarise earlier runs)")
        if not args.summary:
            fail("--report only feeds a summary; add --summary DIR")
        return
    if args.task not in BENCHMARKS:
        fail(f"unknown task {args.task!r}; see jvlm eval --list-tasks")
    if not args.data:
        fail("--data is required: the benchmark file as distributed")
    if bool(args.model) == bool(args.server):
        fail("pass exactly one of --model DIR (in this process) or --server URL")
    if args.server and (args.quantize != "none" or args.kernels != "auto" or args.dtype):
        fail("--dtype, --quantize and --kernels choose how a model runs in this process; with --server, "
             "start the server with them (jvlm serve --quantize int4 ...)")
    if args.text_backbone and args.task not in TEXT_ONLY_TASKS:
        fail(f"--text-backbone compares text-only benchmarks ({', '.join(TEXT_ONLY_TASKS)}); {args.task} has images")
    for name in ("limit", "concurrency", "batch_size", "max_new_tokens", "max_crops"):
        value = getattr(args, name)
        if value is not None and value < 1:
            fail(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _line(result) -> str:
    from jvlm.eval.report import format_score

    role = " (text backbone)" if result.role == "text_backbone" else ""
    run = result.run
    cached = f", {run.get('n_cached', 0)} cached" if run.get("n_cached") else ""
    errors = f", {result.n_errors} refused" if result.n_errors else ""
    return (f"{result.task}  {result.model}{role}  {result.metric}: {format_score(result.score, result.task)}  "
            f"({result.n_scored} scored of {result.n_samples}{cached}{errors})")


def run(args: argparse.Namespace) -> int:
    if args.list_tasks:
        return _list_tasks()
    _check(args)
    from jvlm.eval.loaders import load_benchmark
    from jvlm.eval.prompts import PromptSettings
    from jvlm.eval.report import read_results, write_results, write_summary
    from jvlm.eval.runner import (
        AnswerCache,
        InProcessBackend,
        OpenAIBackend,
        evaluate,
        load_text_backbone,
    )

    results = read_results(args.report) if args.report else []
    if args.task is not None:
        out = Path(args.out or Path("jvlm-eval") / f"{args.task}.json")
        cache = None if args.no_cache else AnswerCache(args.cache or out.with_suffix(".answers.jsonl"))
        settings = PromptSettings(instructions=args.instructions, system=args.system,
                                  max_new_tokens=args.max_new_tokens, max_crops=args.max_crops)
        progress = not args.no_progress and sys.stderr.isatty()
        options = {"image_root": args.image_root} if args.image_root else {}
        samples = load_benchmark(args.task, args.data, **options)  # a bad file fails before any model loads
        if args.server:
            backend = OpenAIBackend(args.server, model=args.server_model, api_key=args.api_key,
                                    concurrency=args.concurrency)
        else:
            from jvlm.resolve import resolve_model

            folder = resolve_model(args.model).path  # a folder, a cached repo id, or jvlm-demo
            backend = InProcessBackend.from_folder(folder, dtype=args.dtype, device=args.device,
                                                   batch_size=args.batch_size, progress=progress,
                                                   quantize=args.quantize, kernels=args.kernels)
        run_results = [evaluate(args.task, samples, backend, limit=args.limit, settings=settings, cache=cache,
                                progress=progress)]
        if args.text_backbone:
            del backend  # free the vision model before loading the second one
            backbone = load_text_backbone(args.text_backbone, dtype=args.dtype, device=args.device,
                                          batch_size=args.batch_size)
            run_results.append(evaluate(args.task, samples, backbone, limit=args.limit, settings=settings,
                                        cache=cache, progress=progress, role="text_backbone"))
        write_results(run_results, out)
        for result in run_results:
            print(_line(result))
        print(f"results: {out}")
        results += run_results
    if args.summary:
        for path in write_summary(results, args.summary):
            print(f"summary: {path}")
    return 0
