"""Server side: FedAvg and prototype aggregation against hand-computed values, and the bytes
counted against the serialized messages."""
import numpy as np
import pytest
from flwr.app import (Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord,
                      RecordDict)
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from specaware.federated.strategy import SpecawareFedAvg, message_bytes


def _request(node: int) -> Message:
    return Message(RecordDict({"config": ConfigRecord({"strategy": "prompt_dual"})}),
                   dst_node_id=node, message_type=MessageType.TRAIN)


def _reply(node: int, shared: np.ndarray, n: int, mean=None, count=None) -> Message:
    arrays = {"prompts.groups.shared": Array(shared)}
    if mean is not None:
        arrays["prototype.mean"], arrays["prototype.count"] = Array(mean), Array(count)
    content = RecordDict({"arrays": ArrayRecord(arrays),
                          "metrics": MetricRecord({"num-examples": n, "train-loss": 1.0,
                                                   "partition-id": node})})
    return Message(content, reply_to=_request(node))


def test_fedavg_equals_hand_computed_weighted_mean(task_identity):
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = np.array([[5.0, 6.0], [7.0, 8.0]], np.float32)
    c = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    strategy = SpecawareFedAvg(3, "prompt_shared")
    strategy._current = {}
    arrays, _ = strategy.aggregate_train(1, [_reply(1, a, 1), _reply(2, b, 3), _reply(3, c, 6)])
    expected = (1 * a + 3 * b + 6 * c) / 10          # weighted by num-examples
    np.testing.assert_allclose(arrays["prompts.groups.shared"].numpy(), expected, rtol=1e-6)
    assert "prototype.global" not in arrays


def test_prototypes_are_count_weighted_and_nan_where_no_client_has_the_class(task_identity):
    shared = np.zeros((1, 2), np.float32)
    m1 = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]], np.float32)
    m2 = np.array([[3.0, 3.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    c1, c2 = np.array([1, 4, 0], np.float32), np.array([3, 0, 0], np.float32)
    strategy = SpecawareFedAvg(2, "prompt_dual")
    strategy._current = {}
    arrays, _ = strategy.aggregate_train(1, [_reply(1, shared, 5, m1, c1),
                                             _reply(2, shared, 3, m2, c2)])
    proto = arrays["prototype.global"].numpy()
    np.testing.assert_allclose(proto[0], [(1 * 1 + 3 * 3) / 4] * 2)   # class 0: both clients
    np.testing.assert_allclose(proto[1], [2.0, 0.0])                    # class 1: client 1 only
    assert np.isnan(proto[2]).all()                                     # class 2: nobody
    assert set(arrays) == {"prompts.groups.shared", "prototype.global"}


class _Grid:
    """The part of Flower's Grid that FedAvg.configure_* uses."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def test_bytes_counted_equal_serialized_message_sizes(task_identity):
    shared = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    strategy = SpecawareFedAvg(2, "prompt_shared")
    messages = strategy.configure_train(1, ArrayRecord({"p": Array(shared)}),
                                        ConfigRecord({"strategy": "prompt_shared"}),
                                        _Grid([11, 12]))
    # what Flower pushes for a message: every object of its tree, deflated (header + body)
    serialized = [sum(len(o.deflate()) for o in get_all_nested_objects(m).values())
                  for m in messages]
    assert strategy._current["bytes_down"] == sum(serialized)
    assert [message_bytes(m) for m in messages] == serialized
    # the payload dominates: 1 KiB of float32 plus well under 1 KiB of framing per message
    assert all(shared.nbytes < s < shared.nbytes + 1024 for s in serialized)
    replies = [_reply(11, shared[:1], 2), _reply(12, shared[:1], 2)]
    strategy.aggregate_train(1, replies)
    assert strategy._current["bytes_up"] == sum(message_bytes(r) for r in replies)
    assert [t["phase"] for t in strategy.traffic] == ["train_down"] * 2 + ["train_up"] * 2


def test_bytes_grow_with_the_payload(task_identity):
    small = message_bytes(_reply(1, np.zeros((1, 8), np.float32), 1))
    large = message_bytes(_reply(1, np.zeros((101, 8), np.float32), 1))
    assert large - small == pytest.approx(100 * 8 * 4, abs=16)


def test_a_failing_client_stops_the_run_naming_node_and_reason(task_identity):
    from flwr.app import Error
    ok = _reply(1, np.zeros((1, 2), np.float32), 1)
    bad = Message(Error(code=0, reason="client-1.npz not found"), reply_to=_request(2))
    strategy = SpecawareFedAvg(2, "prompt_shared")
    strategy._current = {}
    with pytest.raises(RuntimeError, match="round 3, train: 1 of 2 clients.*client-1.npz"):
        strategy.aggregate_train(3, [ok, bad])
