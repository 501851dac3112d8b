"""One audit: the three attacks on one target's predictions, audit.json and the ROC plot.

`audit_predictions` takes what a black-box attacker has (the target's probabilities for each
candidate, the candidates' labels, the attacker's own features of them for LiRA's shadows) and
the ground truth of membership, which is used only to score the attacks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from specaware.audit.attacks import attack_metrics, entropy_score, modified_entropy_score
from specaware.audit.lira import lira_score, logit_confidence, shadow_confidences

ATTACKS = ("entropy", "modified_entropy", "lira")


def audit_predictions(prob: np.ndarray, label: np.ndarray, member: np.ndarray,
                      shadow_features: np.ndarray | None, num_classes: int, shadows: int = 16,
                      shadow_steps: int = 60, seed: int = 0) -> dict[str, dict]:
    """Per attack: auc, balanced_accuracy, tpr_at_1pct_fpr, tpr_at_0.1pct_fpr, roc points.

    prob [N, K] target probabilities; label [N]; member bool [N]; shadow_features [N, d] or
    None (LiRA skipped)."""
    member = np.asarray(member, bool)
    scores = {"entropy": entropy_score(prob),
              "modified_entropy": modified_entropy_score(prob, label)}
    if shadow_features is not None and shadows > 0:
        phi, in_mask = shadow_confidences(shadow_features, label, num_classes, shadows,
                                          shadow_steps, seed)
        scores["lira"] = lira_score(logit_confidence(prob, label), phi, in_mask)
    result = {name: attack_metrics(s, member) for name, s in scores.items()}
    if "lira" in result:
        result["lira"]["shadows"] = shadows
    return result


def write_audit(result: dict[str, dict], out: Path, info: dict) -> Path:
    """OUT/audit.json ({"info", "attacks": {name: metrics}}) and OUT/roc.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps({"info": info, "attacks": result}, indent=1))
    plot_roc(result, out / "roc.png", info.get("title", "membership inference"))
    return out / "audit.json"


def plot_roc(result: dict[str, dict], path: Path, title: str) -> Path:
    """Log-log ROC (the low-FPR regime is what matters, Carlini et al. sec. III-C)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4.6))
    floor = min(m["min_fpr"] for m in result.values()) / 2
    for name, m in result.items():
        fpr = np.maximum(np.asarray(m["roc"]["fpr"]), floor)
        tpr = np.maximum(np.asarray(m["roc"]["tpr"]), floor)
        ax.plot(fpr, tpr, label=f"{name} (AUC {m['auc']:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false positive rate", ylabel="true positive rate",
           title=title, xlim=(floor, 1), ylim=(floor, 1.05))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summary_line(result: dict[str, dict]) -> str:
    return ", ".join(f"{k} AUC {v['auc']:.3f}" for k, v in result.items())
