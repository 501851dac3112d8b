"""Output names taken from data stay inside the output folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from specaware.naming import inside, safe_name

HOSTILE = ["/../../../x", "..", ".", "", "a/b\\c", "../../etc/passwd", "-rf", "~/.ssh/key"]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_name_is_one_plain_path_component(tmp_path, name):
    safe = safe_name(name)
    assert safe and safe not in (".", "..") and "/" not in safe and "\\" not in safe
    assert not safe.startswith((".", "-"))
    assert inside(tmp_path, name, ".png").parent == tmp_path


def test_ordinary_names_are_kept():
    assert safe_name("aviris-ng") == "aviris-ng" and safe_name("sentinel-2a") == "sentinel-2a"
    assert safe_name("real-EnMAP L2A") == "real-EnMAP-L2A"


def test_reconstruction_panels_stay_in_their_folder_whatever_the_manifest_says(tmp_path):
    """The demo's panel writer names files after the manifest's `sensor` field."""
    sys.path.insert(0, str(Path(__file__).parent / "finetune"))
    from fixtures import write_export

    from specaware.demo.figures import reconstruction_panels
    from specaware.testing import write_tiny_shards
    export, _ = write_export(tmp_path)
    shards = tmp_path / "shards"
    write_tiny_shards(shards, num_shards=1, per_shard=2, tile=16, max_bands=12)
    manifest = json.loads((shards / "manifest.json").read_text())
    for row in manifest["tiles"]:
        row["sensor"], row["scene"] = "/../../../escaped", "tiny"
    (shards / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "deep" / "report"
    made = reconstruction_panels(export, shards, out, rows=2)
    paths = [Path(p) for p in made.values()]
    assert paths == [out / "recon_escaped.png"] and paths[0].is_file()
