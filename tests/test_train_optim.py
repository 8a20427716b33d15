"""Parameter groups, freezing, the schedule, the loss, activation checkpointing, bf16 autocast."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

from jvlm.train.config import GroupConfig, OptimConfig
from jvlm.train.data import ExampleEncoder, collate
from jvlm.train.objective import ModelWithLoss
from jvlm.train.optim import (
    Schedule,
    apply_freezing,
    build_optimizer,
    enable_activation_checkpointing,
    group_of,
    unreachable_vision_params,
)
from jvlm.train.toy import draw_shape


@pytest.fixture(scope="module")
def model_and_batch(tmp_path_factory):
    from jvlm.random_model import build_random_model

    model, proc = build_random_model("tiny", seed=0)
    folder = tmp_path_factory.mktemp("optim")
    draw_shape("blue", "square", (40, 56), random.Random(0)).save(folder / "a.png")
    enc = ExampleEncoder(proc, 4096)
    rows = [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What?"}]},
                      {"role": "assistant", "content": "A blue square."}]},
        {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]},
    ]
    batch = collate(proc, [enc.encode(r, folder) for r in rows])
    return model.float().train(), batch


def _optim_cfg(**freeze) -> OptimConfig:
    cfg = OptimConfig()
    cfg.groups = {g: GroupConfig(lr=1e-2, freeze=freeze.get(g, False)) for g in
                  ("vision", "connector", "decoder", "new_embeddings")}
    return cfg


def test_every_parameter_belongs_to_one_recipe_group(model_and_batch):
    model, _ = model_and_batch
    groups = {name: group_of(name) for name, _ in model.named_parameters()}
    assert groups["model.vision_model.patch_embed.proj.weight"] == "vision"
    assert groups["model.vision_model.vl_connector.projector.up.weight"] == "connector"
    assert groups["model.language_model.embedding.new_embedding"] == "new_embeddings"
    assert groups["model.language_model.embedding.embedding"] == groups["lm_head.weight"] == "decoder"
    assert set(groups.values()) == {"vision", "connector", "decoder", "new_embeddings"}


def test_frozen_groups_stay_bit_identical_while_the_others_move(model_and_batch):
    model, batch = model_and_batch
    model = copy.deepcopy(model)
    cfg = _optim_cfg(vision=True, decoder=True)
    cfg.weight_decay = 0.1  # decoupled decay would move a frozen tensor that stayed in the optimiser
    apply_freezing(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model.named_parameters(), cfg)
    wrapped = ModelWithLoss(model)
    for _ in range(2):
        wrapped(**batch).backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    for name, t in after.items():
        moved = not torch.equal(t, before[name])
        assert moved == (group_of(name) in ("connector", "new_embeddings")), name


def test_vit_blocks_after_the_deepest_tap_are_never_trained(model_and_batch):
    model, _ = model_and_batch
    model = copy.deepcopy(model)
    dead = unreachable_vision_params(model)
    # tiny: 10 blocks, taps (-4, -10) -> block outputs 7 and 1, so blocks 8, 9 and post_lnorm never matter
    assert any(".layers.8." in n for n in dead) and any("post_lnorm" in n for n in dead)
    assert not any(".layers.7." in n for n in dead)
    apply_freezing(model, _optim_cfg())
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in dead)


def test_warmup_then_decay_to_the_floor_per_group():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1.0, "base_lr": 1.0, "warmup_steps": 4, "group": "connector"},
                             {"params": [p2], "lr": 0.1, "base_lr": 0.1, "warmup_steps": 0, "group": "decoder"}])
    sched = Schedule(opt, total_steps=20, kind="cosine", min_lr_ratio=0.1)
    lrs = [sched.apply(s) for s in range(20)]
    assert [round(x["connector"], 6) for x in lrs[:4]] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[0]["decoder"] == pytest.approx(0.1)  # no warmup: starts at its peak
    assert lrs[-1]["connector"] == pytest.approx(0.1) and lrs[-1]["decoder"] == pytest.approx(0.01)
    c = [x["connector"] for x in lrs[4:]]
    assert all(a >= b for a, b in itertools.pairwise(c))  # monotone decay after warmup
    lin = Schedule(opt, 20, "linear", 0.0)
    assert lin.factor(12, 4) == pytest.approx(1 - 8 / 15)


def test_loss_is_the_token_sum_of_the_models_own_cross_entropy(model_and_batch):
    model, batch = model_and_batch
    with torch.no_grad():
        total = ModelWithLoss(model)(**batch)
        mean = model(**batch).loss
    n = int((batch["labels"] >= 0).sum())
    torch.testing.assert_close(total / n, mean)


def test_activation_checkpointing_gives_the_same_gradients(model_and_batch):
    model, batch = model_and_batch
    plain, ckpt = copy.deepcopy(model), copy.deepcopy(model)
    assert enable_activation_checkpointing(ckpt) == 10 + 2
    grads = []
    for m in (plain, ckpt):
        ModelWithLoss(m)(**batch).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)
    assert set(dict(plain.named_parameters())) == set(dict(ckpt.named_parameters()))  # same checkpoint keys


def test_bf16_autocast_keeps_fp32_weights_and_a_close_loss(model_and_batch):
    model, batch = model_and_batch
    wrapped = ModelWithLoss(model)
    with torch.no_grad():
        ref = wrapped(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = wrapped(**batch)
    assert low.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())
    assert abs(low.item() - ref.item()) / ref.item() < 0.02
