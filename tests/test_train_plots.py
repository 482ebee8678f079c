"""Training curves people look at: a title, a learning-rate panel, the best epoch marked, and a
loss spike that does not flatten the axis (issue 15, section 5)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from effnet.training.report import best_epoch, curves_figure, plot_curves


def _history(losses, top1, ema=None):
    rows = []
    for i, (loss, acc) in enumerate(zip(losses, top1, strict=True)):
        row = {"epoch": i + 1, "train_loss": loss, "val_loss": loss * 1.1, "val_top1": acc,
               "lr": 0.1 / (i + 1)}
        if ema is not None:
            row["val_top1_ema"] = ema[i]
        rows.append(row)
    return rows


def test_curves_have_title_lr_panel_and_best_marker():
    hist = _history([2.0, 1.5, 1.2, 1.1], [40.0, 70.0, 65.0, 68.0])
    fig = curves_figure(hist, "efficientnet_b0 on digits")
    try:
        loss_ax, acc_ax, lr_ax = fig.axes
        assert fig._suptitle.get_text() == "efficientnet_b0 on digits"
        assert lr_ax.get_ylabel() == "learning rate"
        assert list(lr_ax.lines[0].get_ydata()) == [r["lr"] for r in hist]
        marker = next(line for line in acc_ax.lines if line.get_label() == "best")
        assert (list(marker.get_xdata()), list(marker.get_ydata())) == ([2], [70.0])
        assert "best 70.00% (epoch 2)" in [t.get_text() for t in acc_ax.texts]
        assert loss_ax.get_yscale() == "linear"
    finally:
        plt.close(fig)


def test_a_loss_spike_puts_the_loss_axis_on_a_log_scale():
    hist = _history([2.0, 40.0, 1.2, 1.0, 0.9], [10, 12, 30, 40, 50])
    fig = curves_figure(hist)
    try:
        assert fig.axes[0].get_yscale() == "log"
        assert "log" in fig.axes[0].get_ylabel()
    finally:
        plt.close(fig)


def test_best_epoch_uses_ema_where_it_is_better():
    hist = _history([1, 1, 1], [50.0, 60.0, 55.0], ema=[52.0, 58.0, 66.0])
    assert best_epoch(hist)["epoch"] == 3
    fig = curves_figure(hist)
    try:
        marker = next(line for line in fig.axes[1].lines if line.get_label() == "best")
        assert list(marker.get_ydata()) == [66.0]
    finally:
        plt.close(fig)


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves(tmp_path, _history([1.0, 0.5], [10.0, 20.0]), "t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert plot_curves(tmp_path, []) is None


@pytest.mark.parametrize("losses", [[0.0, 0.0], [1.0, -1.0]])
def test_degenerate_losses_stay_linear(losses):
    fig = curves_figure(_history(losses, [1.0, 2.0]))
    try:
        assert fig.axes[0].get_yscale() == "linear"
    finally:
        plt.close(fig)
