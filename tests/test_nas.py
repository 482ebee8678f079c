"""`effnet nas`: search spaces as data, rewards, spec files, and a tiny search end to end."""

import json
import math
import os
import socket
from dataclasses import replace

import pytest

from effnet import create_model, load_model, specs
from effnet.cli import main
from effnet.lab import nas as nas_mod
from effnet.lab import nas_space
from effnet.lab.experiment import base_config
from effnet.lab.nas import BEST_SPEC, candidate_variant, nas, open_study, step_time
from effnet.registry import Variant, get_variant, variant_to_dict

TINY = {
    "image_size": 32,
    "max_train_samples": 48,
    "max_val_samples": 48,
    "batch_size": 16,
    "threads": 1,
}


# -- spaces and genotypes ------------------------------------------------------------------------


def test_papers_stage_tables_are_points_of_their_spaces():
    v2, b0 = nas_space.get_space("v2"), nas_space.get_space("b0")
    assert nas_space.contains(v2, specs.EFFICIENTNETV2_S)
    assert nas_space.contains(b0, specs.EFFICIENTNET)
    # ... and not of the other space, nor with a choice outside the space
    assert not nas_space.contains(v2, specs.EFFICIENTNET)
    assert not nas_space.contains(b0, specs.EFFICIENTNETV2_S)
    bad = [*specs.EFFICIENTNETV2_S.stages]
    bad[2] = specs.fused(r=4, k=7, s=2, e=4, c=64)
    assert not nas_space.contains(v2, replace(specs.EFFICIENTNETV2_S, stages=tuple(bad)))
    # the genotype round trip gives back the paper's stage table exactly
    g = nas_space.genotype_of(specs.EFFICIENTNETV2_S)
    assert nas_space.to_family(v2, g).stages == specs.EFFICIENTNETV2_S.stages
    g = nas_space.genotype_of(specs.EFFICIENTNET)
    assert nas_space.to_family(b0, g).stages == specs.EFFICIENTNET.stages


def test_space_choices_follow_the_papers():
    v2 = nas_space.get_space("v2")
    assert [st.c for st in v2.stages] == [(s.c,) for s in specs.EFFICIENTNETV2_S.stages]
    assert all(st.k == (3, 5) and st.e == (1, 4, 6) for st in v2.stages)
    assert all(set(st.block) == {"mbconv", "fused"} for st in v2.stages)
    b0 = nas_space.get_space("b0")
    assert b0.stages[3].c == (64, 80, 104) and b0.stages[3].r == (2, 3, 4)
    assert b0.stages[0].r == (1, 2)  # no stage of zero layers
    with pytest.raises(ValueError, match="unknown search space 'v3'; choose from v2, b0"):
        nas_space.get_space("v3")


@pytest.mark.parametrize("space", ["v2", "b0"])
def test_sampling_is_deterministic_under_a_seed(space):
    sp = nas_space.get_space(space)
    draws = [nas_space.sample(sp, seed) for seed in range(6)]
    assert draws == [nas_space.sample(sp, seed) for seed in range(6)]
    assert len({nas_space.genotype_id(g) for g in draws}) == 6  # seeds differ
    for g in draws:
        fam = nas_space.to_family(sp, g)
        assert nas_space.contains(sp, fam)
        if space == "v2":  # SE goes with MBConv in the V2 space
            assert all((s.se == 0.25) == (s.block == "mbconv") for s in fam.stages)
        model = create_model(spec=fam, num_classes=10, device="meta")
        assert model.record.name == fam.name == f"nas_{space}_{nas_space.genotype_id(g)}"


def test_genotype_outside_the_space_is_refused():
    sp = nas_space.get_space("v2")
    g = list(nas_space.sample(sp, 0))
    g[1] = {**g[1], "k": 7}
    with pytest.raises(ValueError, match=r"stage 1: k = 7 is not in space v2's \(3, 5\)"):
        nas_space.to_family(sp, tuple(g))


# -- rewards -------------------------------------------------------------------------------------


def test_v2_reward_golden_numbers():
    # 0.8 * 2^-0.07 * (5e6)^-0.05 = 0.8 * 0.952638 * 0.462444
    assert nas_space.v2_reward(0.8, 0.2, 5e6, 0.1) == pytest.approx(0.352427, abs=1e-6)
    # at the reference step time S = 1: only the parameter term
    assert nas_space.v2_reward(0.5, 0.1, 1e6, 0.1) == pytest.approx(0.5 * 1e6**-0.05)
    assert nas_space.v2_reward(0.5, 0.1, 1e6, 0.1) == pytest.approx(0.250594, abs=1e-6)
    # slower and bigger costs reward, at equal accuracy
    assert nas_space.v2_reward(0.8, 0.4, 5e6, 0.1) < nas_space.v2_reward(0.8, 0.2, 5e6, 0.1)


def test_mnas_reward_golden_numbers():
    assert nas_space.mnas_reward(0.75, 400e6, 224) == pytest.approx(0.75)
    assert nas_space.mnas_reward(0.75, 800e6, 224) == pytest.approx(0.714479, abs=1e-6)
    # T scales with (size / 224)^2: 100M MACs at 112 px is on target
    assert nas_space.mnas_reward(0.75, 100e6, 112) == pytest.approx(0.75)
    assert nas_space.mnas_reward(0.75, 50e6, 112) == pytest.approx(0.75 * 0.5**-0.07)


def test_reward_expression():
    env = {"acc": 0.8, "step_time": 0.2, "params": 5e6, "macs": 1e8, "image_size": 32}
    f = nas_space.reward_expression("acc * (step_time / 0.1) ** -0.07 * params ** -0.05")
    assert f(env) == pytest.approx(nas_space.v2_reward(0.8, 0.2, 5e6, 0.1))
    assert nas_space.reward_expression("-log(macs) + max(acc, 0.9)")(env) == pytest.approx(
        -math.log(1e8) + 0.9
    )


@pytest.mark.parametrize(
    "text,msg",
    [
        ("acc *", "does not parse"),
        ("acc * flops", "unknown name 'flops'; use acc, step_time, params, macs, image_size"),
        ("acc.__class__", "Attribute is not allowed"),
        ("__import__('os')", "unknown function '__import__'"),
        ("'a' * 3", "Constant is not allowed"),
        ("acc if acc else 0", "IfExp is not allowed"),
    ],
)
def test_bad_reward_expressions(text, msg):
    with pytest.raises(ValueError, match=msg) as e:
        nas_space.reward_expression(text)
    assert "\n" not in str(e.value)


# -- spec files ----------------------------------------------------------------------------------


def test_spec_file_round_trip(tmp_path):
    v = Variant(specs.EFFICIENTNETV2_S, 0.5, 0.5, 64, 0.1, mean=(0.5,) * 3, std=(0.5,) * 3)
    path = tmp_path / "v2s.json"
    path.write_text(json.dumps(variant_to_dict(v)))
    assert get_variant(str(path)) == v
    assert get_variant(str(path)) is get_variant(str(path))  # same object while unchanged
    a = create_model(str(path), num_classes=10)
    b = create_model(spec=v, num_classes=10)
    assert a.record == b.record and a.pretrained_cfg["input_size"] == (3, 64, 64)
    assert a.record.name == "efficientnetv2_s"
    ref = create_model("efficientnetv2_s", width_mult=0.5, depth_mult=0.5, num_classes=10)
    assert a.record.plan == ref.record.plan
    with pytest.raises(ValueError, match="not both or neither"):
        create_model("efficientnet_b0", spec=v)


@pytest.mark.parametrize(
    "body,msg",
    [
        ("{not json", "not a JSON spec file"),
        ("[1, 2]", "not an effnet spec file"),
        ('{"format": "effnet-spec", "family": {"stages": []}}', "non-empty 'stages'"),
        (
            '{"format": "effnet-spec", "family": {"stages": [{"block": "conv", "r": 1, "k": 3, '
            '"s": 1, "e": 1, "c": 8}]}}',
            "block must be 'mbconv' or 'fused'",
        ),
        (
            '{"format": "effnet-spec", "family": {"stages": [{"block": "fused", "r": 1, "k": 4, '
            '"s": 1, "e": 1, "c": 8}]}}',
            "kernel must be a positive odd integer",
        ),
        ('{"format": "effnet-spec", "family": {"stages": [], "colour": 1}}', "key 'colour'"),
    ],
)
def test_invalid_spec_files_are_one_line_errors(tmp_path, body, msg):
    path = tmp_path / "bad.json"
    path.write_text(body)
    with pytest.raises(ValueError, match=msg) as e:
        get_variant(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_cli_info_and_scale_take_a_spec_file(tmp_path, capsys):
    v = Variant(
        nas_space.to_family(
            nas_space.get_space("v2"), nas_space.sample(nas_space.get_space("v2"), 3)
        ),
        0.5,
        0.5,
        32,
        0.2,
    )
    path = tmp_path / "found.json"
    path.write_text(json.dumps(variant_to_dict(v)))
    assert main(["info", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{v.family.name}  32px")
    assert main(["scale", str(path), "--phi", "1"]) == 0
    assert "resolution x1.15 -> 40px" in capsys.readouterr().out
    tiny = ["--epochs", "1", "--max-train-samples", "16", "--max-val-samples", "8"]
    tiny += ["--batch-size", "8", "--workers", "0", "--progress", "none", "--threads", "1"]
    run = tmp_path / "run"
    assert main(["train", "--model", str(path), "--out", str(run), *tiny]) == 0
    capsys.readouterr()
    trained = load_model(run)  # the model file is self-contained: it needs no spec file
    path.unlink()
    assert trained.record.name == v.family.name and trained.pretrained_cfg["input_size"][-1] == 32
    assert main(["info", str(tmp_path / "missing.json")]) == 2
    assert "no such spec file" in capsys.readouterr().err


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--space", "v3"], "invalid choice: 'v3' (choose from 'v2', 'b0')"),
        (["--trials", "0"], "--trials must be >= 1, got 0"),
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
        (["--reward", "acc +* 2"], "does not parse"),
        (["--reward", "acc * speed"], "unknown name 'speed'"),
        (["--storage", "nosuchdb://x/y"], "unknown database kind 'nosuchdb'"),
        (["--storage", "not a url"], "not a database URL"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "no such folder /no/such/folder"),
        (
            ["--storage", "postgresql://u:secret@127.0.0.1:1/db"],
            "--storage postgresql://u:***@127.0.0.1:1/db: (psycopg.OperationalError) connection "
            'failed: connection to server at "127.0.0.1", port 1 failed: Connection refused',
        ),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, msg):
    try:
        rc = main(["nas", "--out", str(tmp_path / "o"), *args])
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # nothing written


def test_tiny_search_end_to_end_and_rerun_skips(tmp_path):
    logs: list[str] = []
    res = nas("digits", space="v2", trials=3, epochs=1, out=tmp_path, log=logs.append, **TINY)
    assert res["finished"] == 3 and len(res["trials"]) == 3
    assert sum(m.startswith("trial ") for m in logs) == 3
    rows = json.loads((tmp_path / "trials.json").read_text())
    assert [r["trial"] for r in rows] == [r["trial"] for r in res["trials"]]
    header = (tmp_path / "trials.csv").read_text().splitlines()[0]
    assert header == "trial,genotype,acc,step_time,params,macs,image_size,reward"
    for r in rows:
        assert 0 <= r["acc"] <= 1 and r["step_time"] > 0 and r["params"] > 0 and r["macs"] > 0
        assert r["reward"] == pytest.approx(
            nas_space.v2_reward(r["acc"], r["step_time"], r["params"], res["ref_step_time"])
        )
    assert res["best"]["reward"] == max(r["reward"] for r in rows)
    assert set(res["pareto"]) <= {r["trial"] for r in rows} and res["pareto"]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    # the best genotype is a spec file every model entry point takes
    spec = tmp_path / BEST_SPEC
    model = create_model(str(spec), num_classes=10)
    assert model.record.name.startswith("nas_v2_")
    assert sum(t.numel() for t in model.parameters()) == res["best"]["params"]
    # re-running the same search trains nothing
    again: list[str] = []
    res2 = nas("digits", space="v2", trials=3, epochs=1, out=tmp_path, log=again.append, **TINY)
    assert not any(m.startswith("trial ") for m in again)
    assert [r["trial"] for r in res2["trials"]] == [r["trial"] for r in res["trials"]]
    # a trial whose process died is failed, queued again with its genotype, and completed
    study = open_study(res["storage"], res["study"], "random", 0)
    dead = study.ask()
    chosen = nas_space.sample(nas_space.get_space("v2"), dead.suggest_categorical)
    dead.set_user_attr("host", socket.gethostname())
    dead.set_user_attr("pid", 2**22 + 12345)  # beyond pid_max's default: no such process
    assert not os.path.exists(f"/proc/{2**22 + 12345}")
    res3 = nas("digits", space="v2", trials=4, epochs=1, out=tmp_path, log=again.append, **TINY)
    assert res3["finished"] == 4
    redone = [r for r in res3["trials"] if r["trial"] not in {x["trial"] for x in rows}]
    assert len(redone) == 1
    assert redone[0]["genotype"] == nas_space.genotype_text(chosen)


def test_step_time_is_the_fastest_timed_step_after_warmup(monkeypatch):
    """What step_time reports, on a fake clock (its stability on this machine is a timing
    figure, measured by benchmarks/nas_step_time.py, not asserted here)."""
    durations = iter([9.0, 9.0, 9.0, 0.5, 0.1, 0.3, 0.2, 0.4])  # 3 warm-up steps, then 5
    clock = [0.0]

    def fake_step(model):
        def step(x, y):
            assert x.shape == (2, 3, 16, 16) and y.shape == (2,)
            clock[0] += next(durations)

        return step

    monkeypatch.setattr(nas_mod, "_sgd_step", fake_step)
    monkeypatch.setattr(nas_mod.time, "perf_counter", lambda: clock[0])
    base = base_config(None, data="digits", image_size=32)
    v = candidate_variant(base, specs.EFFICIENTNETV2_S)
    assert step_time(v, 10, 16, 2, threads=1, warmup=3, steps=5) == pytest.approx(0.1)
