"""Flower's simulation engine end to end on a tiny run: every strategy's rounds reach
rounds.jsonl with per-client values and traffic, and the report is written from them."""
import json

import pytest

from specaware.federated.report import read_rounds
from specaware.federated.run import report, simulate
from specaware.federated.setup import read_config
from specaware.testing import write_tiny_federation


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    config = write_tiny_federation(tmp_path_factory.mktemp("sim"), overrides={
        "strategies": ["prompt_dual", "local"], "train": {"rounds": 2}})
    simulate(config, 2)
    return config


def test_every_strategy_and_round_is_reported_with_client_values(simulated):
    rows = read_rounds(simulated.parent / "rounds.jsonl")
    assert [(r["strategy"], r["round"]) for r in rows] == [
        ("prompt_dual", 1), ("prompt_dual", 2), ("local", 1), ("local", 2)]
    for r in rows:
        assert set(r["clients"]) == {"0", "1"}
        assert 0.0 <= r["accuracy"] <= 1.0
        assert {"bytes_up", "bytes_down", "bytes_eval_up", "bytes_eval_down"} <= set(r)


def test_round_bytes_are_the_sum_of_that_rounds_messages(simulated):
    rows = read_rounds(simulated.parent / "rounds.jsonl")
    sent = [json.loads(x) for x in (simulated.parent / "messages.jsonl").read_text().splitlines()]
    for r in rows:
        for phase, key in (("train_up", "bytes_up"), ("train_down", "bytes_down")):
            total = sum(m["bytes"] for m in sent if m["strategy"] == r["strategy"]
                        and m["round"] == r["round"] and m["phase"] == phase)
            assert total == r[key]
    dual = next(r for r in rows if r["strategy"] == "prompt_dual")
    local = next(r for r in rows if r["strategy"] == "local")
    assert dual["bytes_up"] > local["bytes_up"] + 2 * 4 * 4 * 64   # shared prompts travel


def test_report_writes_table_and_plot(simulated):
    cfg, run_dir = read_config(simulated)
    result = report(cfg, run_dir)
    assert "shared+private prompts (ours)" in result["table"]
    assert "RANDOM weights" in result["table"]            # no checkpoint: the table says so
    assert (run_dir / "accuracy_vs_rounds_and_bytes.png").stat().st_size > 10_000
    assert json.loads((run_dir / "summary.json").read_text())["local"]["rounds"] == 2
