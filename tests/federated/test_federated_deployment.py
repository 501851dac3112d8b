"""Flower's deployment engine on the loopback interface: a SuperLink and two SuperNodes (one per
site, each given its own data file through its node config) run one round of the prompt
method; the test bounds the run in time and stops every process it started."""
import json
import os
import shutil

import pytest

from specaware.federated.deploy import LocalFederation
from specaware.testing import write_tiny_federation

pytestmark = pytest.mark.skipif(shutil.which("flower-superlink") is None and not os.path.exists(
    os.path.join(os.path.dirname(os.sys.executable), "flower-superlink")),
    reason="Flower is not installed (pip install 'specaware[federated]')")


def test_two_supernodes_on_loopback_run_a_round(tmp_path):
    config = write_tiny_federation(tmp_path / "run")
    run_dir = config.parent
    # each site reads its own file (moved out of the run folder, as on another machine)
    sites = []
    for i in range(2):
        site = tmp_path / f"site{i}"
        site.mkdir()
        sites.append(shutil.move(str(run_dir / "data" / f"client-{i}.npz"), site / "mine.npz"))
    federation = LocalFederation(run_dir, sites)
    with federation:
        result = federation.run(config.read_text(), timeout=420)
        assert result.returncode == 0, (run_dir / "flwr_run.log").read_text()[-3000:]
        pids = [p.pid for p in federation.procs]
    for pid in pids:                                  # stopped: no process of ours is left
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [(r["strategy"], r["round"]) for r in rows] == [("prompt_dual", 1)]
    assert set(rows[0]["clients"]) == {"0", "1"}
    assert rows[0]["bytes_up"] > 0 and rows[0]["bytes_down"] > 0
    sent = [json.loads(x) for x in (run_dir / "messages.jsonl").read_text().splitlines()]
    up = [m for m in sent if m["phase"] == "train_up"]
    assert len(up) == 2
    assert all(m["keys"] == ["prompts.groups.shared", "prototype.count", "prototype.mean"]
               for m in up)
    assert sorted(p.name for p in (run_dir / "models" / "prompt_dual").iterdir()) == [
        "client-0.safetensors", "client-1.safetensors"]
