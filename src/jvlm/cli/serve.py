"""Run the OpenAI-compatible HTTP server (chat completions with images, streaming, metrics).

Examples:
  jvlm serve                                   # the bundled jvlm-demo, at http://127.0.0.1:8000
  jvlm serve jinaai/jina-vlm --dtype bfloat16  # the released model (after `hf download jinaai/jina-vlm`)
  jvlm serve ./jina-vlm --served-model-name jina-vlm --quantize int8 --api-key "$KEY"
  curl localhost:8000/v1/chat/completions -H "Authorization: Bearer $KEY" \\
       -H "Content-Type: application/json" -d '{"messages": [{"role": "user", "content": "What is 6 × 7?"}]}'

Open http://127.0.0.1:8000/ in a browser for the playground (chat with images and PDFs) and
http://127.0.0.1:8000/docs for the interactive API documentation. Clients name the model as
it was given (`jvlm serve jinaai/jina-vlm` serves model "jinaai/jina-vlm"), or by any
--served-model-name.

The model loads and the settings are checked before the port opens, so a mistake is one
error line. Image URLs may only reach public addresses unless --allow-private-urls is given;
local files only under --allowed-local-media-path. Without --api-key only IP addresses and
localhost are answered as Host names (--allowed-hosts adds names), and web pages of other
origins are refused (--allowed-origins); see docs/security.md.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import os
import socket
from pathlib import Path

from jvlm.cli.options import DTYPE_HELP, dtype_arg

#: testing only: seconds to sleep before loading the model, to observe cold-start answers
LOAD_DELAY_ENV = "JVLM_SERVE_TEST_LOAD_DELAY_S"
API_KEY_ENV = "JVLM_API_KEY"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]
    p.add_argument("model_positional", nargs="?", default=None, metavar="MODEL",
                   help="model folder or cached Hugging Face repo id, as vLLM takes it (same as --model)")
    p.add_argument("--model", default=None,
                   help="model folder (config.json, safetensors, tokenizer) or cached Hugging Face repo id "
                        "(default: the bundled jvlm-demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--served-model-name", nargs="+", default=None, metavar="NAME",
                   help="names clients may send; the first is the one answers carry (default: the model as "
                        "given, e.g. jinaai/jina-vlm; the model as given is always accepted too)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${API_KEY_ENV}, else no key); "
                        "/health, /ready and /metrics stay open")
    p.add_argument("--max-batch", type=int, default=8, help="requests generated together (default: 8)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting beyond --max-batch before 503 server_overloaded (default: 64)")
    g = p.add_argument_group("image fetching (safe by default)")
    g.add_argument("--allowed-domains", "--allowed-media-domains", dest="allowed_domains", nargs="+",
                   default=None, metavar="DOMAIN",
                   help="fetch image URLs only from these domains and their subdomains (default: any public host)")
    g.add_argument("--allow-private-urls", action="store_true",
                   help="let image URLs reach loopback, private and link-local addresses (unsafe on shared networks)")
    g.add_argument("--allowed-local-media-path", type=Path, default=None, metavar="DIR",
                   help="let file:// URLs and paths read images inside DIR (default: no local files)")
    g.add_argument("--max-images", type=int, default=8, help="images per request (default: 8)")
    g.add_argument("--max-image-mb", type=float, default=20, help="bytes per image, in MiB (default: 20)")
    g.add_argument("--max-image-pixels", type=int, default=64_000_000,
                   help="pixels per image, checked before decoding (default: 64000000)")
    lim = p.add_argument_group("limits and defaults")
    lim.add_argument("--max-body-mb", type=float, default=32, help="request body cap in MiB, then 413 (default: 32)")
    lim.add_argument("--image-workers", type=int, default=2,
                     help="requests decoding and tiling images at once; text-only requests never wait for them "
                          "(default: 2)")
    lim.add_argument("--pdf-timeout", type=float, default=30.0, metavar="S",
                     help="seconds one PDF may take to render (in its own process) before it is stopped (default: 30)")
    lim.add_argument("--pdf-max-memory-mb", type=int, default=2048,
                     help="memory of the PDF rendering process, MiB (default: 2048)")
    lim.add_argument("--max-crops-limit", type=int, default=None,
                     help="largest max_crops a request may ask for (default: the model's max_crops)")
    lim.add_argument("--default-max-tokens", type=int, default=512,
                     help="new tokens when a request sets no max_tokens (default: 512)")
    net = p.add_argument_group("HTTP hardening (see docs/security.md)")
    net.add_argument("--allowed-hosts", nargs="+", default=None, metavar="NAME",
                     help="Host names answered besides IP addresses and localhost, '*' for any (default without "
                          "--api-key: none, against DNS rebinding; with --api-key: any)")
    net.add_argument("--allowed-origins", nargs="+", default=None, metavar="ORIGIN",
                     help="web page origins (https://app.example) allowed to call the API from a browser "
                          "(default: only the server's own pages)")
    net.add_argument("--max-connections", type=int, default=1024,
                     help="open connections and requests in flight before 503 (default: 1024)")
    net.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                     help="seconds a connection has to send its request head (default: 10)")
    net.add_argument("--request-timeout", type=float, default=120.0, metavar="S",
                     help="seconds a connection has to send its whole request (default: 120)")
    net.add_argument("--max-header-kb", type=int, default=64, help="size of a request head, KiB (default: 64)")
    p.add_argument("--dtype", default="auto", type=dtype_arg, metavar="DTYPE",
                   help=f"weight precision: {DTYPE_HELP} (default auto)")
    p.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: weight-only int8 decoder for faster CPU decoding (as jvlm infer --quantize)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--image-cache-mb", type=float, default=256, help="image feature cache, MiB; 0 = off (default: 256)")
    p.add_argument("--prefix-cache-mb", type=float, default=1024,
                   help="KV cache of image prompts for follow-up questions, MiB; 0 = off (default: 1024)")
    p.add_argument("--kernels", default="auto", choices=["auto", "torch"],
                   help="auto: with a bf16 model on an x86 CPU with AVX2 or AVX-512 or on ARM64, decode with jvlm's streaming "
                        "kernels (compiled once, about a minute, while the model loads); torch: PyTorch's only")
    p.add_argument("--reasoning-format", default="split", choices=["split", "raw"],
                   help="split: a reply that opens with a <think>...</think> block returns the block in "
                        "message.reasoning_content (delta.reasoning_content when streaming) and only the "
                        "answer in content; raw: the block stays in content (default: split)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="threads for tensor math (default: torch's choice; fewer can be faster on a busy machine)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_config(args: argparse.Namespace):
    """A ``ServerConfig`` from parsed arguments (checked here, so mistakes fail before binding)."""
    from jvlm.serve.app import ServerConfig
    from jvlm.serve.chat import GenerationDefaults
    from jvlm.media import MediaPolicy
    from jvlm.serve.guard import HttpLimits

    _check_args(args)
    from jvlm.notices import model_notice
    from jvlm.resolve import DEFAULT_MODEL, DEMO_MODEL, resolve_model

    if args.model_positional and args.model and args.model_positional != args.model:
        raise SystemExit(f"jvlm serve: error: two models given ({args.model_positional!r} and --model "
                         f"{args.model!r}); pass one")
    spec = args.model_positional or args.model
    resolved = resolve_model(spec)  # a ModelFolderError reaches the CLI's error handler
    given = spec or DEFAULT_MODEL
    names = list(args.served_model_name or [given])
    # the model as given is always accepted; "jina-vlm", the earlier default name, too
    aliases = [n for n in dict.fromkeys([*names[1:], given] + ([] if resolved.name == DEMO_MODEL else ["jina-vlm"]))
               if n != names[0]]
    media = MediaPolicy(
        allow_private_urls=args.allow_private_urls,
        allowed_domains=tuple(args.allowed_domains) if args.allowed_domains else None,
        allowed_local_media_path=args.allowed_local_media_path,
        max_bytes=int(args.max_image_mb * 2**20),
        max_pixels=args.max_image_pixels,
        max_images=args.max_images,
    )
    return ServerConfig(
        model_dir=resolved.path,
        served_model_name=names[0],
        served_model_aliases=tuple(aliases),
        quantize=args.quantize,
        notice=model_notice(resolved),
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * 2**20),
        media=media,
        defaults=GenerationDefaults(max_tokens=args.default_max_tokens),
        max_crops_limit=args.max_crops_limit,
        dtype=None if args.dtype == "auto" else args.dtype,
        kernels=args.kernels,
        reasoning_format=args.reasoning_format,
        device=args.device,
        image_cache_bytes=int(args.image_cache_mb * 2**20),
        prefix_cache_bytes=int(args.prefix_cache_mb * 2**20),
        load_delay_s=float(os.environ.get(LOAD_DELAY_ENV, "0") or 0),
        image_workers=args.image_workers,
        pdf_timeout_s=args.pdf_timeout,
        pdf_max_memory_bytes=args.pdf_max_memory_mb * 2**20,
        http=HttpLimits(
            max_header_bytes=args.max_header_kb * 1024, header_timeout_s=args.header_timeout,
            request_timeout_s=args.request_timeout, max_connections=args.max_connections,
            allowed_hosts=_allowed_hosts(args, keyed=bool(args.api_key or os.environ.get(API_KEY_ENV))),
            allowed_origins=tuple(args.allowed_origins) if args.allowed_origins else None),
    )


def _allowed_hosts(args: argparse.Namespace, keyed: bool) -> tuple[str, ...] | None:
    """``--allowed-hosts``, plus the name given to ``--host`` (a server started on a name is
    meant to be called by it); a keyed server checks no names unless ``--allowed-hosts`` says."""
    if keyed and not args.allowed_hosts:
        return None
    names = list(args.allowed_hosts or ())
    try:
        ipaddress.ip_address(args.host.strip("[]"))
    except ValueError:
        if args.host not in names:
            names.append(args.host)
    return tuple(names) or None


def _check_args(args: argparse.Namespace) -> None:
    """Every setting that can be checked without the model, as one ``UsageError`` line."""
    from jvlm.errors import UsageError
    from jvlm.loading import parse_dtype, resolve_device

    problems = []
    if not 0 <= args.port <= 65535:
        problems.append(f"--port {args.port} is not a TCP port; use 1-65535 (or 0 for any free port)")
    if args.max_batch < 1 or args.max_queue < 0:
        problems.append("--max-batch must be >= 1 and --max-queue >= 0")
    if args.allowed_local_media_path is not None and not args.allowed_local_media_path.is_dir():
        problems.append(f"--allowed-local-media-path {args.allowed_local_media_path} is not a directory")
    for flag, value, low in (("--max-connections", args.max_connections, 1), ("--image-workers", args.image_workers, 1), ("--max-header-kb", args.max_header_kb, 1),
                             ("--header-timeout", args.header_timeout, 0.1), ("--pdf-timeout", args.pdf_timeout, 0.1),
                             ("--pdf-max-memory-mb", args.pdf_max_memory_mb, 64),
                             ("--request-timeout", args.request_timeout, args.header_timeout)):
        if not value >= low:
            problems.append(f"{flag} must be at least {low:g}, got {value}")
    for flag, check, value in (("--dtype", parse_dtype, args.dtype), ("--device", resolve_device, args.device)):
        try:
            check(value)
        except (ValueError, RuntimeError) as exc:
            message = str(exc)
            problems.append(message if message.startswith(flag) else f"{flag}: {message}")
    if problems:
        raise UsageError("; ".join(problems))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket's address, claimed before the model loads (uvicorn listens on it)."""
    from jvlm.errors import UsageError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        what = "is in use by another program" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
        raise UsageError(f"port {port} on {host} {what}; choose another with --port") from None
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from jvlm.serve.app import create_app
    from jvlm.serve.guard import uvicorn_config

    config = build_config(args)
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(max(1, args.torch_threads))
    logging.getLogger("jvlm").setLevel(args.log_level.upper())
    if config.media.allow_private_urls:
        logging.getLogger(__name__).warning(
            "--allow-private-urls: image URLs may reach this machine and its private network")
    sock = _bind(args.host, args.port)  # refused now if taken, before minutes of loading
    app = create_app(config)
    state = app.state.serving
    if config.load_delay_s <= 0:  # (the delay is for tests of the cold-start answers)
        try:
            state.load_now()
        except BaseException:
            sock.close()
            raise
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    port = sock.getsockname()[1]  # the real one when --port 0 asked for any free port
    logging.getLogger(__name__).info(
        "serving %s as %s: playground http://%s:%d/ , API http://%s:%d/v1 , docs http://%s:%d/docs",
        config.model_dir, ", ".join(repr(n) for n in (config.served_model_name, *config.served_model_aliases)),
        shown, port, shown, port, shown, port)
    server = uvicorn.Server(uvicorn_config(app, args.host, args.port, config.http, log_level=args.log_level,
                                           timeout_graceful_shutdown=5))

    def stop_on_failure(_exc: BaseException) -> None:  # a server without a model should not linger
        server.should_exit = True

    state.on_load_failed = stop_on_failure
    server.run(sockets=[sock])
    return 1 if state.status == "failed" else 0
