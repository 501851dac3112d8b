"""Fixtures of the federated tests: a tiny run folder and Flower's task identity, which
`flwr.app.Message` reads when a server-side message is built outside a Flower process."""
import pytest
from flwr.supercore.task_identity import TaskIdentity

from specaware.testing import write_tiny_federation


@pytest.fixture
def task_identity():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Config path of a 2-client run folder (Sentinel-2 and Landsat 8 tiles, 3 classes)."""
    return write_tiny_federation(tmp_path_factory.mktemp("fed"))
