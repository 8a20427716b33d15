"""Load test of ``jvlm serve``: many concurrent streaming clients against a real server.

Not a test: it runs for minutes. It starts ``jvlm serve`` in a subprocess on loopback (the
tiny random model unless ``--model`` is given), then:

1. **load**: ``--clients`` streaming clients (default 32) send chat completions back to back
   for ``--duration`` seconds (default 60); reported: requests/s, tokens/s, p50/p99 time to
   first token and total latency, errors by kind (503 ``server_overloaded`` counted apart,
   since shedding load is intended);
2. **batching speed-up**: ``--speedup-clients`` clients (default 8) against a server with
   ``--max-batch 8`` and against one with ``--max-batch 1`` (one request at a time), in
   alternating rounds; the ratio of requests/s is the gain from batching.

    python bench/bench_server.py                          # the full run (~3 min)
    python bench/bench_server.py --duration 10 --speedup-duration 10 --out server.json

Every request is a short text prompt asking for ``--max-tokens`` tokens (random weights never
say end-of-turn early, so every answer has that many tokens and runs are comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx

API_KEY = "bench-key"


# ----------------------------------------------------------------------------- server process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(folder: Path) -> Path:
    from jvlm.random_model import write_random_checkpoint

    if not (folder / "config.json").exists():
        write_random_checkpoint(folder, "tiny", seed=0)
    return folder


@contextmanager
def running_server(model: Path, *extra: str, torch_threads: int = 1, ready_timeout_s: float = 120.0):
    """``jvlm serve`` in a subprocess; yields its base URL once ``/ready`` answers 200."""
    with running_server_process(model, *extra, torch_threads=torch_threads, ready_timeout_s=ready_timeout_s) as (
            base, _proc):
        yield base


@contextmanager
def running_server_process(model: Path, *extra: str, torch_threads: int = 1, ready_timeout_s: float = 120.0,
                           api_key: str | None = API_KEY):
    """``jvlm serve`` in a subprocess; yields (base URL, process) once ``/ready`` answers 200."""
    port = free_port()
    key = ["--api-key", api_key] if api_key else []
    cmd = [sys.executable, "-m", "jvlm", "serve", "--model", str(model), "--port", str(port), *key,
           "--log-level", "warning", "--torch-threads", str(torch_threads), *extra]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
                try:
                    if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after {ready_timeout_s:g} s")
                time.sleep(0.1)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


# ----------------------------------------------------------------------------- clients

async def one_request(client: httpx.AsyncClient, base: str, i: int, max_tokens: int) -> dict:
    """One streaming completion; returns timings and how it ended."""
    body = {"messages": [{"role": "user", "content": f"Request {i}: describe the weather in five words."}],
            "max_tokens": max_tokens, "stream": True, "temperature": 0}
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                payload = json.loads(await r.aread() or b"{}")
                code = (payload.get("error") or {}).get("code") or str(r.status_code)
                return {"ok": False, "kind": f"{r.status_code} {code}", "latency_s": time.perf_counter() - t0}
            done = False
            buffer = b""
            # raw bytes split on the blank line that ends each event: the clients share the
            # machine with the server, so they do as little per token as they can (no text
            # decoding or line splitting, JSON parsed only for errors)
            async for data in r.aiter_raw():
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for ev in events:
                    if ev == b"data: [DONE]":
                        done = True
                    elif ev.startswith(b'data: {"error"'):
                        return {"ok": False, "kind": f"stream {json.loads(ev[6:])['error'].get('code')}",
                                "latency_s": time.perf_counter() - t0}
                    elif b'"content":"' in ev and b'"content":""' not in ev:
                        tokens += 1
                        if ttft is None:
                            ttft = time.perf_counter() - t0
            if not done:
                return {"ok": False, "kind": "stream ended without [DONE]", "latency_s": time.perf_counter() - t0}
    except httpx.HTTPError as exc:
        return {"ok": False, "kind": type(exc).__name__, "latency_s": time.perf_counter() - t0}
    return {"ok": True, "ttft_s": ttft if ttft is not None else time.perf_counter() - t0,
            "latency_s": time.perf_counter() - t0, "chunks": tokens}


async def load(base: str, clients: int, duration_s: float, max_tokens: int) -> dict:
    """``clients`` loops sending requests back to back until ``duration_s`` has passed."""
    results: list[dict] = []
    stop_at = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits,
                                 headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        async def loop(worker: int) -> None:
            n = 0
            while time.perf_counter() < stop_at:
                results.append(await one_request(client, base, worker * 100_000 + n, max_tokens))
                n += 1
                if not results[-1]["ok"] and results[-1]["kind"].startswith("503"):
                    await asyncio.sleep(0.5)  # shed load is retried later, as Retry-After asks

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    return summarize(results, wall, clients)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summarize(results: list[dict], wall_s: float, clients: int) -> dict:
    ok = [r for r in results if r["ok"]]
    ttft = [r["ttft_s"] for r in ok]
    latency = [r["latency_s"] for r in ok]
    kinds = Counter(r["kind"] for r in results if not r["ok"])
    overloaded = sum(n for k, n in kinds.items() if "server_overloaded" in k)
    return {
        "clients": clients, "wall_s": round(wall_s, 2), "requests_ok": len(ok),
        "requests_per_s": round(len(ok) / wall_s, 3),
        "chunks_per_s": round(sum(r["chunks"] for r in ok) / wall_s, 1),
        "ttft_p50_s": _round(_pct(ttft, 0.5)), "ttft_p99_s": _round(_pct(ttft, 0.99)),
        "latency_p50_s": _round(_pct(latency, 0.5)), "latency_p99_s": _round(_pct(latency, 0.99)),
        "latency_mean_s": _round(statistics.fmean(latency) if latency else None),
        "overloaded_503": overloaded, "errors": sum(kinds.values()) - overloaded,
        "errors_by_kind": dict(kinds),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def scrape(base: str, prefix: str = "jvlm_batch_size") -> dict[str, float]:
    text = httpx.get(f"{base}/metrics").text
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(prefix)}


def speedup(model: Path, args) -> dict:
    """Requests/s of a batching server over a one-at-a-time server, same clients and load.

    Both servers run side by side and take turns, several short rounds each, so a change in
    what else the machine is doing affects both alike.
    """
    rounds = max(1, args.speedup_rounds)
    per_round = args.speedup_duration / rounds
    parts: dict[str, list[dict]] = {"batched": [], "one_at_a_time": []}
    threads = args.torch_threads
    with running_server(model, "--max-batch", str(args.speedup_clients), torch_threads=threads) as batched, \
            running_server(model, "--max-batch", "1", torch_threads=threads) as single:
        for base in (batched, single):
            asyncio.run(load(base, 2, 3.0, args.max_tokens))  # warm-up
        for _ in range(rounds):
            for label, base in (("batched", batched), ("one_at_a_time", single)):
                parts[label].append(asyncio.run(load(base, args.speedup_clients, per_round, args.max_tokens)))
    out: dict = {"clients": args.speedup_clients, "rounds": rounds}
    for label, runs in parts.items():
        wall = sum(r["wall_s"] for r in runs)
        ok = sum(r["requests_ok"] for r in runs)
        out[label] = {"requests_per_s": round(ok / wall, 3), "requests_ok": ok, "wall_s": round(wall, 1),
                      "ttft_p50_s": statistics.median(r["ttft_p50_s"] for r in runs),
                      "errors": sum(r["errors"] for r in runs)}
    out["speedup_requests_per_s"] = round(out["batched"]["requests_per_s"]
                                          / max(out["one_at_a_time"]["requests_per_s"], 1e-9), 2)
    return out


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the tiny random model)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of the load phase")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16, help="server --max-batch in the load phase")
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--speedup-clients", type=int, default=8)
    ap.add_argument("--speedup-duration", type=float, default=60.0, help="seconds per server, all rounds")
    ap.add_argument("--speedup-rounds", type=int, default=4)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="server --torch-threads (default 1: the tiny model's matrices are too small to "
                         "gain from more, and a busy machine makes extra threads wait on each other)")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--skip-speedup", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    args = ap.parse_args()

    model = args.model or tiny_model(Path(tempfile.gettempdir()) / "jvlm-bench-tiny")
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_average": os.getloadavg()},
                    "model": str(model), "max_tokens": args.max_tokens, "torch_threads": args.torch_threads}
    if not args.skip_load:
        with running_server(model, "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue),
                            torch_threads=args.torch_threads) as base:
            asyncio.run(load(base, 2, 3.0, args.max_tokens))  # warm-up
            report["load"] = asyncio.run(load(base, args.clients, args.duration, args.max_tokens))
            batch = scrape(base)
            steps = max(batch["jvlm_batch_size_count"], 1)
            report["load"]["mean_batch_size"] = round(batch["jvlm_batch_size_sum"] / steps, 2)
        print(json.dumps({"load": report["load"]}, indent=2), flush=True)
    if not args.skip_speedup:
        report["speedup"] = speedup(model, args)
        print(json.dumps({"speedup": report["speedup"]}, indent=2), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    errors = report.get("load", {}).get("errors", 0) + sum(
        report.get("speedup", {}).get(k, {}).get("errors", 0) for k in ("batched", "one_at_a_time"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
