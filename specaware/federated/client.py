"""The Flower ClientApp of `specaware federated`: one site's local training and evaluation.

Each message names the strategy (ConfigRecord "config": strategy, lr, ...) and carries the
server's arrays (the strategy's shared parameters, plus `prototype.global` for prompt_dual).
Everything else the client trains (private prompts, head) lives in Flower's `context.state`
under "<strategy>.private" and is never put in a reply. A reply holds exactly the shared
parameters (and the client's class prototypes for prompt_dual).

The run's resolved config comes from the run config in the deployment engine (`config-json`,
the JSON text, or `config`, a path), else from the path the app was made with (simulation,
`make_client_app`). A SuperNode's node config gives `partition-id` and optionally `data-path`.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from specaware.federated.model import ClientModel, local_loss
from specaware.federated.setup import ClientSetup, load_setup

log = logging.getLogger(__name__)
PROTO = "prototype."


def _setup(context: Context, default_config: str | None) -> ClientSetup:
    """Config from the run config (`config-json` text or `config` path, deployment engine) or
    the path the app was made with (simulation); data from the node config's `data-path` or
    the run folder."""
    source = (context.run_config.get("config-json") or context.run_config.get("config")
              or default_config or "")
    return load_setup(str(source), int(context.node_config["partition-id"]),
                      str(context.node_config.get("data-path", "")))


def build_model(setup: ClientSetup, strategy: str, context: Context,
                arrays: ArrayRecord) -> tuple[ClientModel, torch.Tensor | None]:
    """The client's model for `strategy`: fresh private parameters on first contact (seeded by
    the client), then the ones kept in context.state; shared ones from the server's arrays."""
    torch.manual_seed(setup.cfg.train.seed * 1000 + setup.partition)
    model = ClientModel(copy.deepcopy(setup.encoder), setup.num_classes, strategy,
                        setup.cfg.model)
    key = f"{strategy}.private"
    if key in context.state.array_records:
        model.load_state_of(dict(context.state.array_records[key].to_torch_state_dict()))
    state = dict(arrays.to_torch_state_dict())
    prototypes = state.pop(f"{PROTO}global", None)
    model.load_state_of(state)
    return model, prototypes


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def fit(model: ClientModel, setup: ClientSetup, prototypes, round_: int) -> float:
    """Local epochs of AdamW on the client's training tiles; returns the mean loss."""
    t = setup.cfg.train
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in encoder_ids], "lr": t.lr},
              {"params": [p for p in params if id(p) in encoder_ids], "lr": t.encoder_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=t.weight_decay)
    train = setup.data.indices("train")
    rng = np.random.default_rng([t.seed, setup.partition, round_])
    model.train()
    losses = []
    for _ in range(t.local_epochs):
        for idx in _batches(len(train), t.batch_size, rng):
            loss, _ = local_loss(model, setup.data.batch(train[idx]), prototypes,
                                 t.dual_weight, t.prototype_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return float(np.mean(losses)) if losses else 0.0


@torch.no_grad()
def class_prototypes(model: ClientModel, setup: ClientSetup) -> dict[str, torch.Tensor]:
    """Class means of the shared-only features over the training tiles [K, d] and counts [K]
    (classes the client lacks: zero mean, zero count)."""
    model.eval()
    train = setup.data.indices("train")
    feats = torch.cat([model.features(setup.data.batch(train[i:i + 64]), ("shared",))
                       for i in range(0, len(train), 64)])
    labels = torch.from_numpy(setup.data.label[train])
    k = setup.num_classes
    counts = torch.bincount(labels, minlength=k).float()
    sums = torch.zeros(k, feats.shape[1]).index_add_(0, labels, feats)
    return {f"{PROTO}mean": sums / counts.clamp(min=1)[:, None], f"{PROTO}count": counts}


@torch.no_grad()
def predict(model: ClientModel, setup: ClientSetup, index: np.ndarray) -> torch.Tensor:
    """Class probabilities [N, K] of the tiles `index`."""
    model.eval()
    return torch.cat([model(setup.data.batch(index[i:i + 64])).softmax(-1)
                      for i in range(0, len(index), 64)])


def make_client_app(default_config: str | None = None) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        setup = _setup(context, default_config)
        conf = msg.content["config"]
        strategy, round_ = str(conf["strategy"]), int(conf["server-round"])
        model, prototypes = build_model(setup, strategy, context, msg.content["arrays"])
        loss = fit(model, setup, prototypes, round_)
        context.state[f"{strategy}.private"] = ArrayRecord(model.state_of(model.private_names()))
        shared = model.state_of(model.shared_names())
        if strategy == "prompt_dual":
            shared.update(class_prototypes(model, setup))
        metrics = {"num-examples": len(setup.data.indices("train")), "train-loss": loss,
                   "partition-id": setup.partition}
        return Message(RecordDict({"arrays": ArrayRecord(shared),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        setup = _setup(context, default_config)
        conf = msg.content["config"]
        strategy = str(conf["strategy"])
        model, _ = build_model(setup, strategy, context, msg.content["arrays"])
        val = setup.data.indices("val")
        prob = predict(model, setup, val)
        acc = float((prob.argmax(-1).numpy() == setup.data.label[val]).mean())
        if int(conf["server-round"]) == int(conf.get("num-rounds", -1)):
            setup.save_client_model(model, strategy)
        metrics = {"num-examples": len(val), "accuracy": acc, "partition-id": setup.partition}
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = make_client_app()
