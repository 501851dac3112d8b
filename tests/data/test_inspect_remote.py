"""`specaware inspect` and its curation plan on shard sets under https:// and s3:// prefixes
(loopback servers started and stopped here): the same summary and problems as the local
folder, and one line naming the URL when the set is not there."""
import json

import pytest

from specaware.cli import main as cli_main
from specaware.data.inspect import problems, summarise
from specaware.testing import corrupt_shard, write_tiny_shards
from specaware.testing_remote import http_server, s3_client, s3_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _fast_network(monkeypatch):
    monkeypatch.setenv("SPECAWARE_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("SPECAWARE_HTTP_TIMEOUT", "5")


def test_https_summary_and_problems_match_the_local_folder(tmp_path, capsys):
    manifest = write_tiny_shards(tmp_path / "set", num_shards=3, per_shard=2)
    corrupt_shard(tmp_path / "set" / manifest["shards"][1]["name"], "truncate")
    local = summarise(tmp_path / "set", samples=4)
    with http_server(tmp_path) as server:
        remote = summarise(server.url("set/"), samples=4)
        code = cli_main(["inspect", server.url("set/"), "--balance", "landcover"])
    # how a cut shard reads differs (tarfile stops early locally; the stream names where the
    # response ended), the rest of the summary is the same
    shard_keys = ("dir", "shards", "shard_errors", "mismatched_shards")
    assert {k: v for k, v in remote.items() if k not in shard_keys} == \
        {k: v for k, v in local.items() if k not in shard_keys}
    assert remote["decoded"]["decoded"] == 4
    assert problems(local)[0].startswith("shard-000001.tar: ")
    assert problems(remote) == ["shard-000001.tar: the response ended inside a tar header "
                                "(100 bytes)"]
    assert code == 1  # the truncated shard is a problem, as locally
    out, err = capsys.readouterr()
    assert "6 tiles in 3 shards" in out and "landcover" in out
    assert "problem: shard-000001.tar" in err


def test_s3_prefix_inspects_with_its_curation_plan(tmp_path, capsys):
    write_tiny_shards(tmp_path / "set", num_shards=2, per_shard=2)
    with s3_server():
        client = s3_client()
        client.create_bucket(Bucket="shards")
        for path in (tmp_path / "set").iterdir():
            client.upload_file(str(path), "shards", f"v1/{path.name}")
        code = cli_main(["inspect", "s3://shards/v1/", "--json", "--balance", "landcover"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 4 and [s["found"] for s in report["shards"]] == [2, 2]
    assert report["curation"]["kept"] == 4


def test_missing_remote_set_is_one_line_naming_the_manifest_url(tmp_path, capsys):
    with http_server(tmp_path) as server:
        assert cli_main(["inspect", server.url("nothing/")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"specaware inspect: {server.url('nothing/manifest.json')} not found")
