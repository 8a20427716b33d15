"""`jvlm chat` over a pipe (what scripts do) and under a pseudo-terminal (what people do),
with the shipped jvlm-demo answering for real."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from shipped import EXAMPLES

from jvlm.cli.chat import Conversation, split_paths

CHAT = [sys.executable, "-m", "jvlm", "chat", "--kernels", "torch"]


def test_two_turns_and_an_image_through_a_pipe():
    shapes = EXAMPLES / "shapes_en.png"
    res = subprocess.run(CHAT, input=f"What is 6 × 7?\n{shapes} What colour is the triangle?\n",
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["42", "blue"]  # stdout: one answer per turn, nothing else
    assert "jvlm-demo" in res.stderr and f"attached {shapes}" in res.stderr


def test_reset_and_unknown_commands_over_a_pipe(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    script = (f"/image {tmp_path / 'bad.png'}\n/frobnicate\n/image {EXAMPLES / 'sign_tr.png'}\n"
              "Tabelada ne yazıyor?\n/reset\nWhat is 6 × 7?\n/quit\nWhat is 2 + 2?\n")
    res = subprocess.run(CHAT, input=script, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["DUR", "42"]  # nothing after /quit
    assert "neither an image" in res.stderr and "unknown command /frobnicate" in res.stderr
    assert "conversation cleared" in res.stderr


def _read_until(fd: int, wanted: str, timeout_s: float) -> str:
    seen, deadline = "", time.monotonic() + timeout_s
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {wanted!r}; saw {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            seen += chunk.decode("utf-8", "replace")
    return seen


def test_under_a_pseudo_terminal():
    master, slave = pty.openpty()
    proc = subprocess.Popen(CHAT, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        _read_until(master, ">>> ", 300)  # the prompt appears once the model has loaded
        os.write(master, f"/image {EXAMPLES / 'shapes_en.png'}\n".encode())
        _read_until(master, ">>> ", 60)
        os.write(master, "What colour is the triangle?\n".encode())
        out = _read_until(master, ">>> ", 120)
        assert "blue" in out
        os.write(master, b"/quit\n")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_paths_in_a_message_are_attached_and_taken_out(tmp_path):
    image = tmp_path / "my photo.png"
    image.write_bytes((EXAMPLES / "shapes_en.png").read_bytes())
    assert split_paths(f'"{image}" What is this?') == ("What is this?", [str(image)])
    assert split_paths("What is in photo.png?") == ("What is in photo.png?", [])  # no such file: plain text
    conv = Conversation("Be brief.")
    conv.attach([b"img"], ["a.png"])
    messages = conv.ask("Hi")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[-1]["content"][0] == {"type": "image"}
    conv.commit(messages, "Hello")
    assert conv.images == [b"img"] and conv.pending == [] and conv.messages[-1]["content"] == "Hello"
    conv.reset()
    assert conv.messages == [{"role": "system", "content": "Be brief."}] and conv.images == []
