"""`specaware federated` end to end: client data -> Flower simulation of every strategy ->
rounds.jsonl, summary table, PNG (and the membership-inference audit when `audit=true`).

Output folder:
    federated_config.json   resolved config (what every ClientApp and the ServerApp read)
    data/client-<i>.npz, data/partition.json    each client's tiles and the class counts
    rounds.jsonl            one JSON object per strategy and round (see report.py)
    messages.jsonl          size and array keys of every message sent or received
    models/<strategy>/client-<i>.safetensors    final client models (trainable parameters)
    summary.json, summary.md, accuracy_vs_rounds_and_bytes.png
    audit/<strategy>/client-<i>/audit.json, roc.png    with audit=true
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from specaware.config import to_dict
from specaware.federated.config import FederatedConfig, validate
from specaware.federated.partition import build_clients
from specaware.federated.report import log_wandb, plot, read_rounds, summarize, table
from specaware.federated.setup import CONFIG_FILE

log = logging.getLogger(__name__)


def write_config(cfg: FederatedConfig, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    path.write_text(json.dumps(to_dict(cfg), indent=1))
    return path


def simulate(config_path: Path, num_clients: int) -> None:
    """Flower's simulation engine (Ray backend): one virtual SuperNode per client, as many
    ClientApps at a time as there are cores."""
    from flwr.simulation import run_simulation

    from specaware.federated.client import make_client_app
    from specaware.federated.server import make_server_app
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")   # CPU-only clients
    run_simulation(server_app=make_server_app(str(config_path)),
                   client_app=make_client_app(str(config_path)),
                   num_supernodes=num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": min(cores, num_clients),
                                                 "include_dashboard": False}})


def run(cfg: FederatedConfig) -> dict:
    """Run every strategy of `cfg`; returns the summary (also written to OUT/summary.json)."""
    validate(cfg)
    out = Path(cfg.out)
    build_clients(cfg.data, cfg.clients, out / "data")
    classes = json.loads((out / "data" / "partition.json").read_text())["classes"]
    cfg = replace(cfg, classes=classes)
    config_path = write_config(cfg, out)
    if cfg.engine == "simulation":
        simulate(config_path, len(cfg.clients))
    else:
        deploy(cfg, config_path)
    check_complete(cfg, out / "rounds.jsonl")
    return report(cfg, out)


def check_complete(cfg: FederatedConfig, rows_path: Path) -> None:
    """Every strategy reached its last round, else the Flower run failed part-way."""
    done = set()
    if rows_path.is_file():
        done = {(r["strategy"], r["round"]) for r in read_rounds(rows_path)}
    missing = [s for s in cfg.strategies if (s, cfg.train.rounds) not in done]
    if missing:
        raise RuntimeError(f"{rows_path}: strategies {missing} did not reach round "
                           f"{cfg.train.rounds}: the Flower run failed (see the log above, or "
                           "flwr_run.log / superlink.log / supernode-*.log in the output "
                           "folder for the deployment engine)")


def deploy(cfg: FederatedConfig, config_path: Path) -> None:
    """Flower's deployment engine: submit to `deployment.superlink`, or start a SuperLink and
    one SuperNode per client on 127.0.0.1 when none is given."""
    from specaware.federated.deploy import LocalFederation, submit
    out, text = Path(cfg.out), config_path.read_text()
    dep = cfg.deployment
    if dep.superlink:
        result = submit(text, out, dep.superlink, dep.timeout, dep.insecure,
                        dep.root_certificates)
    else:
        data = [out / "data" / f"client-{i}.npz" for i in range(len(cfg.clients))]
        with LocalFederation(out, data) as federation:
            result = federation.run(text, dep.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"`flwr run` failed with code {result.returncode}; see "
                           f"{out / 'flwr_run.log'}")


def report(cfg: FederatedConfig, out: Path) -> dict:
    rows = read_rounds(out / "rounds.jsonl")
    summary = summarize(rows)
    partition = json.loads((out / "data" / "partition.json").read_text())
    clients = [c["name"] for c in partition["clients"]]
    leakage = None
    if cfg.audit:
        from specaware.audit.federated import audit_run
        leakage = audit_run(cfg, out)
        for name, aucs in leakage.items():
            summary[name]["audit_auc"] = aucs
    text = table(summary, clients, leakage)
    encoder = cfg.model.checkpoint or f"{cfg.model.variant} with RANDOM weights (no checkpoint)"
    header = (f"encoder: {encoder}; {len(clients)} clients "
              f"({', '.join(clients)}); Dirichlet alpha {cfg.data.alpha}; "
              f"{cfg.train.rounds} rounds x {cfg.train.local_epochs} local epoch(s)\n\n")
    (out / "summary.md").write_text(header + text + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(rows, out / "accuracy_vs_rounds_and_bytes.png")
    log_wandb(cfg, rows, out, to_dict(cfg))
    return {"summary": summary, "table": header + text, "out": str(out)}
