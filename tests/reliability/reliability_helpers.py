"""Helpers shared by the reliability tests (importable: pytest puts this folder on sys.path)."""

import effnet


def tiny_model(num_classes: int = 4):
    """The smallest real EfficientNet: fast to save, load and hash."""
    return effnet.create_model(
        "efficientnet_b0", num_classes=num_classes, width_mult=0.25, depth_mult=0.25, image_size=32
    )


# -- training runs in child processes ----------------------------------------------------------
# A SIGKILL needs a process of its own. Starting python + torch costs seconds per run, so runs are
# forked from a forkserver that imported effnet once (the server never ran torch code, so its
# children are clean: fresh fault-point counters, no OpenMP threads inherited).

TINY_RUN = {
    "data": "digits",
    "model": "efficientnet_b0",
    "model_kwargs": {"width_mult": 0.25, "depth_mult": 0.25},
    "image_size": 32,
    "epochs": 2,
    "batch_size": 32,
    "max_train_samples": 256,  # 8 steps per epoch
    "max_val_samples": 128,
    "lr": 0.02,
    "warmup_epochs": 0.5,
    "ema_decay": 0.9,
    "checkpoint_every": 3,  # mid-epoch checkpoints, so kills inside an epoch resume inside it
    "threads": 1,
    "progress": "none",
    "seed": 3,
}
PROGRESSIVE_RUN = {
    **TINY_RUN,
    "epochs": 3,
    "progressive": True,
    "stages": 3,
    "prog_image_size": (32, 40),
    "augment": "basic",
}
_ctx = None


def _context():
    global _ctx
    if _ctx is None:
        import multiprocessing as mp
        import os
        from pathlib import Path

        # The server is a fresh interpreter: put this checkout first so that it, and every run
        # forked from it, imports this effnet rather than an installed one.
        root = str(Path(__file__).resolve().parents[2])
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(["torch", "effnet.training.trainer", "effnet.data.datasets"])
    return _ctx


def _child(fault, config, resume, report=None):
    import json
    import os
    import resource

    import torch

    import effnet.training as T

    os.environ.pop("EFFNET_FAULT", None)
    if fault:
        os.environ["EFFNET_FAULT"] = fault
    torch.set_num_threads(1)
    summary = T.train(resume=resume) if resume else T.train(**config)
    if report:  # peak memory of this process (Linux reports kB)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(report, "w") as f:
            json.dump({"peak_rss_mb": peak_mb, "summary": summary}, f)


def start_training(config: dict, *, fault: str | None = None, resume=None, report=None):
    """Start a training (or ``resume`` of one) in a child process; return the Process.

    ``report``: a file that gets the child's peak RSS and the run summary as JSON."""
    resume = str(resume) if resume else None
    p = _context().Process(target=_child, args=(fault, config, resume, report and str(report)))
    p.start()
    return p


def train_in_child(
    config: dict, *, fault: str | None = None, resume=None, report=None, timeout=600
) -> int:
    """Run a training (or ``resume`` of one) in a child process; return its exit code."""
    p = start_training(config, fault=fault, resume=resume, report=report)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise TimeoutError(f"training child did not finish in {timeout}s")
    return p.exitcode


RUN_FILES = ("checkpoint_last.pt", "model_best.safetensors", "model_last.safetensors")


def unreadable_run_files(run_dir) -> list[str]:
    """Run files present but not loadable (a lost file: should always be empty)."""
    from pathlib import Path

    from effnet.weights.serialize import read_model_file

    bad = []
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.exists():
            try:
                read_model_file(path)
            except ValueError:
                bad.append(name)
    return bad


_VOLATILE = ("images_per_s", "seconds", "wall_time", "time")


def run_metrics(run_dir) -> list[dict]:
    """metrics.jsonl without the timing fields (they differ between any two runs)."""
    import json
    from pathlib import Path

    rows = [
        json.loads(line)
        for line in (Path(run_dir) / "metrics.jsonl").read_text().split("\n")
        if line.strip()
    ]
    return [{k: v for k, v in r.items() if not any(t in k for t in _VOLATILE)} for r in rows]


def assert_same_run(ref, run):
    """Per-epoch metrics and final weights of ``run`` equal those of ``ref`` (to float noise)."""
    import math
    from pathlib import Path

    from effnet.weights.serialize import read_model_file

    ref, run = Path(ref), Path(run)
    got, want = run_metrics(run), run_metrics(ref)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            if isinstance(w[k], float):
                assert math.isclose(g[k], w[k], rel_tol=1e-6, abs_tol=1e-9), (k, g, w)
            else:
                assert g[k] == w[k], (k, g, w)
    a, _ = read_model_file(run / "model_last.safetensors")
    b, _ = read_model_file(ref / "model_last.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= 1e-6, f"final weights differ by {worst}"


def cli_train_argv(config: dict) -> list[str]:
    """``effnet train`` arguments giving the same resolved config as ``train(**config)``."""
    import json

    argv = ["train"]
    for key, value in config.items():
        if isinstance(value, tuple):
            value = list(value)
        argv += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML, which --set parses
    return argv


def effnet_cli(argv, **popen):
    """Start ``python -m effnet ARGV`` on this checkout's effnet (not an installed one)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    env.pop("EFFNET_FAULT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "effnet", *argv], env=env, cwd=root, text=True, **popen
    )


def _poison(kind: str, step: int) -> None:
    """Make training step ``step`` (1-based, counted over the run) see a NaN/inf."""
    import torch

    from effnet.training import builders, trainer

    calls = [0]
    if kind in ("nan_loss", "inf_loss"):
        real = builders.criterion_for
        bad = float("nan") if kind == "nan_loss" else float("inf")

        def criterion_for(cfg):
            crit = real(cfg)

            def poisoned(logits, targets):
                loss = crit(logits, targets)
                calls[0] += 1
                return loss * bad if calls[0] == step else loss

            return poisoned

        builders.criterion_for = criterion_for
    else:  # nan_input: one pixel of one image
        real_loader = trainer.train_loader

        class Poisoned:
            def __init__(self, loader):
                self.loader = loader

            def __len__(self):
                return len(self.loader)

            def __iter__(self):
                for images, targets, skipped in self.loader:
                    calls[0] += 1
                    if calls[0] == step and images is not None:
                        images = images.clone()
                        images[0, 0, 0, 0] = torch.nan
                    yield images, targets, skipped

        trainer.train_loader = lambda *a, **k: Poisoned(real_loader(*a, **k))


def _poisoned_child(config, kind, step, message_file):
    import sys

    import torch

    import effnet.training as T

    torch.set_num_threads(1)
    _poison(kind, step)
    try:
        T.train(**config)
    except ValueError as e:
        with open(message_file, "w") as f:
            f.write(str(e))
        sys.exit(3)


def train_poisoned(config: dict, kind: str, step: int, message_file) -> int:
    """Train in a child where step ``step`` gets a non-finite value; exit 3 if it stopped."""
    p = _context().Process(target=_poisoned_child, args=(config, kind, step, str(message_file)))
    p.start()
    p.join(600)
    return p.exitcode


def cli_in_process(argv) -> tuple[int, str]:
    """Run ``effnet ARGV`` in this process: (exit status, what it printed on stderr)."""
    import contextlib
    import io

    from effnet.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors
            code = e.code
    return code, err.getvalue()
