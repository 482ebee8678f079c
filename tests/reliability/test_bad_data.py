"""A few thousand images with 5% broken or odd files train to completion with an exact skip count
and a bounded peak memory."""

import json

import pytest
from bad_images import make_clean_folder, make_folder
from reliability_helpers import run_metrics, train_in_child

pytestmark = pytest.mark.slow

RUN = {
    "model": "efficientnet_b0",
    "model_kwargs": {"width_mult": 0.25, "depth_mult": 0.25},
    "image_size": 32,
    "epochs": 1,
    "batch_size": 50,
    "lr": 0.01,
    "warmup_epochs": 0.0,
    "threads": 1,
    "progress": "none",
    "seed": 0,
}


def _train(folder, out, report):
    assert train_in_child({**RUN, "data": str(folder), "out": str(out)}, report=report) == 0
    return json.loads(report.read_text())


def test_bad_files_are_skipped_exactly_and_memory_stays_bounded(tmp_path, figures):
    expect = make_folder(tmp_path / "bad", batch_size=RUN["batch_size"])
    assert expect["odd"] / expect["files"] >= 0.05
    bad = _train(tmp_path / "bad", tmp_path / "run-bad", tmp_path / "bad.json")
    summary = bad["summary"]
    # Found by the scan before training (not an image, empty, garbage, truncated PNG, bomb) ...
    assert summary["skipped_files"] == expect["skip_upfront"]
    # ... and by decoding during the epoch (truncated JPEG body, 100 MP bomb), counted per epoch.
    (row,) = run_metrics(tmp_path / "run-bad")
    assert row["skipped_images"] == expect["skip_at_load"]
    # Every file passing the scan, odd ones included (16-bit, CMYK, animated, EXIF, huge, 1x1),
    # was scheduled for training (the summary counts scheduled, not decoded, images).
    assert summary["train_images_seen"] == expect["train_images"]
    assert summary["epochs"] == 1

    make_clean_folder(tmp_path / "clean", images=expect["train_images"])
    clean = _train(tmp_path / "clean", tmp_path / "run-clean", tmp_path / "clean.json")
    # Bounded: the odd files (24 MP photos, a refused 400 MP bomb) may cost one large decoded
    # image at a time, not memory that grows with the bad files.
    extra = bad["peak_rss_mb"] - clean["peak_rss_mb"]
    assert extra < 400, f"peak RSS {bad['peak_rss_mb']:.0f} MB vs clean {clean['peak_rss_mb']:.0f}"
    total = expect["skip_upfront"] + expect["skip_at_load"]
    figures("bad_input", "bad-data folder: broken or odd files", count=expect["odd"])
    figures("measure", "bad-data folder: files", value=expect["files"])
    figures("measure", "bad-data folder: skipped (exact)", value=total)
    figures("measure", "bad-data folder: peak RSS MB", value=round(bad["peak_rss_mb"]))
    figures("measure", "clean folder: peak RSS MB", value=round(clean["peak_rss_mb"]))
