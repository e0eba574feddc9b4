"""Probe reports: patch information loss and importance scores over score dicts."""

import numpy as np
import pytest

from lmms_ac.robustness import make_perturbation
from lmms_ac.robustness.probes import (
    group_importance,
    group_noise_tasks,
    group_tasks,
    importance,
    importance_score,
    information_loss,
    noise_tasks,
    patch_information_loss,
)


def test_group_tasks_list_every_group():
    assert group_tasks("mme", 2) == [f"mme_tokgroup_m2_g{g}" for g in range(4)]
    assert len(group_tasks("mme", 4)) == 16


def test_patch_information_loss_map():
    scores = {"mme": 80.0, **{t: 80.0 - 10 * g for g, t in enumerate(group_tasks("mme", 2))}}
    pil = patch_information_loss(scores, "mme", 2)
    assert pil.shape == (2, 2)
    np.testing.assert_allclose(pil, [[0.0, 0.125], [0.25, 0.375]])
    assert information_loss(80, 60) == 0.25


def test_missing_or_zero_clean_scores_are_errors():
    with pytest.raises(KeyError, match="missing scores"):
        patch_information_loss({"mme": 1.0}, "mme", 2)
    scores = {"mme": 0.0, **{t: 1.0 for t in group_tasks("mme", 2)}}
    with pytest.raises(ValueError, match="clean score is 0"):
        patch_information_loss(scores, "mme", 2)


def test_importance_score_formula():
    assert importance_score(50.0, [40.0, 45.0, 30.0]) == pytest.approx(10.0)
    assert importance_score(50.0, [55.0]) == pytest.approx(-10.0)


def test_noise_tasks_use_seeds_zero_to_k():
    tasks = noise_tasks("mme", "modnoise_image_l8", 10)
    assert tasks[0] == "mme_modnoise_image_l8" and tasks[9] == "mme_modnoise_image_l8_s9"
    assert len(set(tasks)) == 10
    with pytest.raises(ValueError, match="deterministic"):
        noise_tasks("mme", make_perturbation("tokgroup", m=2, group=0))


def test_importance_and_group_importance_from_scores():
    scores = {"mme": 100.0}
    for g, tasks in group_noise_tasks("mme", 2, draws=3).items():
        for k, t in enumerate(tasks):
            scores[t] = 100.0 - 10 * g - k  # max over draws is the k = 0 draw
    assert importance(scores, "mme", "toknoise_m2_g1", draws=3) == pytest.approx(10.0)
    np.testing.assert_allclose(group_importance(scores, "mme", 2, draws=3), [[0, 10], [20, 30]])
