"""Membership-inference attacks: hand-computed scores and metrics, and each attack's AUC near
0.5 on a model that never saw the members, clearly above it on an overfitted one."""
import numpy as np
import pytest
import torch

from specaware.audit.attacks import (attack_metrics, entropy_score, matched_sets,
                                     modified_entropy_score, roc)
from specaware.audit.core import ATTACKS, audit_predictions, write_audit
from specaware.audit.lira import lira_score, train_head


def test_entropy_and_modified_entropy_match_hand_computation():
    p = np.array([[0.7, 0.2, 0.1]])
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert entropy_score(p)[0] == pytest.approx(-h)
    # Song & Mittal eq. 4 with y = 1: -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k)
    mentr = -(1 - 0.2) * np.log(0.2) - 0.7 * np.log(0.3) - 0.1 * np.log(0.9)
    assert modified_entropy_score(p, np.array([1]))[0] == pytest.approx(-mentr)
    # a confident wrong prediction is not taken for a member
    assert modified_entropy_score(np.array([[0.99, 0.01]]), np.array([1]))[0] < \
        modified_entropy_score(np.array([[0.6, 0.4]]), np.array([1]))[0]


def test_roc_metrics_of_a_small_hand_example():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    member = np.array([1, 1, 0, 1, 0, 0], bool)
    fpr, tpr = roc(score, member)
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    m = attack_metrics(score, member)
    assert m["auc"] == pytest.approx(8 / 9)           # 8 of 9 member/non-member pairs ordered
    assert m["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["tpr_at_1pct_fpr"] == pytest.approx(2 / 3)
    assert m["min_fpr"] == pytest.approx(1 / 3)


def test_matched_sets_have_equal_size_and_come_from_their_pools():
    members, non = matched_sets(np.arange(10), np.arange(100, 104), seed=0)
    assert len(members) == len(non) == 4
    assert set(members) <= set(range(10)) and set(non) == set(range(100, 104))


@pytest.fixture(scope="module")
def population():
    """Random features with random labels: only memorisation can tell members apart (width
    128 > 100 members, so a linear head can memorise them)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 128)).astype(np.float32)
    y = rng.integers(0, 4, size=300)
    return x, y


def _probs(x, y, train_idx, steps):
    head = train_head(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]), 4,
                      steps=steps, seed=1, weight_decay=0.0)
    with torch.no_grad():
        return head(torch.from_numpy(x)).softmax(-1).double().numpy()


@pytest.fixture(scope="module")
def audits(population):
    x, y = population
    members, non_members = np.arange(0, 100), np.arange(100, 200)
    idx = np.r_[members, non_members]
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    out = {}
    for name, train_idx in (("overfitted", members), ("never_saw", np.arange(200, 300))):
        prob = _probs(x, y, train_idx, steps=300)[idx]
        out[name] = audit_predictions(prob, y[idx], member, x[idx], 4, shadows=8,
                                      shadow_steps=150, seed=0)
    return out


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_auc_is_chance_on_a_model_that_never_saw_the_members(audits, attack):
    assert abs(audits["never_saw"][attack]["auc"] - 0.5) < 0.12


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_auc_is_clearly_above_chance_on_an_overfitted_model(audits, attack):
    assert audits["overfitted"][attack]["auc"] > 0.7
    assert audits["overfitted"][attack]["balanced_accuracy"] > 0.65


def test_lira_reports_its_shadows_and_scores_by_likelihood_ratio(audits):
    assert audits["overfitted"]["lira"]["shadows"] == 8
    phi = np.array([[0.0, 5.0], [0.0, 5.0], [4.0, 1.0], [4.0, 1.0]])   # [S=4, N=2]
    in_mask = np.array([[False, True], [False, True], [True, False], [True, False]])
    # candidate 0: IN shadows say 4, OUT say 0; candidate 1: IN 5, OUT 1
    score = lira_score(np.array([4.0, 1.5]), phi, in_mask)
    assert score[0] > 0 > score[1]


def test_audit_json_has_every_metric_per_attack(audits, tmp_path):
    import json
    write_audit(audits["overfitted"], tmp_path, {"title": "t"})
    saved = json.loads((tmp_path / "audit.json").read_text())["attacks"]
    for attack in ATTACKS:
        assert {"auc", "balanced_accuracy", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"} <= \
            set(saved[attack])
    assert (tmp_path / "roc.png").stat().st_size > 10_000
