"""The benchmark's text report: 100 columns, one ratio line per peer by default (every pair with
verbose), and a warning when the repetitions' spread says the machine was noisy."""

from __future__ import annotations

from effnet.benchmark.engine import format_report, paired_ratios, ratios


def _stat(values):
    values = sorted(values)
    return {"n": len(values), "median": values[len(values) // 2], "min": values[0],
            "max": values[-1], "values": values}


def _res(spread=0.02):
    def row(base, mem=None):
        r = {
            "latency_ms": _stat([1000 / base * (1 + spread * i) for i in (-1, 0, 1)]),
            "infer_img_s": _stat([base * (1 + spread * i) for i in (-1, 0, 1)]),
            "train_img_s": _stat([base / 4 * (1 + spread * i) for i in (-1, 0, 1)]),
        }
        if mem:
            r["train_peak_mib"] = _stat([mem, mem, mem])
        return r

    rows = {
        "effnet": row(80.0, 900),
        "effnet optimized": {"infer_img_s": _stat([90.0, 91.0, 92.0])},
        "effnet onnxruntime": {"infer_img_s": _stat([120.0, 121.0, 122.0])},
        "timm": row(50.0, 1200),
        "torchvision": row(40.0, 1300),
        "onnxruntime (torchvision export)": {"infer_img_s": _stat([100.0, 101.0, 102.0])},
    }
    return {
        "model": "efficientnet_b0", "image_size": 224, "batch_size": 16, "threads": 2, "reps": 3,
        "device": "cpu",
        "machine": {"cpu": "test cpu", "cores": 2, "torch": "2.x", "load_avg_1m": 0.1},
        "results": rows, "ratios": ratios(rows), "paired_ratios": paired_ratios(rows),
        "skipped": [],
    }


def test_default_report_fits_100_columns_with_one_line_per_peer():
    res = _res()
    text = format_report(res)
    assert max(len(line) for line in text.splitlines()) <= 100
    peer_lines = [line for line in text.splitlines() if line.startswith("  vs ")]
    assert [line.split()[1] for line in peer_lines] == ["timm", "torchvision", "onnxruntime"]
    tv = next(line for line in peer_lines if " torchvision " in line)
    assert f"infer {80 / 40:.2f}x" in tv and f"train {20 / 10:.2f}x" in tv
    assert "train-mem 0.69x" in tv  # 900 / 1300
    ort = next(line for line in peer_lines if "onnxruntime" in line)
    assert f"infer {121 / 101:.2f}x" in ort  # effnet's own ORT export against the peer's
    assert "effnet optimized" not in text.split("effnet against each peer")[1]
    assert "noisy" not in text


def test_verbose_lists_every_pair_within_100_columns():
    res = _res()
    text = format_report(res, verbose=True)
    assert "effnet optimized / torchvision" in text and "per rep" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_a_wide_spread_warns_of_a_noisy_machine():
    text = format_report(_res(spread=0.3))
    assert "warning: noisy machine" in text and "60% of its median" in text


def test_memory_columns_still_fit_100_columns():
    res = _res()
    for row in res["results"].values():
        if "train_img_s" in row:
            row["infer_peak_mib"] = _stat([500.0, 510.0, 520.0])
    res["ratios"], res["paired_ratios"] = ratios(res["results"]), paired_ratios(res["results"])
    for verbose in (False, True):
        text = format_report(res, verbose=verbose)
        assert max(len(line) for line in text.splitlines()) <= 100
    assert "train-mem 0.69x" in format_report(res)  # wrapped onto its own line, not dropped
