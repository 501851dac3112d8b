"""The audit of a federated run's final client models: ClientApps trained in-process save
their models at the last round; `audit_run` attacks each one."""
import json

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from specaware.audit.federated import audit_run
from specaware.federated.client import make_client_app
from specaware.federated.server import initial_arrays
from specaware.federated.setup import read_config
from specaware.testing import write_tiny_federation


def test_audit_run_attacks_every_client_model(tmp_path, task_identity):
    config = write_tiny_federation(tmp_path, tiles_per_class=8, overrides={
        "audit_cfg": {"shadows": 4, "shadow_epochs": 20}})
    cfg, run_dir = read_config(config)
    app = make_client_app(str(config))
    arrays = initial_arrays(cfg, "prompt_dual", 3)
    for i in range(2):
        ctx = Context(run_id=1, node_id=7, node_config={"partition-id": i}, state=RecordDict(),
                      run_config={})
        for kind in (MessageType.TRAIN, MessageType.EVALUATE):
            conf = ConfigRecord({"strategy": "prompt_dual", "server-round": 1, "num-rounds": 1})
            app(Message(RecordDict({"arrays": arrays, "config": conf}), dst_node_id=7,
                        message_type=kind), ctx)
    means = audit_run(cfg, run_dir)
    assert set(means["prompt_dual"]) == {"entropy", "modified_entropy", "lira"}
    saved = json.loads((run_dir / "audit.json").read_text())
    client = saved["strategies"]["prompt_dual"]["0"]
    assert client["lira"]["shadows"] == 4
    assert client["entropy"]["members"] == client["entropy"]["non_members"] == 6
    assert np.isfinite(client["lira"]["auc"])
    assert (run_dir / "audit" / "prompt_dual" / "client-1" / "roc.png").is_file()
