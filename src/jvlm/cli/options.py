"""Conventions every subcommand shares: dtype spellings, "did you mean" suggestions, ``-v``
anywhere on the line, and logging that keeps third-party libraries quiet.

The spellings are the ones users type in Transformers (``torch_dtype="bfloat16"``), vLLM
(``--dtype half``) and llama.cpp/mlx-vlm (``fp16``): all of them name the same three
precisions here.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys

#: every accepted spelling -> the canonical name ``jvlm.loading.parse_dtype`` takes
DTYPE_SPELLINGS: dict[str, str] = {
    "auto": "auto", "checkpoint": "checkpoint",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
}
DTYPE_HELP = "auto (the checkpoint's, but fp32 for bf16/fp16 weights on a CPU without native bf16/fp16 math), " \
             "checkpoint (the checkpoint's dtype on any CPU), bfloat16/bf16, float16/fp16/half, float32/fp32/float"


def add_precision_options(p: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--quantize`` and ``--kernels``, the same for infer, chat and serve."""
    p.add_argument("--dtype", default="auto", type=dtype_arg, metavar="DTYPE",
                   help=f"compute precision: {DTYPE_HELP} (default auto)")
    add_decode_options(p)


def add_decode_options(p) -> None:
    """``--quantize`` and ``--kernels`` (also for ``jvlm eval``, which has its own ``--dtype``)."""
    p.add_argument("--quantize", default="none", choices=["none", "int8", "int4"],
                   help="weight-only quantized decoder for faster CPU decoding: int8 (one scale per row) or int4 "
                        "(one scale per 32 weights); the vision tower stays in --dtype (default none)")
    p.add_argument("--kernels", default="auto", choices=["auto", "torch"],
                   help="auto: decode with jvlm's CPU kernels for this CPU (AVX-512, AVX2 or NEON; compiled once, "
                        "about a minute); torch: PyTorch's own kernels only (default auto)")


def dtype_arg(value: str) -> str:
    """``--dtype`` value in any accepted spelling -> canonical name (argparse ``type=``)."""
    key = value.strip().lower().removeprefix("torch.")
    if key not in DTYPE_SPELLINGS:
        hint = difflib.get_close_matches(key, DTYPE_SPELLINGS, n=1)
        raise argparse.ArgumentTypeError(
            f"unknown dtype {value!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f"; use {DTYPE_HELP}")
    return DTYPE_SPELLINGS[key]


def nonempty_text(value: str) -> str:
    """A prompt must say something: an empty one would only make the model ramble."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; pass the question or instruction as text")
    return value


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


_UNKNOWN = re.compile(r"unrecognized arguments: (.*)")
_BAD_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class SuggestingParser(argparse.ArgumentParser):
    """argparse that says "did you mean ...?" for a mistyped option, subcommand or choice
    (Python 3.14 has ``suggest_on_error``; this does the same on older versions)."""

    def error(self, message: str):  # type: ignore[override]
        hint = self._suggestion(message)
        super().error(message + (f" (did you mean {hint}?)" if hint else ""))

    def _suggestion(self, message: str) -> str | None:
        m = _BAD_CHOICE.search(message)
        if m:
            choices = re.findall(r"'([^']*)'", message.split("choose from", 1)[-1])
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            return repr(close[0]) if close else None
        m = _UNKNOWN.search(message)
        if m:
            options = _all_option_strings(self)
            hints = []
            for token in m.group(1).split():
                if token.startswith("-"):
                    close = difflib.get_close_matches(token.split("=", 1)[0], options, n=1, cutoff=0.6)
                    if close:
                        hints.append(f"{close[0]!r} for {token!r}")
            return ", ".join(hints) or None
        return None


def _all_option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's options and those of its subcommands (unknown options are reported by the top parser)."""
    found = list(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [o for o in _all_option_strings(sub) if o not in found]
    return found


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the subcommand too (``jvlm infer ... -v``), without overriding one given before it."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug information (jvlm's own; other libraries stay at warnings)")


#: libraries that log chatty details at DEBUG/INFO (PNG chunk lists, HTTP connections, ...)
QUIET_LOGGERS = ("PIL", "urllib3", "httpx", "httpcore", "asyncio", "filelock", "fsspec", "huggingface_hub",
                 "matplotlib", "multipart", "python_multipart", "torch", "transformers")


def configure_logging(verbose: bool) -> None:
    """Warnings from everyone; with ``verbose``, jvlm's own debug lines (third parties stay quiet)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("jvlm").setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
