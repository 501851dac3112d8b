"""`specaware models`: counted parameters and FLOPs, unknown names refused."""
from __future__ import annotations

import specaware
from specaware.cli import main


def test_table_counts_the_real_model(capsys):
    assert main(["models", "specaware_debug", "--bands", "32", "--tile", "32"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines()
           if line.startswith("| specaware_debug")][0]
    params = sum(p.numel() for p in specaware.create_model("specaware_debug").parameters())
    assert row.split("|")[2].strip() == f"{params / 1e6:.1f}"


def test_more_bands_cost_more_embedding_flops(capsys):
    main(["models", "specaware_debug", "--bands", "16", "--tile", "32"])
    main(["models", "specaware_debug", "--bands", "64", "--tile", "32"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| spec")]
    small, large = (float(r.split("|")[6]) for r in rows)
    assert large > 2 * small


def test_unknown_model_is_refused_with_the_list(capsys):
    assert main(["models", "specaware_hug"]) == 2
    err = capsys.readouterr().err
    assert "specaware_hug" in err and "specaware_small" in err
