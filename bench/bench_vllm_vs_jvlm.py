"""``jvlm serve`` and vLLM (CPU build, with the jvlm plugin) under the same load.

Not a test. Both servers load the same checkpoint (default: the tiny checkpoint of
``jvlm.tools.vllm_checkpoint``, which vLLM's CPU kernels accept) and run side by side;
they take turns, ``--rounds`` short rounds each, so what else the machine is doing affects
both alike. In every round ``--clients`` streaming clients send chat completions back to back:
three text-only questions for every question about an image (4 images in rotation, so both
servers' image caches see the same hits), each question numbered so no whole prompt repeats.
Reported per server: requests/s, streamed chunks/s, p50/p99 time to first chunk and latency,
errors.

    python bench/bench_vllm_vs_jvlm.py                       # 8 clients, 3 x 20 s per server
    python bench/bench_vllm_vs_jvlm.py --clients 16 --rounds 4 --duration 120 --out vs.json

Needs vLLM's environment (``bash scripts/install_vllm.sh``). vLLM pins itself to one core and
keeps the other for its front end here; ``jvlm serve`` gets ``--torch-threads 1`` to match.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_server import API_KEY, running_server, summarize  # noqa: E402
from vllm_server import vllm_server  # noqa: E402

SERVED = "jvlm-tiny"


def image_urls(n: int = 4) -> list[str]:
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def body(i: int, images: list[str], max_tokens: int) -> dict:
    if i % 4 == 3:
        content = [{"type": "image_url", "image_url": {"url": images[(i // 4) % len(images)]}},
                   {"type": "text", "text": f"Question {i}: what is in the image?"}]
    else:
        content = f"Question {i}: describe the weather in five words."
    return {"model": SERVED, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}


async def one_request(client: httpx.AsyncClient, base: str, payload: dict) -> dict:
    t0 = time.perf_counter()
    ttft, chunks, done = None, 0, False
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=payload) as r:
            if r.status_code != 200:
                await r.aread()
                return {"ok": False, "kind": str(r.status_code), "latency_s": time.perf_counter() - t0}
            buffer = b""
            async for data in r.aiter_raw():
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for ev in events:
                    if ev.strip() == b"data: [DONE]":
                        done = True
                    elif ev.startswith(b'data: {"error"'):
                        return {"ok": False, "kind": "stream error", "latency_s": time.perf_counter() - t0}
                    elif b'"content":"' in ev and b'"content":""' not in ev:
                        chunks += 1
                        ttft = ttft if ttft is not None else time.perf_counter() - t0
    except httpx.HTTPError as exc:
        return {"ok": False, "kind": type(exc).__name__, "latency_s": time.perf_counter() - t0}
    if not done:
        return {"ok": False, "kind": "no [DONE]", "latency_s": time.perf_counter() - t0}
    return {"ok": True, "ttft_s": ttft if ttft is not None else time.perf_counter() - t0,
            "latency_s": time.perf_counter() - t0, "chunks": chunks}


async def load(base: str, clients: int, duration_s: float, max_tokens: int, images: list[str],
               first_id: int) -> dict:
    results: list[dict] = []
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        async def loop(worker: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                i = first_id + worker * 10_000 + n
                results.append(await one_request(client, base, body(i, images, max_tokens)))
                n += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    return summarize(results, wall, clients)


def combine(runs: list[dict]) -> dict:
    wall = sum(r["wall_s"] for r in runs)
    ok = sum(r["requests_ok"] for r in runs)
    chunks = sum(r["chunks_per_s"] * r["wall_s"] for r in runs)
    return {"requests_ok": ok, "wall_s": round(wall, 1), "requests_per_s": round(ok / wall, 3),
            "chunks_per_s": round(chunks / wall, 1),
            "ttft_p50_s": round(statistics.median(r["ttft_p50_s"] for r in runs), 3),
            "ttft_p99_s": round(max(r["ttft_p99_s"] for r in runs), 3),
            "latency_p50_s": round(statistics.median(r["latency_p50_s"] for r in runs), 3),
            "latency_p99_s": round(max(r["latency_p99_s"] for r in runs), 3),
            "errors": sum(r["errors"] for r in runs),
            "errors_by_kind": dict(sum((Counter(r["errors_by_kind"]) for r in runs), Counter()))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the tiny vLLM test checkpoint)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load per server, all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    args = ap.parse_args()

    if args.model is None:
        from jvlm.tools.vllm_checkpoint import write_vllm_test_checkpoint

        args.model = Path(tempfile.gettempdir()) / "jvlm-bench-vllm-tiny"
        if not (args.model / "config.json").exists():
            write_vllm_test_checkpoint(args.model)
    images = image_urls()
    per_round = args.duration / max(1, args.rounds)
    runs: dict[str, list[dict]] = {"jvlm serve": [], "vllm": []}
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_average_before": os.getloadavg()},
                    "model": str(args.model), "clients": args.clients, "max_tokens": args.max_tokens,
                    "rounds": args.rounds}
    with running_server(args.model, "--max-batch", str(args.clients), "--served-model-name", SERVED,
                        torch_threads=1) as jvlm_base, vllm_server(args.model, served_name=SERVED) as vllm_base:
        bases = {"jvlm serve": jvlm_base, "vllm": vllm_base}
        for base in bases.values():  # warm-up: first image, first batch
            asyncio.run(load(base, 2, 5.0, args.max_tokens, images, 10**8))
        for r in range(args.rounds):
            for label, base in bases.items():
                runs[label].append(asyncio.run(load(base, args.clients, per_round, args.max_tokens, images,
                                                    r * 10**6)))
    report["machine"]["load_average_after"] = os.getloadavg()
    for label, rs in runs.items():
        report[label] = combine(rs)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(report[k]["errors"] for k in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
