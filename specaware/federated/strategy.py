"""The server side: Flower's FedAvg with the bookkeeping the report needs.

Flower's `FedAvg` (flwr.serverapp.strategy) runs the rounds (`Strategy.start`) and averages the
shared parameters weighted by each reply's `num-examples` (FedAvg, McMahan et al. 2017).
`SpecawareFedAvg` adds:
- class-prototype aggregation (prompt_dual): replies carry `prototype.mean` [K, d] and
  `prototype.count` [K]; the server's `prototype.global` is the count-weighted mean per class
  (NaN for a class no client has). This stands in for FedRSCLIP's image-text alignment,
  which needs a text tower specaware does not have;
- traffic: the serialized size of every message sent and received (`message_bytes`), split
  into training (`bytes_down`, `bytes_up`) and evaluation traffic;
- per-client validation accuracy, one record per round in `self.rounds` (and `on_round`).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

PROTO = "prototype."


def message_bytes(message: Message) -> int:
    """Bytes of a message as Flower serializes it for transport: the message object and every
    nested object (records, arrays, array chunks), each deflated once."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def aggregate_prototypes(records: list[RecordDict]) -> np.ndarray:
    """Count-weighted class means over clients: [K, d], NaN rows for unseen classes."""
    sums, counts = 0.0, 0.0
    for rec in records:
        arrays = rec["arrays"]
        mean, count = arrays[f"{PROTO}mean"].numpy(), arrays[f"{PROTO}count"].numpy()
        sums, counts = sums + mean * count[:, None], counts + count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan).astype(np.float32)


def _without_prototypes(rec: RecordDict) -> RecordDict:
    arrays = ArrayRecord({k: v for k, v in rec["arrays"].items() if not k.startswith(PROTO)})
    return RecordDict({"arrays": arrays, "metrics": rec["metrics"]})


class SpecawareFedAvg(FedAvg):
    """FedAvg over all connected clients, with prototypes, traffic and per-client metrics."""

    def __init__(self, num_clients: int, strategy: str,
                 on_round: Callable[[dict], None] | None = None):
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=num_clients,
                         min_evaluate_nodes=num_clients, min_available_nodes=num_clients)
        self.strategy, self.on_round = strategy, on_round
        self.rounds: list[dict] = []
        self.traffic: list[dict] = []     # one entry per message: round, phase, node, bytes, keys
        self._current: dict = {}

    def _count(self, round_: int, phase: str, messages: Iterable[Message]) -> int:
        total = 0
        for msg in messages:
            size = message_bytes(msg)
            total += size
            arrays = msg.content.array_records if msg.has_content() else {}
            self.traffic.append({"round": round_, "phase": phase, "bytes": size,
                                 "node": msg.metadata.dst_node_id if phase.endswith("down")
                                 else msg.metadata.src_node_id,
                                 "keys": sorted(k for rec in arrays.values() for k in rec)})
        return total

    def _require_all(self, round_: int, phase: str, replies: list[Message]) -> None:
        """Every site takes part in every round: a ClientApp error stops the run, naming the
        node and Flower's reason, instead of averaging over the sites that answered."""
        failed = [m for m in replies if m.has_error()]
        if failed or len(replies) < self.min_train_nodes:
            reasons = "; ".join(f"node {m.metadata.src_node_id}: {m.error.reason}"
                                for m in failed) or "no reply before the timeout"
            raise RuntimeError(f"{self.strategy}, round {round_}, {phase}: "
                               f"{len(replies) - len(failed)} of {self.min_train_nodes} clients "
                               f"answered ({reasons})")

    def configure_train(self, server_round, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._current = {"round": server_round, "strategy": self.strategy,
                         "bytes_down": self._count(server_round, "train_down", messages)}
        return messages

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self._current["bytes_up"] = self._count(server_round, "train_up", replies)
        self._require_all(server_round, "train", replies)
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        plain = [_without_prototypes(c) for c in contents]
        arrays = aggregate_arrayrecords(plain, self.weighted_by_key)
        if any(f"{PROTO}mean" in c["arrays"] for c in contents):
            arrays[f"{PROTO}global"] = Array(aggregate_prototypes(contents))
        metrics = self.train_metrics_aggr_fn(plain, self.weighted_by_key)
        self._current["train_loss"] = float(metrics.get("train-loss", float("nan")))
        return arrays, metrics

    def configure_evaluate(self, server_round, arrays, config, grid):
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self._current["bytes_eval_down"] = self._count(server_round, "eval_down", messages)
        return messages

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        self._current["bytes_eval_up"] = self._count(server_round, "eval_up", replies)
        self._require_all(server_round, "evaluate", replies)
        valid, _ = self._check_and_log_replies(replies, is_train=False)
        clients = {}
        for m in valid:
            rec = m.content["metrics"]
            clients[int(rec["partition-id"])] = {"accuracy": float(rec["accuracy"]),
                                                 "num_examples": int(rec["num-examples"])}
        n = sum(c["num_examples"] for c in clients.values())
        acc = sum(c["accuracy"] * c["num_examples"] for c in clients.values()) / max(n, 1)
        record = {**self._current, "accuracy": acc,
                  "clients": {str(k): clients[k] for k in sorted(clients)}}
        self.rounds.append(record)
        if self.on_round is not None:
            self.on_round(record)
        return MetricRecord({"accuracy": acc})
