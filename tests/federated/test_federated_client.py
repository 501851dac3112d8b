"""Client side, on the messages themselves: the ClientApp is called in-process with the
messages the server would send, and its replies are inspected."""
import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from specaware.federated.client import make_client_app
from specaware.federated.server import initial_arrays
from specaware.federated.setup import read_config


def _train_message(arrays: ArrayRecord, strategy: str, round_: int) -> Message:
    conf = ConfigRecord({"strategy": strategy, "server-round": round_, "num-rounds": 9})
    return Message(RecordDict({"arrays": arrays, "config": conf}), dst_node_id=7,
                   message_type=MessageType.TRAIN)


def _context(partition: int) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": partition},
                   state=RecordDict(), run_config={})


def _all_bytes(message: Message) -> list[bytes]:
    return [a.data for rec in message.content.array_records.values() for a in rec.values()]


def test_private_prompts_and_head_never_leave_the_client(tiny_run, task_identity):
    cfg, _ = read_config(tiny_run)
    app, ctx = make_client_app(str(tiny_run)), _context(0)
    arrays = initial_arrays(cfg, "prompt_dual", 3)
    replies = []
    for round_ in (1, 2):
        reply = app(_train_message(arrays, "prompt_dual", round_), ctx)
        replies.append(reply)
        sent = set(reply.content["arrays"].keys())
        assert sent == {"prompts.groups.shared", "prototype.mean", "prototype.count"}
        arrays = ArrayRecord({"prompts.groups.shared": reply.content["arrays"][
            "prompts.groups.shared"], "prototype.global": arrays["prototype.global"]})
    private = ctx.state["prompt_dual.private"]
    assert {"prompts.groups.private", "head.1.weight"} <= set(private.keys())
    # no reply carries any private tensor's values, under whatever name
    for reply in replies:
        payload = b"".join(_all_bytes(reply))
        for name, value in private.items():
            raw = value.numpy().tobytes()
            assert raw not in payload, f"{name} left the client"


def test_private_state_persists_across_rounds(tiny_run, task_identity):
    cfg, _ = read_config(tiny_run)
    app, ctx = make_client_app(str(tiny_run)), _context(1)
    arrays = initial_arrays(cfg, "prompt_dual", 3)
    app(_train_message(arrays, "prompt_dual", 1), ctx)
    first = ctx.state["prompt_dual.private"]["prompts.groups.private"].numpy().copy()
    app(_train_message(arrays, "prompt_dual", 2), ctx)
    second = ctx.state["prompt_dual.private"]["prompts.groups.private"].numpy()
    assert not np.allclose(first, second)          # trained further, not re-initialised
    fresh = _context(1)
    app(_train_message(arrays, "prompt_dual", 1), fresh)
    np.testing.assert_allclose(fresh.state["prompt_dual.private"]["prompts.groups.private"]
                               .numpy(), first, rtol=1e-5, atol=1e-6)   # same seeded start


@pytest.mark.parametrize("strategy, expected", [
    ("prompt_shared", {"prompts.groups.shared"}),
    ("local", set()),
])
def test_each_strategy_sends_only_its_shared_parameters(tiny_run, task_identity, strategy,
                                                        expected):
    cfg, _ = read_config(tiny_run)
    reply = make_client_app(str(tiny_run))(
        _train_message(initial_arrays(cfg, strategy, 3), strategy, 1), _context(0))
    assert set(reply.content["arrays"].keys()) == expected


def test_fedavg_head_blocks_sends_head_last_block_and_norm(tiny_run, task_identity):
    cfg, _ = read_config(tiny_run)
    reply = make_client_app(str(tiny_run))(
        _train_message(initial_arrays(cfg, "fedavg_head_blocks", 3), "fedavg_head_blocks", 1),
        _context(0))
    sent = set(reply.content["arrays"].keys())
    depth = 2                                               # specaware_debug
    assert any(k.startswith(f"encoder.blocks.{depth - 1}.") for k in sent)
    assert {k.split(".")[0] for k in sent} == {"head", "encoder"}
    assert not any(k.startswith("encoder.blocks.0.") or k.startswith("encoder.embed")
                   for k in sent)


def test_a_site_with_another_class_list_is_refused(tmp_path):
    import json

    from specaware.federated.setup import load_setup
    from specaware.testing import write_tiny_federation
    config = write_tiny_federation(tmp_path, overrides={"classes": ["soil", "water",
                                                                    "vegetation"]})
    with pytest.raises(ValueError, match="client-0.npz: classes .* differ from the run's"):
        load_setup(str(config), 0)
    raw = json.loads(config.read_text())
    assert raw["classes"] == ["soil", "water", "vegetation"]
