"""The demo, stage by stage: synth -> shard -> pretrain (DeepSpeed) -> export -> reconstruction
panels -> three fine-tuning tasks (pretrained vs random encoder) -> table + report.

Each stage is what a user would type (the equivalent command is printed), run in this process
except pretraining, which runs under torchrun (or as one plain process) like any real run.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

from specaware.demo import downstream, figures, report
from specaware.demo.plan import Plan
from specaware.demo.stages import StageError, Stages, run_command

log = logging.getLogger(__name__)


class Paths:
    def __init__(self, out: Path):
        self.out = out
        self.synth = out / "data" / "synth"
        self.shards = out / "data" / "shards"
        self.tiles = out / "data" / "class_tiles"
        self.run = out / "pretrain"
        self.export = out / "export" / "specaware_demo.safetensors"
        self.finetune = out / "finetune"
        self.report = out / "report"
        self.logs = out / "logs"


def _cli(argv: list[str], shown: str = "") -> None:
    """Run a `specaware` subcommand in this process, printing it as a command line first
    (`shown`: a shorter equivalent to print, e.g. with a glob instead of 65 file names)."""
    from specaware.cli import main
    print("  $ specaware " + (shown or " ".join(argv)), flush=True)
    code = main(argv)
    if code:
        raise StageError(f"`specaware {' '.join(argv)}` exited with {code}")


def stage_synth(stages: Stages, plan: Plan, p: Paths) -> None:
    argv = ["synth", "--out", str(p.synth), "--seed", str(plan.seed), "--size", str(plan.size),
            "--scenes", str(plan.scenes)]
    stages.run("synth", f"{plan.scenes} scenes x 4 sensors x 2 dates from real spectra",
               {"argv": argv}, [p.synth], lambda: _cli(argv))


def stage_shard(stages: Stages, plan: Plan, p: Paths) -> None:
    def go():
        scenes = sorted(str(x) for x in (p.synth / "images").glob("*")
                        if x.suffix in (".img", ".tif"))
        scenes += sorted(str(x) for x in (p.synth / "real").glob("*.tif"))
        tail = ["--out", str(p.shards), "--tile", str(plan.pretrain_tile), "--quiet"]
        _cli(["shard", *scenes, *tail], " ".join(["shard", f"{p.synth}/images/*.{{img,tif}}",
                                                  f"{p.synth}/real/*.tif", *tail]))
        manifest = json.loads((p.shards / "manifest.json").read_text())
        return {"tiles": manifest["total"], "sensors": {k: v["count"] for k, v in
                                                        manifest["sensors"].items()}}
    stages.run("shard", f"tile every image into {plan.pretrain_tile} px webdataset shards",
               {"tile": plan.pretrain_tile, "synth": stages.stamp("synth")}, [p.shards], go)


def pretrain_command(plan: Plan, p: Paths) -> tuple[list[str], dict[str, str]]:
    """torchrun with `plan.procs` processes (or one plain process) running specaware.training."""
    config = str(Path(plan.config_dir) / "pretrain.yaml")
    items = [config, f"data.shards={p.shards}", f"checkpoint.run_dir={p.run}",
             f"train.steps={plan.pretrain_steps}", f"checkpoint.every={plan.pretrain_steps}",
             f"wandb.panel_every={max(plan.pretrain_steps // 2, 1)}", f"train.seed={plan.seed}"]
    if plan.procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nnodes", "1", "--nproc_per_node", str(plan.procs)]
    else:
        launcher = [sys.executable]
    from specaware.demo.plan import available_cores
    threads = max(1, available_cores() // plan.procs)
    return [*launcher, "-m", "specaware.training", *items], {"OMP_NUM_THREADS": str(threads)}


def stage_pretrain(stages: Stages, plan: Plan, p: Paths) -> None:
    cmd, env = pretrain_command(plan, p)
    what = (f"pretrain the debug model with DeepSpeed on {plan.procs} process(es), "
            f"{plan.pretrain_steps} steps")

    def go():
        run_command(cmd, p.logs / "pretrain.log", env)
        return {"procs": plan.procs}
    stages.run("pretrain", what, {"cmd": cmd[1:], "shard": stages.stamp("shard")}, [p.run], go)


def stage_export(stages: Stages, plan: Plan, p: Paths) -> None:
    argv = ["export", str(p.run), str(p.export)]
    stages.run("export", "consolidate the DeepSpeed checkpoint into safetensors + JSON",
               {"argv": argv, "pretrain": stages.stamp("pretrain")},
               [p.export, p.export.with_suffix(".json")], lambda: _cli(argv))


def stage_pictures(stages: Stages, plan: Plan, p: Paths) -> None:
    def go():
        p.report.mkdir(parents=True, exist_ok=True)
        figures.loss_curve(p.run / "metrics.jsonl", p.report / "pretrain_loss.png")
        made = figures.reconstruction_panels(p.export, p.shards, p.report, plan.seed)
        return {"panels": {k: str(v) for k, v in made.items()}}
    stages.run("panels", "loss curve and one reconstruction panel per sensor",
               {"export": stages.stamp("export")},
               [p.report / "pretrain_loss.png"], go)


def stage_task_data(stages: Stages, plan: Plan, p: Paths) -> downstream.TaskData:
    data = downstream.select(p.synth, plan.sensor)

    def go():
        counts = downstream.write_class_tiles(data, p.tiles, plan.class_tile, plan.class_purity,
                                              plan.max_tiles_per_class)
        print(f"  classification tiles per class: {counts}")
        return {"class_tiles": counts}
    stages.run("task-data", f"labelled {plan.sensor} data for the three tasks",
               {"tile": plan.class_tile, "purity": plan.class_purity,
                "max": plan.max_tiles_per_class, "sensor": plan.sensor,
                "synth": stages.stamp("synth")}, [p.tiles], go)
    return data


def stage_finetune(stages: Stages, plan: Plan, p: Paths, task: str,
                   data: downstream.TaskData) -> dict:
    """Fine-tune `task` from the pretrained and from a random encoder; returns the summary."""
    config = str(Path(plan.config_dir) / f"{task}.yaml")
    items = downstream.overrides(task, data, p.tiles, plan.class_tile) + [
        f"model.checkpoint={p.export}", "model.init=both", f"out={p.finetune / task}",
        f"protocol.seeds=[{','.join(map(str, plan.finetune_seeds))}]", "progress=false"]
    if plan.finetune_epochs:
        items.append(f"optim.epochs={plan.finetune_epochs}")

    def go():
        summary = _finetune(task, config, items, p.logs / f"finetune_{task}.log")
        maps = figures.task_maps(task, p.finetune / task, data, p.report, plan.finetune_seeds[0])
        return {"summary": summary, "maps": [str(m) for m in maps]}
    what = f"{task}: pretrained vs random encoder, seeds {list(plan.finetune_seeds)}"
    result = stages.run(f"finetune-{task}", what,
                        {"items": items, "config": Path(config).read_text(),
                         "export": stages.stamp("export"), "data": stages.stamp("task-data")},
                        [p.finetune / task], go)
    return result.info["summary"]


def _finetune(task: str, config: str, items: list[str], log_path: Path) -> dict:
    from specaware.config import build
    from specaware.finetune.config import FinetuneConfig
    from specaware.finetune.runner import run
    shown = [i if len(i) < 120 else i.split("=")[0] + "=[...]" for i in items]
    print(f"  $ specaware finetune --config {config} " + " ".join(shown), flush=True)
    print(f"  (per-epoch log: {log_path})", flush=True)
    cfg = build(FinetuneConfig, [config], items)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        handler = logging.StreamHandler(f)
        logging.getLogger("specaware").addHandler(handler)
        try:
            summary = run(cfg)
        finally:
            logging.getLogger("specaware").removeHandler(handler)
    print(report.task_line(task, summary), flush=True)
    return summary


def run(plan: Plan, out: Path, fresh: bool) -> int:
    p = Paths(Path(out))
    stages = Stages(p.out, fresh)
    print(f"specaware demo -> {p.out}  (plan: {json.dumps(plan.as_dict(), default=str)})")
    try:
        stage_synth(stages, plan, p)
        stage_shard(stages, plan, p)
        stage_pretrain(stages, plan, p)
        stage_export(stages, plan, p)
        stage_pictures(stages, plan, p)
        data = stage_task_data(stages, plan, p)
        summaries = {t: stage_finetune(stages, plan, p, t, data) for t in downstream.TASKS}
    except StageError as e:
        print(f"\ndemo stopped: {e}", file=sys.stderr)
        return 1
    table = report.table(summaries)
    page = report.write(p, plan, summaries, stages)
    print("\n" + table)
    print("\n" + report.verdict(summaries))
    print("\nstage timings:\n" + stages.timing_table())
    print(f"\nreport: {page}")
    return 0
