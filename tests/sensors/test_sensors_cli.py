"""`specaware sensors [NAME]` output."""
import json

from specaware.cli import main as cli_main
from specaware.sensors import list_sensors


def test_list_shows_every_sensor_with_band_count(capsys):
    assert cli_main(["sensors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(list_sensors())
    row = next(line for line in lines if line.startswith("aviris-ng "))
    assert " 425 " in row and "approximate" in row


def test_band_table_for_one_sensor(capsys):
    assert cli_main(["sensors", "S2B"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Sentinel-2B MSI (ESA) [sentinel-2b]: 13 bands, GSD 10 m")
    rows = [line.split() for line in out.splitlines() if line.strip()[:2].isdigit()
            or line.strip()[:1].isdigit()]
    assert len(rows) == 13 and rows[-1][1] == "B12"
    assert any("B10" in r and "absorption" in r for r in rows)


def test_json_outputs_parse(capsys):
    assert cli_main(["sensors", "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} == set(list_sensors())
    assert cli_main(["sensors", "emit", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["bands"] == 285 and len(table["band_table"]) == 285


def test_unknown_sensor_exits_2_with_the_names(capsys):
    assert cli_main(["sensors", "nosuch"]) == 2
    assert "Known sensors: aviris-3" in capsys.readouterr().err
