"""Ask a question about one or more images, PDF pages, or no image at all.

Examples the bundled jvlm-demo answers correctly (images in examples/, see its model card):
  jvlm infer -i examples/shapes_en.png -p "What colour is the triangle?"          # blue
  jvlm infer -i examples/sign_tr.png -p "Tabelada ne yazıyor?" --json              # DUR
  jvlm infer -p "What is 6 × 7?" --stream                                          # 42
  jvlm infer -p "Translate “kırmızı” into English." --system "Answer in one word."  # red

Examples that need the released model (--model jinaai/jina-vlm, after `hf download jinaai/jina-vlm`):
  jvlm infer --model jinaai/jina-vlm -i photo.jpg -p "Describe this image"
  jvlm infer --model jinaai/jina-vlm -i report.pdf --pages 1-2 -p "Summarise the findings" --stream
  jvlm infer --model jinaai/jina-vlm -i https://example.com/receipt.jpg -p "What is the total?" --max-tokens 64
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from jvlm.cli.inputs import DEFAULT_MAX_PIXELS
from jvlm.cli.options import DTYPE_HELP, dtype_arg, nonempty_text, positive_int

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]  # the examples above
    p.add_argument("-i", "--image", action="append", default=[], metavar="IMG",
                   help="image file, http(s) URL or PDF; repeat for several images")
    p.add_argument("-p", "--prompt", required=True, type=nonempty_text, help="the question or instruction")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="a system prompt (instructions that hold for the whole answer)")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    p.add_argument("--model", default=None,
                   help="model folder or cached Hugging Face repo id (default: the bundled jvlm-demo)")
    p.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=positive_int, default=1024,
                   help="answer length limit in tokens (default 1024); --max-tokens is the OpenAI/mlx-vlm name")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same sampled answer")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop when this text appears")
    p.add_argument("--max-crops", type=int, default=None,
                   help="tiles per image, 1-12+ (default: the model's own; 12 for the release, 1 for jvlm-demo); "
                        "fewer = faster and fewer tokens")
    p.add_argument("--pages", default=None, help="PDF pages to read, e.g. 1-3,5 (default: all); only with a PDF")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"a larger image is downscaled to N pixels, with a notice (default {DEFAULT_MAX_PIXELS:,}; "
                        "0 = no limit)")
    p.add_argument("--dtype", default="auto", type=dtype_arg, metavar="DTYPE",
                   help=f"weight precision: {DTYPE_HELP} (default auto)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to run (default auto: CUDA, then Apple MPS, then CPU)")
    p.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: weight-only int8 decoder for faster CPU decoding")
    p.add_argument("--kernels", default="auto", choices=["auto", "torch"],
                   help="auto: on x86 CPUs with AVX2 or AVX-512 and on ARM64, decode with jvlm's streaming kernels (compiled once, "
                        "about a minute); torch: PyTorch's own kernels only")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: answer, reasoning, timings, tiles and visual tokens")
    p.add_argument("--hide-reasoning", action="store_true",
                   help="do not show a reasoning block (<think>...</think>) the model writes before its answer; "
                        "by default it goes to stderr and only the answer to stdout")


def run(args: argparse.Namespace) -> int:
    from jvlm.errors import JVLMError

    try:
        return _run(args)
    except BrokenPipeError:  # `jvlm infer ... | head`
        return 0
    except JVLMError:
        raise  # jvlm.cli.main prints it as one line
    except (ValueError, OSError, RuntimeError) as e:
        if getattr(args, "verbose", False):
            raise
        print(f"jvlm infer: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from jvlm.inference.prompt import check_max_crops
    from jvlm.inference.request import SamplingParams

    check_max_crops(args.max_crops)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed, stop=tuple(args.stop))
    t0 = time.perf_counter()
    images, sources = collect_images(args.image, args.pages, args.max_image_pixels)  # fail fast, before the weights
    engine, processor, resolved = load_engine(args.model, args.dtype, args.device, args.quantize,
                                              kernels=args.kernels,
                                              # the bar draws on stdout: only when it is a terminal
                                              progress=sys.stdout.isatty() and sys.stderr.isatty())
    from jvlm.notices import model_notice

    notice = model_notice(resolved)
    if notice:
        print(notice, file=sys.stderr)
    load_s = time.perf_counter() - t0

    from jvlm.inference.prompt import build_request

    t1 = time.perf_counter()
    prompt = args.prompt
    if args.system is not None:
        from jvlm.inference.prompt import user_message

        prompt = [{"role": "system", "content": args.system}, *user_message(args.prompt, len(images))]
    request = build_request(processor, prompt, images, max_crops=args.max_crops, params=params,
                            feature_cache=engine.feature_cache, context_length=engine.context_length)
    prepare_s = time.perf_counter() - t1

    from jvlm.inference.reasoning import ReasoningSplitter, split_reasoning

    result, splitter, shown = None, ReasoningSplitter(), {}
    for ev in engine.stream(request):
        if args.stream and ev.text:
            _show(*splitter.feed(ev.text), args, shown)
        if ev.finished:
            result = ev.result
    if args.stream:
        _show(*splitter.finish(), args, shown)
    reasoning, answer = split_reasoning(result.text)
    if args.json:
        print(json.dumps(report(result, reasoning, answer, request, sources, resolved, load_s, prepare_s),
                         ensure_ascii=False, indent=2))
    elif args.stream:
        print()
    else:
        _show(reasoning or "", answer, args, {})
        print()
    return 0


def _show(reasoning: str, answer: str, args: argparse.Namespace, shown: dict) -> None:
    """Reasoning to stderr (dimmed on a terminal), the answer to stdout; as JSON lines when streaming JSON.

    ``shown`` remembers, across streamed pieces, whether reasoning is on screen without its
    closing newline yet."""
    if args.json:
        if args.stream:
            for key, text in (("reasoning_delta", reasoning), ("delta", answer)):
                if text and not (key == "reasoning_delta" and args.hide_reasoning):
                    print(json.dumps({key: text}, ensure_ascii=False), flush=True)
        return
    if reasoning and not args.hide_reasoning:
        dim = sys.stderr.isatty()
        print(f"\033[2m{reasoning}\033[0m" if dim else reasoning, end="" if args.stream else "\n",
              file=sys.stderr, flush=True)
        shown["open"] = args.stream
    if answer:
        if shown.pop("open", False):
            print(file=sys.stderr, flush=True)
        print(answer, end="", flush=True)


def collect_images(specs: list[str], pages: str | None,
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list, list[str]]:
    """Each ``-i`` as image inputs (a PDF gives one per selected page) and a label for each.

    Every image is decoded once here, so a damaged file fails before the weights load; one
    above ``max_pixels`` is downscaled, with a notice on stderr. ``pages`` without any PDF
    among the inputs is an error, not silently ignored."""
    from jvlm.cli.inputs import check_image
    from jvlm.inference.documents import expand_bytes, expand_document

    images, sources, saw_pdf = [], [], False
    for spec in specs:
        if spec.startswith(("http://", "https://")):
            items = expand_bytes(fetch_url(spec), pages, name=spec)
        else:
            items = expand_document(spec, pages)
        for page, item in items:
            saw_pdf = saw_pdf or page is not None
            if isinstance(item, bytes):
                item, downscaled = check_image(item, spec, max_pixels)
                if downscaled is not None:
                    print(downscaled.notice(), file=sys.stderr)
            images.append(item)
            sources.append(spec if page is None else f"{spec}#page={page}")
    if pages is not None and not saw_pdf:
        from jvlm.errors import InvalidImageError

        named = ", ".join(specs) if specs else "no -i at all"
        raise InvalidImageError(f"--pages {pages} selects pages of a PDF, but no input is a PDF ({named}); "
                                "drop --pages, or pass the PDF with -i")
    return images, sources


def fetch_url(url: str) -> bytes:
    """Download an image or PDF the user named on their own command line, through the one
    media fetcher under its local policy (their network is allowed, link-local cloud metadata
    is not; time, size and redirects are bounded)."""
    from dataclasses import replace

    from jvlm.errors import InvalidImageError
    from jvlm.media import LOCAL_POLICY, MediaError, fetch_media

    try:
        return fetch_media(url, replace(LOCAL_POLICY, accept_pdf=True))
    except MediaError as e:
        raise InvalidImageError(str(e)) from None


def load_engine(model: str | None, dtype: str, device: str, quantize: str = "none", kernels: str = "auto",
                progress: bool = False):
    """(engine, processor, resolved model) with the feature and prefix caches on."""
    from jvlm.inference.engine import Engine
    from jvlm.inference.feature_cache import FeatureCache, PrefixCache
    from jvlm.loading import load, resolve_device
    from jvlm.resolve import resolve_model

    resolved = resolve_model(model)
    dev = resolve_device(device)
    model_obj, processor = load(resolved.path, dtype=None if dtype == "auto" else dtype, device=dev,
                                progress=progress)
    from jvlm.inference.quantize import quantize_decoder_int8, use_cpu_kernels

    if quantize == "int8":
        quantize_decoder_int8(model_obj, own_kernels=kernels == "auto")
    elif kernels == "auto":
        use_cpu_kernels(model_obj)
    engine = Engine(model_obj, processor, feature_cache=FeatureCache(), prefix_cache=PrefixCache())
    return engine, processor, resolved


def report(result, reasoning: str | None, answer: str, request, sources: list[str], resolved, load_s: float,
           prepare_s: float) -> dict:
    """The ``--json`` object: ``result.text`` already split into ``reasoning`` and ``answer``."""
    images = [{"source": src, "tiles": list(im.tiling), "crops": im.n_crops, "visual_tokens": im.n_tokens}
              for src, im in zip(sources, request.images)]
    return {
        "answer": answer,
        "reasoning": reasoning,
        "finish_reason": result.finish_reason,
        "model": resolved.name,
        "model_is_random": resolved.is_random,
        "usage": {"prompt_tokens": result.prompt_tokens, "image_tokens": result.image_tokens,
                  "completion_tokens": result.completion_tokens},
        "timings": {"load_s": round(load_s, 3), "prepare_s": round(prepare_s, 3),
                    "time_to_first_token_s": round(prepare_s + result.time_to_first_token_s, 3),
                    "tokens_per_s": round(result.decode_tokens_per_s, 2), "total_s": round(prepare_s + result.total_s, 3),
                    "vision_s": round(result.stats.get("vision_s", 0.0), 3),
                    "prefill_s": round(result.stats.get("prefill_s", 0.0), 3)},
        "images": images,
    }
