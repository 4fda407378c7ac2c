import math

import pytest
import torch
import torch.nn.functional as F

from models.parts.losses import focal_loss, penalty_reduced_focal_loss, pull_push_losses


def random_case(n: int = 200):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=g) * 3, (torch.rand(n, 5, generator=g) < 0.2).float()


def test_focal_loss_at_gamma_0_is_cross_entropy():
    logits, targets = random_case()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    assert torch.allclose(focal_loss(logits, targets, alpha=-1, gamma=0), ce)
    # alpha weighs positives by alpha and negatives by 1 - alpha: 0.5 halves everything
    assert torch.allclose(focal_loss(logits, targets, alpha=0.5, gamma=0), 0.5 * ce)
    pos = targets.bool()
    per_term = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weighted = 0.25 * per_term[pos].sum() + 0.75 * per_term[~pos].sum()
    assert torch.allclose(focal_loss(logits, targets, alpha=0.25, gamma=0), weighted)


def test_focal_loss_down_weights_easy_examples():
    # p_t = 0.9 (easy) vs p_t = 0.1 (hard), gamma 2: the factor (1 - p_t)^2 is 0.01 vs 0.81.
    logit = math.log(0.9 / 0.1)
    logits = torch.tensor([logit, -logit])
    targets = torch.tensor([1.0, 1.0])
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    fl = focal_loss(logits, targets, alpha=-1, gamma=2, reduction="none")
    assert torch.allclose(fl / ce, torch.tensor([0.01, 0.81]), atol=1e-6)
    # easy negatives the same way: the loss of a confident background anchor nearly vanishes
    assert focal_loss(torch.tensor([-logit]), torch.tensor([0.0]), alpha=-1, gamma=2) < 0.0011


def test_penalty_reduced_focal_loss_hand_computed():
    # one positive with p = 0.5, one negative at y = 0.5 with p = 0.5, one far negative (y = 0) with p = 0.5
    logits = torch.zeros(1, 1, 1, 3)
    heatmap = torch.tensor([[[[1.0, 0.5, 0.0]]]])
    log_half = math.log(0.5)
    expected = -(0.25 * log_half + (0.5**4) * 0.25 * log_half + 0.25 * log_half) / 1  # N = 1 object
    assert torch.allclose(penalty_reduced_focal_loss(logits, heatmap), torch.tensor(expected))


def test_penalty_reduced_focal_loss_spares_negatives_near_a_corner():
    logits = torch.full((1, 1, 1, 2), 2.0)  # confident detections at two negative locations
    near = penalty_reduced_focal_loss(logits, torch.full((1, 1, 1, 2), 0.9))  # inside a Gaussian
    far = penalty_reduced_focal_loss(logits, torch.zeros(1, 1, 1, 2))
    assert torch.allclose(near, far * (1 - 0.9) ** 4)  # the (1 - y)^beta penalty reduction, beta = 4
    # a perfect prediction costs (almost) nothing, a wrong one a lot
    perfect = torch.tensor([[[[20.0, -20.0]]]])
    assert penalty_reduced_focal_loss(perfect, torch.tensor([[[[1.0, 0.0]]]])) < 1e-6
    assert penalty_reduced_focal_loss(-perfect, torch.tensor([[[[1.0, 0.0]]]])) > 10


def test_pull_push_losses_hand_computed():
    # image 0: objects with corners (0, 0.2) and (2, 2); image 1: one object, one padded slot
    top_left = torch.tensor([[0.0, 2.0], [1.0, 9.0]])
    bottom_right = torch.tensor([[0.2, 2.0], [1.0, -9.0]])
    mask = torch.tensor([[True, True], [True, False]])
    pull, push = pull_push_losses(top_left, bottom_right, mask)
    # image 0: pull = (0.1^2 + 0.1^2 + 0) / 2 = 0.01; means 0.1 and 2 are 1.9 apart > margin 1 -> push 0
    # image 1: one object, perfect pull, no pair to push; the padded slot is ignored
    assert torch.allclose(pull, torch.tensor(0.01 / 2))
    assert torch.allclose(push, torch.tensor(0.0))
    close = torch.tensor([[0.0, 0.25]])
    _, push = pull_push_losses(close, close, torch.tensor([[True, True]]))
    assert torch.allclose(push, torch.tensor(0.75))  # 2 ordered pairs x (1 - 0.25) / (2 x 1)


def test_pull_push_losses_are_differentiable_and_zero_without_objects():
    e = torch.randn(3, 4, requires_grad=True)
    pull, push = pull_push_losses(e, e * 0.5, torch.zeros(3, 4, dtype=torch.bool))
    assert pull == 0 and push == 0
    pull, push = pull_push_losses(e, e * 0.5, torch.ones(3, 4, dtype=torch.bool))
    (pull + push).backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_loss_never_exceeds_cross_entropy(gamma):
    logits, targets = random_case()
    assert focal_loss(logits, targets, alpha=-1, gamma=gamma) < focal_loss(logits, targets, alpha=-1, gamma=0)
