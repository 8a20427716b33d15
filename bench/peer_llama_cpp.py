"""llama.cpp as a peer in the inference benchmark.

Measures llama.cpp's prefill and decode speed on a Qwen3-shaped decoder with random weights, in the
GGUF formats BF16, Q8_0 and Q4_K_M, with llama.cpp's own `llama-bench`. Random weights make no
difference to the speed of a dense decoder, and need no download.

Steps (each cached):
  1. a random-weight transformers Qwen3ForCausalLM of the given dimensions is saved in bf16, with a
     tiny SentencePiece tokenizer (the converter accepts a `tokenizer.model` for Qwen3 without the
     BPE pre-tokenizer fingerprint check that a made-up BPE tokenizer fails);
  2. llama.cpp's convert_hf_to_gguf.py turns it into a BF16 GGUF;
  3. llama-quantize makes the Q8_0 and Q4_K_M GGUFs from it;
  4. `llama-bench -m <gguf> -p <prompt> -n <gen> -t <threads> -r <reps> -o json` runs per format.

The tools come from `bash scripts/build_llama_cpp.sh` (found through JVLM_LLAMA_CPP=<build folder>,
else the newest build under ${JVLM_CACHE:-~/.cache/jvlm}/llama.cpp/). Without them, run() returns
{"skipped": "..."} instead of raising.

Steps 1-2 run in the converter's interpreter named by the build (it has torch and transformers);
this module itself imports only the standard library at load time.

    python bench/peer_llama_cpp.py --quick --threads 2
    python bench/peer_llama_cpp.py --prompt 1765 --gen 64 --threads 2       # Qwen3-1.7B dimensions
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD_COMMAND = "bash scripts/build_llama_cpp.sh"
DEFAULT_QUANTS = ("BF16", "Q8_0", "Q4_K_M")

# The decoder of Qwen3-1.7B.
QWEN3_1_7B = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 40960,
}
DECODER_KEYS = tuple(QWEN3_1_7B)


def _cache_root() -> Path:
    return Path(os.environ.get("JVLM_CACHE") or Path.home() / ".cache" / "jvlm")


def _version_key(name: str):
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", name))


def _read_build(folder: Path) -> dict | None:
    """The tools of one build folder, or None when it lacks llama-bench or llama-quantize."""
    manifest = folder / "manifest.json"
    info = json.loads(manifest.read_text()) if manifest.is_file() else {}
    bin_dir = Path(info.get("bin") or folder / "bin")
    bench, quantize = bin_dir / "llama-bench", bin_dir / "llama-quantize"
    if not (os.access(bench, os.X_OK) and os.access(quantize, os.X_OK)):
        return None
    convert = info.get("convert_hf_to_gguf")
    if not convert or not Path(convert).is_file():
        hits = [p for p in (folder / "convert_hf_to_gguf.py",
                            folder / "src" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py") if p.is_file()]
        convert = str(hits[0]) if hits else None
    if convert is None:
        return None
    py = info.get("python")
    if not py or not os.access(py, os.X_OK):
        py = sys.executable
    return {
        "folder": str(folder),
        "llama_bench": str(bench),
        "llama_quantize": str(quantize),
        "convert_hf_to_gguf": convert,
        "python": py,
        "llama_cpp_python_version": info.get("llama_cpp_python_version"),
        "llama_cpp_commit": info.get("llama_cpp_commit"),
        "cmake_flags": info.get("cmake_flags", []),
        "native_isa": info.get("native_isa", []),
        "compiler": info.get("compiler", ""),
    }


def find_build() -> tuple[dict | None, str]:
    """(tools, "") or (None, why not)."""
    env = os.environ.get("JVLM_LLAMA_CPP")
    if env:
        build = _read_build(Path(env))
        if build is None:
            return None, (f"JVLM_LLAMA_CPP={env} has no bin/llama-bench, bin/llama-quantize and "
                          f"convert_hf_to_gguf.py; build them with: {BUILD_COMMAND}")
        return build, ""
    root = _cache_root() / "llama.cpp"
    folders = sorted((p for p in root.glob("*") if (p / "manifest.json").is_file()),
                     key=lambda p: _version_key(p.name), reverse=True) if root.is_dir() else []
    for folder in folders:
        build = _read_build(folder)
        if build is not None:
            return build, ""
    return None, (f"llama.cpp tools not found under {root} (nor JVLM_LLAMA_CPP set); "
                  f"build them with: {BUILD_COMMAND}")


def _decoder_dims(decoder: dict) -> dict:
    missing = [k for k in DECODER_KEYS if k not in decoder]
    if missing:
        raise ValueError(f"decoder lacks {missing}")
    return {k: decoder[k] for k in DECODER_KEYS}


# ---------------------------------------------------------------------------------------------------
# Step 1, run in the converter's interpreter: a random-weight Qwen3 checkpoint with a tiny tokenizer.

def _tiny_sentencepiece(out_dir: Path) -> None:
    """A 64-piece SentencePiece BPE model: the smallest tokenizer the converter takes for Qwen3."""
    import sentencepiece as spm

    words = ["the", "a", "cat", "dog", "sat", "on", "mat", "runs", "fast", "slow", "red", "blue",
             "image", "text", "token", "model", "1", "2", "3", "."]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(200)]
    prefix = out_dir / "spm"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=64, model_type="bpe",
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    (out_dir / "spm.model").rename(out_dir / "tokenizer.model")
    (out_dir / "spm.vocab").unlink()


def make_checkpoint(decoder: dict, out_dir: str, seed: int = 0) -> None:
    """Save a bf16 Qwen3ForCausalLM with N(0, 0.02) weights (norms 1) and a tiny tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    d = _decoder_dims(decoder)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = Qwen3Config(**d, bos_token_id=1, eos_token_id=2, pad_token_id=None, use_cache=True)
    cfg.dtype = torch.bfloat16
    # Built on the meta device, allocated once in bf16, filled directly: no default init pass.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = Qwen3ForCausalLM(cfg)
        model = model.to_empty(device="cpu")
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.tie_weights()
    # Non-persistent buffers (rotary frequencies) were left uninitialised by to_empty: rebuild them.
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=cfg)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="20GB")
    _tiny_sentencepiece(out)
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": False}))


# ---------------------------------------------------------------------------------------------------
# Steps 2-4.

def _run(cmd: list[str], what: str, log: Path) -> None:
    with open(log, "ab") as f:
        f.write(("\n$ " + " ".join(cmd) + "\n").encode())
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))


def _model_key(dims: dict, seed: int, build: dict) -> str:
    blob = json.dumps({"dims": dims, "seed": seed, "commit": build.get("llama_cpp_commit"),
                       "version": build.get("llama_cpp_python_version")}, sort_keys=True)
    d = dims
    name = (f"qwen3-h{d['hidden_size']}-i{d['intermediate_size']}-l{d['num_hidden_layers']}"
            f"-v{d['vocab_size']}")
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def prepare_ggufs(build: dict, dims: dict, quants, workdir: Path, threads: int, seed: int = 0,
                  say=lambda s: None) -> dict:
    """{quant: path of its GGUF}, made when absent. The BF16 GGUF is the source of the others."""
    folder = workdir / _model_key(dims, seed, build)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "decoder.json").write_text(json.dumps(dims, indent=2))
    log = folder / "prepare.log"
    bf16 = folder / "model-BF16.gguf"
    if not bf16.is_file():
        with tempfile.TemporaryDirectory(dir=folder, prefix="hf-") as hf:
            t0 = time.time()
            say(f"writing a random-weight Qwen3 checkpoint ({dims['num_hidden_layers']} layers)")
            _run([build["python"], os.path.abspath(__file__), "--make-checkpoint", json.dumps(dims),
                  hf, "--seed", str(seed)], "making the checkpoint", log)
            say(f"converting it to GGUF BF16 ({time.time() - t0:.0f} s so far)")
            tmp = folder / "model-BF16.gguf.tmp"
            _run([build["python"], build["convert_hf_to_gguf"], hf, "--outtype", "bf16",
                  "--outfile", str(tmp)], "convert_hf_to_gguf.py", log)
            tmp.rename(bf16)
            say(f"BF16 GGUF ready in {time.time() - t0:.0f} s")
    paths = {}
    for q in quants:
        path = folder / f"model-{q}.gguf"
        if q.upper() != "BF16" and not path.is_file():
            t0 = time.time()
            say(f"quantizing to {q}")
            tmp = folder / f"model-{q}.gguf.tmp"
            _run([build["llama_quantize"], str(bf16), str(tmp), q, str(threads)], f"llama-quantize {q}", log)
            tmp.rename(path)
            say(f"{q} ready in {time.time() - t0:.0f} s")
        paths[q] = path
    return paths


def llama_bench(build: dict, gguf: Path, threads: int, prompt_tokens: int, gen_tokens: int,
                repetitions: int, depth: int = 0) -> list[dict]:
    cmd = [build["llama_bench"], "-m", str(gguf), "-p", str(prompt_tokens), "-n", str(gen_tokens),
           "-t", str(threads), "-r", str(repetitions), "-o", "json"]
    if depth:
        cmd += ["-d", str(depth)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           + "\n".join(proc.stderr.splitlines()[-25:]))
    return json.loads(proc.stdout)


_BUILD_FIELDS = ("build_commit", "build_number", "cpu_info", "gpu_info", "backends",
                 "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v")


def run(decoder: dict, threads: int, prompt_tokens: int, gen_tokens: int, quants=DEFAULT_QUANTS,
        workdir=None, repetitions: int = 3, decode_depth: int = 0, seed: int = 0,
        verbose: bool = False, bandwidth=None) -> dict:
    """Benchmark llama.cpp on a random-weight Qwen3 decoder of the given dimensions.

    Returns {"llama_cpp": {...}, "threads", "prompt_tokens", "gen_tokens", "decoder",
             "quants": {quant: {"prefill_tok_s", "prefill_tok_s_std", "decode_ms_per_token",
                                "decode_tok_s", "gguf_bytes", "build_commit", "build_number",
                                "backends", "cpu_info", "build_flags", ...}}}
    or {"skipped": reason} when the llama.cpp tools are not built.
    decode_depth > 0 adds a decode run after that many context tokens ("decode_ms_per_token_at_depth").
    ``bandwidth``: a function returning the read bandwidth now (GB/s), called just before and
    just after each quant's run, kept as "read_gbps_around" [before, after]: on a shared host
    bandwidth moves within minutes, and decode follows it, so a row is read with the
    conditions it ran in (two readings around a run of a minute or more bound nothing).
    """
    build, why = find_build()
    if build is None:
        return {"skipped": why}
    dims = _decoder_dims(decoder)
    quants = tuple(q.upper() for q in quants)
    workdir = Path(workdir) if workdir else Path(build["folder"]) / "gguf"
    say = (lambda s: print(f"llama_cpp: {s}", file=sys.stderr, flush=True)) if verbose else (lambda s: None)
    paths = prepare_ggufs(build, dims, quants, workdir, threads, seed=seed, say=say)
    build_flags = list(build["cmake_flags"])
    if build["native_isa"]:
        build_flags.append("native ISA: " + " ".join(build["native_isa"]))
    if build["compiler"]:
        build_flags.append(build["compiler"])
    out = {
        "llama_cpp": {"commit": build["llama_cpp_commit"],
                      "llama_cpp_python_version": build["llama_cpp_python_version"],
                      "folder": build["folder"], "build_flags": build_flags},
        "threads": threads, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
        "repetitions": repetitions, "decoder": dims, "quants": {},
    }
    for q in quants:
        say(f"llama-bench {q}: -p {prompt_tokens} -n {gen_tokens} -t {threads} -r {repetitions}")
        t0 = time.time()
        before = bandwidth() if bandwidth else None
        records = llama_bench(build, paths[q], threads, prompt_tokens, gen_tokens, repetitions)
        after = bandwidth() if bandwidth else None
        pp = next((r for r in records if r["n_prompt"] > 0 and r["n_gen"] == 0), None)
        tg = next((r for r in records if r["n_gen"] > 0 and r["n_prompt"] == 0), None)
        entry = {
            "prefill_tok_s": pp["avg_ts"] if pp else None,
            "prefill_tok_s_std": pp["stddev_ts"] if pp else None,
            "decode_ms_per_token": 1000.0 / tg["avg_ts"] if tg else None,
            "decode_tok_s": tg["avg_ts"] if tg else None,
            "decode_tok_s_std": tg["stddev_ts"] if tg else None,
            "gguf_bytes": paths[q].stat().st_size,
            "gguf": str(paths[q]),
            "model_type": records[0].get("model_type"),
            "model_n_params": records[0].get("model_n_params"),
            "build_flags": build_flags,
        }
        if bandwidth:
            entry["read_gbps_around"] = [before, after]
        entry.update({k: records[0].get(k) for k in _BUILD_FIELDS})
        if decode_depth and gen_tokens:
            say(f"llama-bench {q}: decode after {decode_depth} context tokens")
            deep = llama_bench(build, paths[q], threads, 0, gen_tokens, repetitions, depth=decode_depth)
            entry["decode_depth"] = decode_depth
            entry["decode_ms_per_token_at_depth"] = 1000.0 / deep[0]["avg_ts"]
        say(f"llama-bench {q} took {time.time() - t0:.0f} s")
        out["quants"][q] = entry
    return out


def format_table(result: dict) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    lc = result["llama_cpp"]
    rows = [f"llama.cpp {lc['commit']} (llama-cpp-python {lc['llama_cpp_python_version']}), "
            f"{result['threads']} threads, prompt {result['prompt_tokens']}, gen {result['gen_tokens']}, "
            f"{result['decoder']['num_hidden_layers']} layers, reps {result['repetitions']}"]
    first = next(iter(result["quants"].values()), {})
    rows.append(f"cpu: {first.get('cpu_info')}; backends: {first.get('backends')}")
    rows.append(f"build: {' '.join(lc['build_flags'])}")
    deep = any("decode_ms_per_token_at_depth" in e for e in result["quants"].values())
    head = f"{'quant':8} {'GGUF MB':>9} {'prefill tok/s':>14} {'decode ms/tok':>14}"
    if deep:
        head += f" {'decode ms/tok @ctx':>19}"
    rows += [head, "-" * len(head)]
    for q, e in result["quants"].items():
        pf = f"{e['prefill_tok_s']:.1f}" if e["prefill_tok_s"] is not None else "-"
        dc = f"{e['decode_ms_per_token']:.1f}" if e["decode_ms_per_token"] is not None else "-"
        line = f"{q:8} {e['gguf_bytes'] / 1e6:9.1f} {pf:>14} {dc:>14}"
        if deep:
            line += f" {e.get('decode_ms_per_token_at_depth', float('nan')):19.1f}"
        rows.append(line)
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark llama.cpp (llama-bench) on a random-weight Qwen3 decoder in GGUF "
                    "BF16 / Q8_0 / Q4_K_M, as a peer of jvlm's own inference benchmark. "
                    f"Needs the tools from `{BUILD_COMMAND}` (or JVLM_LLAMA_CPP=<build folder>). "
                    "The GGUFs are cached per decoder shape in <build folder>/gguf (or --workdir).",
        epilog="Defaults are Qwen3-1.7B's decoder (28 layers, hidden 2048, vocab 151936). Prefill is "
               "llama-bench's pp test (prompt tokens/s); decode is its tg test (ms per generated token, "
               "from an empty context unless --decode-depth is given).")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens for prefill (default 1765; 256 with --quick)")
    ap.add_argument("--gen", type=int, default=64, help="generated tokens for decode (default 64)")
    ap.add_argument("--quick", action="store_true", help="4 layers and a 256-token prompt: a fast check")
    ap.add_argument("--layers", type=int, default=None, help="override the number of decoder layers")
    ap.add_argument("--quants", default=",".join(DEFAULT_QUANTS),
                    help="comma-separated GGUF types (default BF16,Q8_0,Q4_K_M; any llama-quantize type)")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions (default 3)")
    ap.add_argument("--decode-depth", type=int, default=0,
                    help="also time decode after this many context tokens (e.g. the prompt length)")
    ap.add_argument("--workdir", default=None, help="where GGUFs are cached")
    ap.add_argument("--json", action="store_true", help="print the full result as JSON too")
    ap.add_argument("--make-checkpoint", nargs=2, metavar=("DIMS_JSON", "OUT_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.make_checkpoint:
        make_checkpoint(json.loads(args.make_checkpoint[0]), args.make_checkpoint[1], seed=args.seed)
        return 0

    decoder = dict(QWEN3_1_7B)
    if args.quick:
        decoder["num_hidden_layers"] = 4
    if args.layers:
        decoder["num_hidden_layers"] = args.layers
    prompt = args.prompt if args.prompt is not None else (256 if args.quick else 1765)
    quants = tuple(q.strip() for q in args.quants.split(",") if q.strip())
    result = run(decoder, args.threads, prompt, args.gen, quants=quants, workdir=args.workdir,
                 repetitions=args.reps, decode_depth=args.decode_depth, seed=args.seed, verbose=True)
    print(format_table(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
