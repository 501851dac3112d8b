"""Reporting from rounds.jsonl rows: the summary, the table and wandb (offline, no network)."""
import json

from specaware.federated.config import FederatedConfig
from specaware.federated.report import log_wandb, summarize, table
from specaware.training.config import WandbSection


def _rows():
    rows = []
    for strategy, accs, up in (("local", [0.4, 0.5], 10), ("prompt_dual", [0.5, 0.7], 1000)):
        for r, acc in enumerate(accs, 1):
            rows.append({"round": r, "strategy": strategy, "accuracy": acc, "bytes_up": up,
                         "bytes_down": 2 * up, "clients": {"0": {"accuracy": acc,
                                                                 "num_examples": 4}}})
    return rows


def test_summary_sums_bytes_and_keeps_the_last_accuracy():
    s = summarize(_rows())
    assert s["prompt_dual"]["accuracy"] == 0.7 and s["prompt_dual"]["best_accuracy"] == 0.7
    assert s["prompt_dual"]["bytes_up"] == 2000 and s["prompt_dual"]["bytes_down"] == 4000
    text = table(s, ["site"], {"prompt_dual": {"lira": 0.61}, "local": {"lira": 0.55}})
    assert "| shared+private prompts (ours) | 0.700 | 0.700 |" in text and "AUC lira" in text


def test_wandb_gets_each_strategys_curves(tmp_path):
    cfg = FederatedConfig(wandb=WandbSection(mode="offline"))
    log_wandb(cfg, _rows(), tmp_path, {"out": str(tmp_path)})
    logged = [json.loads(x) for x in (tmp_path / "wandb" / "metrics.jsonl").read_text()
              .splitlines()]
    assert [m["step"] for m in logged] == [1, 1, 2, 2]
    last = [m for m in logged if "prompt_dual/accuracy" in m][-1]
    assert last["prompt_dual/cumulative_bytes"] == 6000 and last["prompt_dual/client0"] == 0.7
    assert any((tmp_path / "wandb").rglob("*.wandb"))            # an offline run was written


def test_cli_reports_config_errors_in_one_line(capsys):
    from specaware.cli import main
    assert main(["federated", "--quick", "train.rounds=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["config error: config key 'train.rounds': must be >= 1"]


def test_incomplete_runs_are_refused(tmp_path):
    from specaware.federated.run import check_complete
    import pytest
    path = tmp_path / "rounds.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows()))
    cfg = FederatedConfig(strategies=["local", "prompt_dual", "prompt_shared"])
    cfg.train.rounds = 2
    with pytest.raises(RuntimeError, match=r"\['prompt_shared'\] did not reach round 2"):
        check_complete(cfg, path)
