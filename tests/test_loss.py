"""One loss, two reductions: what ``model(labels=...)`` reports and what training sums agree."""

from __future__ import annotations

import pytest
import torch

from jvlm.model.loss import next_token_loss
from jvlm.train.objective import ModelWithLoss


def test_forward_mean_times_targets_equals_the_training_sum(tiny):
    model, processor = tiny
    torch.manual_seed(0)
    vocab = model.lm_head.weight.shape[0]
    ids = torch.randint(0, 200, (2, 12))
    labels = ids.roll(-1, dims=1).clone()
    labels[:, :4] = -100  # prompt tokens
    labels[0, -1] = -1  # padding
    labels[1, 5] = vocab + 2  # a structural image token: never predicted, no loss
    mask = torch.ones_like(ids)
    with torch.no_grad():
        mean = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        summed = ModelWithLoss(model)(ids, mask, labels)
    targets = int(((labels >= 0) & (labels < vocab)).sum())
    assert targets == 2 * 8 - 2
    assert torch.allclose(mean * targets, summed, rtol=1e-5)


def test_next_token_loss_ignores_padding_and_refuses_unknown_reductions():
    logits = torch.zeros(1, 3, 5)  # uniform: every counted target costs log(5)
    labels = torch.tensor([[1, -100, 7]])  # 7 is past the vocabulary
    assert next_token_loss(logits, labels, "sum").item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    with pytest.raises(ValueError, match="reduction"):
        next_token_loss(logits, labels, "none")
