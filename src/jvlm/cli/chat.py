"""Talk with the model: a conversation that keeps its history, with images, in a terminal or over a pipe.

Each line you type is a message; the answer streams back. Commands:
  /image PATH   attach an image (or PDF) to your next message; a path typed in a message works too
  /reset        forget the conversation and attached images
  /help         these commands
  /quit         leave (also /exit, or Ctrl-D)

Examples:
  jvlm chat
  jvlm chat -i examples/shapes_en.png
  printf '/image examples/shapes_en.png\\nWhat colour is the triangle?\\nWhat is 6 × 7?\\n' | jvlm chat
  jvlm chat --model jinaai/jina-vlm --system "Answer briefly."

Over a pipe, stdout carries one answer per line and nothing else (notes go to stderr).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from jvlm.cli.inputs import DEFAULT_MAX_PIXELS
from jvlm.cli.options import add_precision_options, positive_int

#: a word of a message that names an existing file with one of these endings is attached
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".pdf"}
HELP = __doc__.split("Commands:\n", 1)[1].split("\n\n", 1)[0]


def add_parser(p: argparse.ArgumentParser) -> None:
    p.epilog = __doc__.split("\n", 2)[2]
    p.add_argument("-i", "--image", action="append", default=[], metavar="IMG",
                   help="image or PDF attached to the first message; repeat for several")
    p.add_argument("--model", default=None,
                   help="model folder or cached Hugging Face repo id (default: the bundled jvlm-demo)")
    p.add_argument("--system", default=None, metavar="TEXT", help="a system prompt for the whole conversation")
    p.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=positive_int, default=512,
                   help="answer length limit in tokens, per turn (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--max-crops", type=int, default=None, help="tiles per image (default: the model's own)")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="a larger image is downscaled to N pixels, with a notice (0 = no limit)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to run")
    add_precision_options(p)
    p.add_argument("--hide-reasoning", action="store_true", help="do not show <think> blocks (stderr by default)")


class Conversation:
    """Messages in the Hugging Face chat format and the images their slots refer to, in order."""

    def __init__(self, system: str | None):
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.images: list = []
        self.pending: list = []  # attached, not yet sent
        self.pending_names: list[str] = []

    def attach(self, images: list, names: list[str]) -> None:
        self.pending += images
        self.pending_names += names

    def ask(self, text: str) -> list[dict]:
        """The conversation with the user's new turn (kept only when ``commit`` is called)."""
        content = [{"type": "image"} for _ in self.pending] + [{"type": "text", "text": text}]
        return [*self.messages, {"role": "user", "content": content}]

    def commit(self, messages: list[dict], answer: str) -> None:
        self.messages = [*messages, {"role": "assistant", "content": answer}]
        self.images += self.pending
        self.pending, self.pending_names = [], []


def split_paths(line: str) -> tuple[str, list[str]]:
    """``(text, paths)``: words of the message that name existing image or PDF files are taken out."""
    try:
        words = shlex.split(line, posix=True)
    except ValueError:  # an unmatched quote: no paths, the text as typed
        return line, []
    paths = [w for w in words if Path(w).expanduser().suffix.lower() in IMAGE_SUFFIXES
             and Path(w).expanduser().is_file()]
    if not paths:
        return line, []
    text = line
    for path in paths:
        for form in (shlex.quote(path), f'"{path}"', f"'{path}'", path):
            if form in text:
                text = text.replace(form, "", 1)
                break
    return " ".join(text.split()), [str(Path(p).expanduser()) for p in paths]


def run(args: argparse.Namespace) -> int:
    from jvlm.cli.infer import collect_images, load_engine
    from jvlm.inference.request import SamplingParams
    from jvlm.notices import model_notice

    tty = sys.stdin.isatty()
    conversation = Conversation(args.system)
    if args.image:  # fail fast on a bad -i, before the weights load
        conversation.attach(collect_images(args.image, None, args.max_image_pixels)[0], list(args.image))
    engine, processor, resolved, _ = load_engine(args.model, args.dtype, args.device, args.quantize,
                                              kernels=args.kernels, progress=tty and sys.stderr.isatty())
    notice = model_notice(resolved)
    if notice:
        print(notice, file=sys.stderr)
    if tty:
        import readline  # noqa: F401 - line editing and history for input()

        print(f"Chatting with {resolved.name}: type a message; /image PATH attaches an image, /reset starts "
              "over, /quit leaves, /help lists the commands.", file=sys.stderr)
    params = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                  seed=args.seed)
    while True:
        try:
            line = input(">>> ") if tty else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not tty and line == "":
            return 0  # end of the pipe
        line = line.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if line.startswith("/") and not Path(command).exists():  # "/tmp/a.png What is it?" is a message
            if command in ("/quit", "/exit", "/bye"):
                return 0
            if command == "/reset":
                conversation.reset()
                print("(conversation cleared)", file=sys.stderr)
            elif command == "/help":
                print(HELP, file=sys.stderr)
            elif command == "/image":
                _attach(conversation, shlex.split(rest) if rest.strip() else [], args)
            else:
                print(f"unknown command {command}; /help lists them", file=sys.stderr)
            continue
        text, paths = split_paths(line)
        if paths and not _attach(conversation, paths, args):
            continue
        if not text:
            continue  # only a path: attached for the next message
        _answer(engine, processor, conversation, text, SamplingParams(**params), args)


def _attach(conversation: Conversation, paths: list[str], args) -> bool:
    from jvlm.cli.infer import collect_images
    from jvlm.errors import JVLMError

    if not paths:
        print("usage: /image PATH", file=sys.stderr)
        return False
    try:
        images, sources = collect_images(paths, None, args.max_image_pixels)
    except (JVLMError, OSError, ValueError) as e:
        print(f"jvlm chat: {e}", file=sys.stderr)
        return False
    conversation.attach(images, sources)
    print(f"(attached {', '.join(sources)})", file=sys.stderr)
    return True


def _answer(engine, processor, conversation: Conversation, text: str, params, args) -> None:
    from jvlm.errors import JVLMError
    from jvlm.inference.prompt import build_request
    from jvlm.inference.reasoning import ReasoningSplitter

    messages = conversation.ask(text)
    try:
        request = build_request(processor, messages, [*conversation.images, *conversation.pending],
                                max_crops=args.max_crops, params=params, feature_cache=engine.feature_cache,
                                context_length=engine.context_length)
    except JVLMError as e:
        print(f"jvlm chat: {e} (/reset starts a new conversation)", file=sys.stderr)
        return
    splitter, answer, reasoning_open = ReasoningSplitter(), [], False
    dim = sys.stderr.isatty()
    try:
        for ev in engine.stream(request):
            pieces = [splitter.feed(ev.text)] if ev.text else []
            if ev.finished:
                pieces.append(splitter.finish())
            for reasoning, text_piece in pieces:
                if reasoning and not args.hide_reasoning:
                    print(f"\033[2m{reasoning}\033[0m" if dim else reasoning, end="", file=sys.stderr, flush=True)
                    reasoning_open = True
                if text_piece:
                    if reasoning_open:
                        print(file=sys.stderr, flush=True)
                        reasoning_open = False
                    answer.append(text_piece)
                    print(text_piece, end="", flush=True)
    except KeyboardInterrupt:  # stop this answer, keep the conversation as it was
        print("\n(interrupted)", file=sys.stderr)
        return
    if reasoning_open:
        print(file=sys.stderr)
    print(flush=True)
    conversation.commit(messages, "".join(answer).strip())
