"""The Flower ServerApp of `specaware federated`: every strategy in turn, Flower's round loop.

For each strategy the server builds the initial shared parameters from the public encoder
(the same seeded initialisation every client would make), hands them to `SpecawareFedAvg.start`
and appends one JSON object per round to `OUT/rounds.jsonl`. Every message's size and array
keys go to `OUT/messages.jsonl`, so what travelled can be checked after the run.
"""
from __future__ import annotations

import json
import logging

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from specaware.federated.model import ClientModel
from specaware.federated.setup import load_encoder, read_config
from specaware.federated.strategy import PROTO, SpecawareFedAvg

log = logging.getLogger(__name__)


def initial_arrays(cfg, strategy: str, num_classes: int) -> ArrayRecord:
    torch.manual_seed(cfg.train.seed)
    model = ClientModel(load_encoder(cfg), num_classes, strategy, cfg.model)
    arrays = ArrayRecord(model.state_of(model.shared_names()))
    if strategy == "prompt_dual":
        arrays[f"{PROTO}global"] = Array(torch.full((num_classes, model.encoder.embed_dim),
                                                    float("nan")).numpy())
    return arrays


def run_strategies(grid: Grid, config_source: str) -> None:
    """All of the config's strategies on the connected clients, results into the run folder."""
    cfg, run_dir = read_config(config_source)
    classes = cfg.classes or json.loads((run_dir / "data" / "partition.json").read_text())[
        "classes"]
    run_dir.mkdir(parents=True, exist_ok=True)
    rounds_file, messages_file = run_dir / "rounds.jsonl", run_dir / "messages.jsonl"
    for path in (rounds_file, messages_file):
        path.unlink(missing_ok=True)

    def on_round(record: dict) -> None:
        with rounds_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.warning("%s round %d: accuracy %.3f, bytes up %d down %d", record["strategy"],
                    record["round"], record["accuracy"], record["bytes_up"],
                    record["bytes_down"])

    for name in cfg.strategies:
        strategy = SpecawareFedAvg(len(cfg.clients), name, on_round)
        conf = {"strategy": name, "num-rounds": cfg.train.rounds}
        strategy.start(grid, initial_arrays(cfg, name, len(classes)),
                       num_rounds=cfg.train.rounds, timeout=3600,
                       train_config=ConfigRecord(dict(conf)),
                       evaluate_config=ConfigRecord(dict(conf)))
        with messages_file.open("a") as f:
            for row in strategy.traffic:
                f.write(json.dumps({"strategy": name, **row}) + "\n")


def make_server_app(default_config: str | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        source = (context.run_config.get("config-json") or context.run_config.get("config")
                  or default_config or "")
        run_strategies(grid, str(source))

    return app


app = make_server_app()
