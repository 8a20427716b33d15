"""Dense vision labels of the synthetic images, and the demo's vision pretraining and graft."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from jvlm_demo import synthetic
from jvlm_demo import synth_lexicon as lex
from jvlm_demo.demo_vision import IGNORE, NO_LABEL, SLOTS, CharVocab, dense_labels, glyph_centres

PATCH = 14


def _sample(task: str, lang: str, seed: int = 0) -> synthetic.Sample:
    return next(synthetic.generate(1, seed, "train", [task], [lang], image_size=224))


def test_left_to_right_glyphs_are_ordered_inside_their_box():
    sample = _sample("receipt", "en")
    runs = sample.images[0].info["text_runs"]
    assert runs, "the painter records every run it draws"
    for text, lang, size, bold, box in runs:
        glyphs = glyph_centres(text, lang, size, bold, box)
        assert [g[0] for g in glyphs] == [ch for ch in text if not ch.isspace()]
        xs = [g[1] for g in glyphs]
        assert xs == sorted(xs), f"{text!r} is not placed left to right"
        assert all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for _, x, y in glyphs)


def test_arabic_letters_run_right_to_left_and_digits_left_to_right():
    sample = _sample("receipt", "ar")
    seen_word = seen_number = False
    for text, lang, size, bold, box in sample.images[0].info["text_runs"]:
        glyphs = glyph_centres(text, lang, size, bold, box)
        for word in text.split(" "):
            mine = [g for g in glyphs if g[0] in word]
            if len(word) >= 3 and all("\u0600" <= ch <= "\u06ff" for ch in word) and len(mine) == len(word):
                # the first letter of an Arabic word is its rightmost
                x_first = next(x for ch, x, _ in glyphs if ch == word[0])
                x_last = next(x for ch, x, _ in reversed(glyphs) if ch == word[-1])
                seen_word |= x_first > x_last
            if word.replace(".", "").replace(":", "").isdigit() and len(set(word)) == len(word) and len(word) >= 3:
                xs = [next(x for ch, x, _ in glyphs if ch == d) for d in word]
                assert xs == sorted(xs), f"{word!r} in {text!r} should read left to right"
                seen_number = True
    assert seen_word and seen_number, "the receipt should hold both an Arabic word and a number to check"


def test_character_labels_cover_the_printed_text_and_nothing_else():
    vocab = CharVocab(512)
    for lang in ("en", "zh", "ar", "ru"):
        sample = _sample("receipt", lang, seed=3)
        labels = dense_labels(sample, vocab, PATCH)
        assert labels.chars.shape == (16, 16, SLOTS)
        printed = sum(1 for text, *_ in sample.images[0].info["text_runs"] for ch in text if not ch.isspace())
        labelled = int((labels.chars > NO_LABEL).sum())
        collided = int((labels.chars == IGNORE).sum())
        # every printed character lands in a slot; a collision loses both of its characters
        assert labelled + collided <= printed <= labelled + 3 * collided + 2
        assert labelled > 0.8 * printed
        boxes = [run[-1] for run in sample.images[0].info["text_runs"]]
        for r, c, _ in zip(*np.nonzero(labels.chars)):
            x0, y0 = c * PATCH, r * PATCH
            assert any(b[0] < x0 + PATCH and x0 < b[2] and b[1] < y0 + PATCH and y0 < b[3] for b in boxes), \
                "a labelled patch holds no text"
    inverse = {i: ch for ch, i in vocab.index.items()}
    assert len(set(inverse)) == len(inverse) and min(inverse) == 1


def test_char_vocab_is_first_come_and_bounded():
    vocab = CharVocab(2)
    assert [vocab("a"), vocab("b"), vocab("a"), vocab("c")] == [1, 2, 1, IGNORE]


def test_shape_labels_sit_on_pixels_of_the_labelled_colour():
    checked = 0
    for seed in range(6):
        sample = _sample("shapes", "en", seed)
        labels = dense_labels(sample, CharVocab(8), PATCH)
        assert (labels.chars == NO_LABEL).all(), "the shapes family prints no text"
        assert ((labels.kind > 0) == (labels.colour > 0)).all()
        pixels = np.asarray(sample.images[0].convert("RGB"), dtype=np.int32)
        kinds_drawn = {s[0] for s in sample.spec["shapes"]}
        assert {list(lex.SHAPES)[k - 1] for k in np.unique(labels.kind) if k} == kinds_drawn
        for r, c in zip(*np.nonzero(labels.colour)):
            y, x = int((r + 0.5) * PATCH), int((c + 0.5) * PATCH)
            expected = np.array(lex.COLOURS[lex.PALETTE[labels.colour[r, c] - 1]]["rgb"])
            assert np.abs(pixels[y, x] - expected).max() <= 2, (seed, r, c)
            checked += 1
    assert checked > 30


def test_pretraining_changes_only_the_vision_encoder_and_graft_moves_it(tmp_path):
    from safetensors.torch import load_file

    from jvlm_demo.demo import graft_vision, write_initial_model
    from jvlm_demo.demo_vision import pretrain_vision
    from jvlm.errors import CheckpointError

    start = write_initial_model(tmp_path / "init")
    metrics = pretrain_vision(start, tmp_path / "vision", steps=3, batch=4, log_every=1, level="patch")
    assert metrics["step"] == 3 and np.isfinite(metrics["loss"]) and metrics["chars_seen"] > 0
    a, b = load_file(str(start / "model.safetensors")), load_file(str(tmp_path / "vision" / "model.safetensors"))
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("model.vision_model.") and ".vl_connector." not in k for k in changed)

    # token level: the connector learns too (its output is what the heads read), the decoder does not
    pretrain_vision(tmp_path / "vision", tmp_path / "tokens", steps=2, batch=4, log_every=1, level="token")
    t = load_file(str(tmp_path / "tokens" / "model.safetensors"))
    moved = {k for k in b if not torch.equal(b[k], t[k])}
    assert any(".vl_connector." in k for k in moved) and all(k.startswith("model.vision_model.") for k in moved)
    with pytest.raises(ValueError, match="level"):
        pretrain_vision(start, tmp_path / "nowhere", steps=1, level="pixel")

    other = write_initial_model(tmp_path / "other", seed=5)  # stands in for a trained model
    graft_vision(other, tmp_path / "vision", tmp_path / "grafted")
    o, g = load_file(str(other / "model.safetensors")), load_file(str(tmp_path / "grafted" / "model.safetensors"))
    assert g.keys() == o.keys()
    for key in g:  # the whole vision side (ViT and connector) from one folder, the rest from the other
        source = b if key.startswith("model.vision_model.") else o
        assert torch.equal(g[key], source[key]), key
    assert any(not torch.equal(o[k], b[k]) for k in g if not k.startswith("model.vision_model."))

    def smaller(cfg):
        cfg.connector.pooling_type = "mean"

    mismatched = write_initial_model(tmp_path / "mean", configure=smaller)
    with pytest.raises(CheckpointError, match="different vision"):
        graft_vision(other, mismatched, tmp_path / "bad")


def test_sign_probe_reads_through_the_vision_side_and_not_around_it(tmp_path):
    """The probe must fail on a vision side that cannot see (every image gives the same
    tokens) and fit better on one that can: otherwise its numbers say nothing about reading."""
    from safetensors.torch import load_file, save_file

    from jvlm_demo.demo import write_initial_model
    from jvlm_demo.demo_vision import probe_sign_text

    seeing = write_initial_model(tmp_path / "init")
    blind = tmp_path / "blind"
    shutil.copytree(seeing, blind)
    weights = load_file(str(blind / "model.safetensors"))
    for key in weights:
        if key.startswith("model.vision_model.patch_embed."):
            weights[key] = torch.zeros_like(weights[key])  # the pixels never reach the ViT
    save_file(weights, str(blind / "model.safetensors"), metadata={"format": "pt"})

    n, steps = 48, 150
    sees = probe_sign_text(seeing, n=n, steps=steps)
    blind_result = probe_sign_text(blind, n=n, steps=steps)
    assert sees["classes"] == 60 and sees["images"] == n
    # identical tokens for every image leave one constant guess: at best the most common of
    # 60 classes among 36 fitted images
    assert blind_result["train_acc"] <= 0.15
    assert sees["train_acc"] > 0.5 > blind_result["train_acc"]
    with pytest.raises(ValueError, match="held_out"):
        probe_sign_text(seeing, n=n, held_out=1.0)


def test_token_slots_follow_the_connectors_window_members():
    """Token-level labels are only right if slot j of token t is the patch the connector puts
    j-th into window t: check against the real pooling code, with patch numbers as features."""
    from jvlm.config import JinaVLMConfig
    from jvlm_demo.demo_vision import group_slots
    from jvlm.model.connector import VisionLanguageConnector

    cfg = JinaVLMConfig.preset("jvlm-demo")
    connector = VisionLanguageConnector(cfg)

    class Members(torch.nn.Module):  # returns each window's members instead of pooling them
        def forward(self, windows):
            return windows[..., 0]

    connector.pooling = Members()
    g = cfg.vision.grid
    numbers = torch.arange(g * g, dtype=torch.float32)
    feats = numbers.view(1, 1, g * g, 1).expand(1, 1, g * g, connector.pad_embed.shape[1]).clone()
    members = connector.pool(feats, torch.ones(1, 1, g * g))[0, 0]  # (tokens, 4) patch numbers
    labels = numbers.view(1, g, g, 1).long()
    assert torch.equal(group_slots(labels, 2)[0], members.long())
    # with two slots per patch, a patch's slots stay together and in order
    two = torch.stack([labels * 2, labels * 2 + 1], dim=-1)[..., 0, :]
    assert torch.equal(group_slots(two, 2)[0], torch.stack([members * 2, members * 2 + 1], -1).reshape(-1, 8).long())


def test_command_line_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    from jvlm_demo.demo import main as demo_main
    from jvlm_demo.eval_task import main as eval_main

    checkpoint = tmp_path / "step-00000400"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    assert eval_main(["--model", str(checkpoint), "--data", str(tmp_path), "--out", str(tmp_path / "eval")]) == 1
    assert "does not exist" in capsys.readouterr().err  # no split there yet
    data = synthetic.write_jsonl(synthetic.generate(2, 0, "test", ["arithmetic"]), tmp_path / "split")
    assert eval_main(["--model", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err
    assert "training checkpoint" in err and str(checkpoint / "model") in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()

    assert demo_main(["ship", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "pkg")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "lacks" in err and "Traceback" not in err


def test_training_scripts_name_real_configs_and_subcommands():
    """scripts/train_demo*.sh are the one-command retrains; a renamed YAML or subcommand would
    only fail an hour into a run."""
    import re
    from pathlib import Path

    from jvlm_demo.demo import main as demo_main
    from jvlm.train.config import load_config

    root = Path(__file__).resolve().parents[1]
    scripts = sorted((root / "scripts").glob("train_demo*.sh"))
    assert len(scripts) >= 2
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        configs = re.findall(r"jvlm train (\S+\.yaml)", text)
        assert configs, script.name
        for config in configs:
            load_config(root / config)  # exists and validates
        for sub in set(re.findall(r"python -m jvlm_demo (\w+)", text)):
            with pytest.raises(SystemExit) as exit_:
                demo_main([sub, "--help"])
            assert exit_.value.code == 0, (script.name, sub)
