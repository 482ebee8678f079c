import json
from pathlib import Path

import pytest
from PIL import Image

from effnet.cli import main
from effnet.lab.sweep import multipliers, parse_values, sweep

TINY = {"image_size": 32, "max_train_samples": 120, "max_val_samples": 60, "threads": 1}


def test_multipliers():
    assert multipliers("width", 2.0) == (1.0, 2.0, 1.0)
    assert multipliers("depth", 4.0) == (4.0, 1.0, 1.0)
    assert multipliers("resolution", 1.5) == (1.0, 1.0, 1.5)
    d, w, r = multipliers("compound", 2.0)
    assert (d, w, r) == pytest.approx((1.2**2, 1.1**2, 1.15**2))
    assert multipliers("compound", 1.0, 1.4, 1.1, 1.1) == pytest.approx((1.4, 1.1, 1.1))
    with pytest.raises(ValueError, match="dimension"):
        multipliers("height", 2.0)
    with pytest.raises(ValueError, match="> 0"):
        multipliers("width", 0.0)


def test_parse_values():
    assert parse_values(["1", "2"], ["width", "depth"]) == {"width": [1, 2], "depth": [1, 2]}
    per = parse_values(["depth=1,2,4", "1,1.5"], ["depth", "width"])
    assert per == {"depth": [1, 2, 4], "width": [1, 1.5]}
    with pytest.raises(ValueError, match="numbers"):
        parse_values(["x"], ["width"])
    with pytest.raises(ValueError, match="no sweep values for width"):
        parse_values(["depth=1,2"], ["depth", "width"])


def test_cli_bad_input_one_line(tmp_path, capsys):
    assert main(["sweep", "--values", "1", "--budget", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "budget" in err


@pytest.mark.slow
def test_sweep_plots_all_dimensions_and_shares_baseline(tmp_path):
    res = sweep(
        "digits",
        dimensions=["width", "compound"],
        values={"width": [1.0, 2.0], "compound": [0.0, 1.0]},
        seeds=2,
        budget=1,
        out=tmp_path,
        log=lambda m: None,
        **TINY,
    )
    assert set(res["curves"]) == {"width", "compound"}
    # width 1 and phi 0 are the same model: 3 architectures x 2 seeds = 6 runs, not 8.
    assert len(list(tmp_path.glob("runs/*/*/summary.json"))) == 6
    w1, c0 = res["curves"]["width"][0], res["curves"]["compound"][0]
    assert w1["top1"] == c0["top1"] and len(w1["top1"]) == 2
    assert res["curves"]["width"][1]["macs"] > 2.5 * w1["macs"]
    assert json.loads(Path(tmp_path, "sweep.json").read_text())["curves"] == res["curves"]
    with Image.open(tmp_path / "sweep.png") as im:
        assert im.size == (800, 500) and im.mode in ("RGB", "RGBA")
