"""The ``jvlm`` command: argument parsing and wiring only.

Each subcommand lives in its own module under ``jvlm.cli`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Modules are imported lazily so that
``jvlm --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jvlm import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "infer": ("jvlm.cli.infer", "ask a question about one or more images (or text only)"),
    "chat": ("jvlm.cli.chat", "talk with the model: a conversation with images, in a terminal or over a pipe"),
    "serve": ("jvlm.cli.serve", "run the OpenAI-compatible HTTP server"),
    "train": ("jvlm.cli.train", "train or fine-tune with the two-stage recipe"),
    "eval": ("jvlm.cli.eval", "score a model on a benchmark"),
    "efficiency": ("jvlm.cli.efficiency", "print the token and compute cost of one image"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    from jvlm.cli.options import SuggestingParser, add_verbose

    parser = SuggestingParser(
        prog="jvlm",
        description="Jina-VLM: ask questions about photos and documents in 29 languages, serve the model "
        "over an OpenAI-compatible API, train and evaluate it.",
    )
    parser.add_argument("--version", action="version", version=f"jvlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug information")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("jvlm.cli"):
                continue  # subcommand not available in this build
            raise
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_parser(p)
        add_verbose(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command line itself (not a caller inside a Python program)
        import jvlm

        jvlm._defer_transformers_registration()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module (fast start, and one broken optional
    # dependency cannot take down the others).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    from jvlm.cli.options import configure_logging

    configure_logging(args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from jvlm.errors import run_reporting_errors

    def run():
        from jvlm.resolve import TINY_RANDOM

        if TINY_RANDOM in (getattr(args, "model", None), getattr(args, "model_positional", None)):
            # the placeholder model is written on first use
            from jvlm.tools.random_model import ensure_tiny_random

            ensure_tiny_random()
        return args._run(args)

    return run_reporting_errors(f"jvlm {args.command}", run, verbose=args.verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
