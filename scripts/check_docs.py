"""Check that every command in the README and the user docs runs as typed.

Commands are the lines of ```bash blocks (a trailing backslash joins lines), run from the
repository root exactly as written, through bash. What cannot run here is said, not hidden:

- a command whose comment says it ``needs`` something this machine lacks (the released
  weights, a benchmark download, a running server, network access) is *parsed*: a ``jvlm``
  command through jvlm's own argument parser (every option and value as typed must be
  accepted), any other program by running it with ``--help`` (it must exist in ``.venv``);
- the installers (``bash scripts/install.sh``, ``bash scripts/test.sh``) and long training
  runs are listed in ``NOT_RUN`` with the reason, and only checked to exist.

    .venv/bin/python scripts/check_docs.py            # all files, a line per command
    .venv/bin/python scripts/check_docs.py README.md

Exit status 1 when any command fails. ``tests/test_docs_commands.py`` runs it in the suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/using-the-released-model.md", "docs/evaluation.md", "docs/training.md")
#: commands not run by this check, and why (matched as the start of the command)
NOT_RUN = {
    "bash scripts/install.sh": "the installer itself (this check runs inside what it installed)",
    "bash scripts/test.sh": "runs the whole test suite, this check included",
    ".venv/bin/jvlm train examples/train/toy.yaml": "a two-minute training run; tests/test_train_loop.py trains the same way",
}
_FENCE = re.compile(r"```bash\n(.*?)```", re.DOTALL)


@dataclass
class Command:
    source: str  # file:line
    text: str  # as typed, without its trailing comment
    comment: str

    @property
    def needs(self) -> bool:
        return bool(re.search(r"\bneeds\b", self.comment))


def extract(path: Path) -> list[Command]:
    text = path.read_text(encoding="utf-8")
    found = []
    for block in _FENCE.finditer(text):
        first_line = text[:block.start(1)].count("\n") + 1
        pending, start = "", first_line
        for i, line in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first_line + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            full, pending = pending + line, ""
            code, comment = _split_comment(full)
            if code.strip():
                found.append(Command(f"{path.relative_to(ROOT)}:{start}", code.strip(), comment))
    return found


def _split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)``: the first ``#`` outside quotes that starts a word begins the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1:].strip()
    return line, ""


def check(cmd: Command, timeout_s: float = 600) -> tuple[str, str]:
    """``(status, detail)``: status is ran, parsed, not-run or FAILED."""
    for prefix, why in NOT_RUN.items():
        if cmd.text.startswith(prefix):
            script = shlex.split(prefix)[-1]
            if not (ROOT / script).exists():
                return "FAILED", f"{script} does not exist"
            rest = cmd.text[len(prefix):].strip()
            if rest.startswith("&&"):  # `bash scripts/install.sh && .venv/bin/jvlm ...`: the rest runs
                status, detail = check(Command(cmd.source, rest[2:].strip(), cmd.comment), timeout_s)
                return status, f"{detail} (the part before && not run: {why})"
            return "not-run", why
    if cmd.needs:
        return _parse_only(cmd)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd.text], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout_s, env=env)
    if res.returncode != 0:
        return "FAILED", f"exit {res.returncode}: {res.stderr.strip()[-800:]}"
    return "ran", res.stdout.strip()


def _parse_only(cmd: Command) -> tuple[str, str]:
    argv = shlex.split(cmd.text)
    program = argv[0]
    if program.endswith("/jvlm") or program == "jvlm":
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        probe = ("import sys; from jvlm.cli import build_parser; a = sys.argv[1:]; "
                 "build_parser(only=a[0]).parse_args(a)")
        res = subprocess.run([sys.executable, "-c", probe, *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env=env)
        if res.returncode != 0:
            return "FAILED", f"jvlm's parser refused it: {res.stderr.strip()[-500:]}"
        return "parsed", f"needs {cmd.comment.split('needs', 1)[1].strip()}"
    if "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == ["jvlm"]:  # torchrun ... -m jvlm ARGS
        inner = Command(cmd.source, shlex.join(["jvlm", *argv[argv.index("-m") + 2:]]), cmd.comment)
        status, detail = _parse_only(inner)
        if status == "FAILED":
            return status, detail
    if not (ROOT / program).exists() and "/" in program:
        return "FAILED", f"{program} does not exist"
    sub = argv[1:2] if len(argv) > 1 and re.fullmatch(r"[a-z][a-z-]*", argv[1]) else []  # e.g. `hf download`
    res = subprocess.run([program, *sub, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        return "FAILED", f"{' '.join([program, *sub])} --help failed: {res.stderr.strip()[-300:]}"
    return "parsed", f"{' '.join([program, *sub])} --help works; needs {cmd.comment.split('needs', 1)[1].strip()}"


def main(argv: list[str]) -> int:
    files = [ROOT / f for f in (argv or DOCS)]
    failed = 0
    for path in files:
        for cmd in extract(path):
            status, detail = check(cmd)
            failed += status == "FAILED"
            print(f"{status:8} {cmd.source}: {cmd.text}")
            if status in ("FAILED", "not-run"):
                print(f"         {detail}")
    print(f"{failed} failed" if failed else "every command ran, or parsed where marked")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
