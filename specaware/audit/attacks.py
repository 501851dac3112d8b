"""Black-box membership-inference scores and how they are scored (docs/FEDERATED.md "Audit").

The attacker sees only the target's class probabilities for a sample and the sample's label.
Higher score = "more likely a member".
- entropy (Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
  USENIX Security 2021, sec. 3): members get confident predictions; score = -H(p);
- modified entropy (same paper, eq. 4): uses the label, so a confident wrong prediction is not
  mistaken for a member; score = -Mentr(p, y),
  Mentr = -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k);
- LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022):
  `specaware.audit.lira`.

Metrics: ROC AUC; balanced accuracy of the best threshold ((TPR + TNR) / 2, maximised over
thresholds, the "attack accuracy" of the literature on balanced member/non-member sets); TPR at
1 % and 0.1 % FPR (Carlini et al. sec. 4: the low-FPR regime). With n non-members the smallest
FPR above 0 is 1/n: below it the TPR reported is the TPR at FPR = 0 (`min_fpr` says which).

Letters: N samples, K classes.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def entropy_score(prob: np.ndarray) -> np.ndarray:
    """prob [N, K] -> [N]: minus the prediction entropy (nats)."""
    p = np.clip(prob, EPS, 1.0)
    return (p * np.log(p)).sum(axis=1)


def modified_entropy_score(prob: np.ndarray, label: np.ndarray) -> np.ndarray:
    """prob [N, K], label [N] -> [N]: minus Song & Mittal's modified entropy."""
    p = np.clip(prob, EPS, 1 - EPS)
    rows = np.arange(len(label))
    py = p[rows, label]
    others = -(p * np.log(1 - p))
    others[rows, label] = 0.0
    mentr = -(1 - py) * np.log(py) + others.sum(axis=1)
    return -mentr


def roc(score: np.ndarray, member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1). Ties share one point."""
    order = np.argsort(-score, kind="stable")
    s, m = score[order], member[order].astype(bool)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp, fp = np.cumsum(m)[last_of_tie], np.cumsum(~m)[last_of_tie]
    pos, neg = max(int(m.sum()), 1), max(int((~m).sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR among the ROC points with FPR <= target."""
    return float(tpr[fpr <= target + 1e-12].max())


def attack_metrics(score: np.ndarray, member: np.ndarray) -> dict:
    """auc, balanced_accuracy, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr (+ counts, ROC points)."""
    if member.all() or not member.any():
        raise ValueError("an audit needs both members and non-members")
    fpr, tpr = roc(score, member)
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    n_out = int((~member.astype(bool)).sum())
    return {"auc": auc, "balanced_accuracy": float(((tpr + 1 - fpr) / 2).max()),
            "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.01),
            "tpr_at_0.1pct_fpr": tpr_at_fpr(fpr, tpr, 0.001),
            "members": int(member.sum()), "non_members": n_out, "min_fpr": 1.0 / n_out,
            "roc": {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}}


def matched_sets(members: np.ndarray, non_members: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Members and non-members subsampled to the same size (the smaller of the two)."""
    rng = np.random.default_rng(seed)
    n = min(len(members), len(non_members))
    return (np.sort(rng.choice(members, n, replace=False)),
            np.sort(rng.choice(non_members, n, replace=False)))
