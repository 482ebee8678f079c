"""Architecture search spaces as data, their genotypes and the search rewards.

A space is one frozen ``SearchSpace``: a backbone ``FamilySpec`` (stem, head, activation, BN and
the fixed strides) plus per stage the allowed values of each choice. A genotype is one value per
choice per stage; ``to_family`` turns it into an ordinary stage table (``effnet.specs``), so every
candidate is an effnet model that trains, saves, scales and exports like any other.

- ``v2``: EfficientNetV2 section 3.3 (arXiv:2104.00298): per stage convolution type {MBConv,
  Fused-MBConv}, layers, kernel {3, 5} and expansion {1, 4, 6}; V2-S's channels are reused, SE
  (0.25) goes with MBConv as in V2, and no pooling or skip choices.
- ``b0``: MnasNet's factorized hierarchical space (arXiv:1807.11626) around B0's table: per stage
  block type, kernel {3, 5}, SE ratio {0, 0.25}, expansion {1, 3, 6}, layers (B0's -1, +0, +1)
  and output filters (B0's x 0.75, 1, 1.25, multiples of 8).

The rewards: V2's ``A * S^w * P^v`` (w = -0.07, v = -0.05) and MnasNet's ``ACC * (FLOPS / T)^w``
(w = -0.07, T = 400M at 224 px, scaled by (size / 224)^2), plus ``reward_expression`` for a
user's own formula over ``acc``, ``step_time``, ``params``, ``macs`` and ``image_size``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import operator
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from effnet import specs

CHOICES = ("block", "r", "k", "e", "se", "c")  # a stage's choices, in StageSpec's names


@dataclass(frozen=True, slots=True)
class StageChoices:
    """The allowed values of each choice of one stage; the stride is the backbone's."""

    s: int
    block: tuple[str, ...]
    r: tuple[int, ...]
    k: tuple[int, ...]
    e: tuple[int, ...]
    se: tuple[float, ...]
    c: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SearchSpace:
    name: str
    backbone: specs.FamilySpec  # stem, head, act, BN, strides; its stages are a point
    stages: tuple[StageChoices, ...]
    se_follows_block: bool = False  # v2: MBConv stages get SE 0.25, Fused-MBConv none
    description: str = ""

    def size(self) -> int:
        """How many distinct genotypes the space holds."""
        n = 1
        for st in self.stages:
            per = [len(getattr(st, k)) for k in CHOICES if k != "se" or not self.se_follows_block]
            n *= math.prod(per)
        return n


def _v2_space() -> SearchSpace:
    base = specs.EFFICIENTNETV2_S
    layers = ((1, 2, 3), (2, 3, 4), (2, 3, 4), (3, 4, 6), (3, 6, 9), (5, 10, 15))
    stages = tuple(
        StageChoices(
            s=st.s,
            block=("mbconv", "fused"),
            r=r,
            k=(3, 5),
            e=(1, 4, 6),
            se=(0.0, 0.25),
            c=(st.c,),
        )
        for st, r in zip(base.stages, layers, strict=True)
    )
    return SearchSpace(
        "v2",
        replace(base, name="nas_v2"),
        stages,
        se_follows_block=True,
        description="EfficientNetV2 training-aware space on V2-S's channels",
    )


def _filters(c: int) -> tuple[int, ...]:
    return tuple(sorted({max(8, int(c * m + 4) // 8 * 8) for m in (0.75, 1.0, 1.25)}))


def _b0_space() -> SearchSpace:
    base = specs.EFFICIENTNET
    stages = tuple(
        StageChoices(
            s=st.s,
            block=("mbconv", "fused"),
            r=tuple(r for r in (st.r - 1, st.r, st.r + 1) if r >= 1),
            k=(3, 5),
            e=(1, 3, 6),
            se=(0.0, 0.25),
            c=_filters(st.c),
        )
        for st in base.stages
    )
    return SearchSpace(
        "b0", replace(base, name="nas_b0"), stages, description="MnasNet factorized space on B0"
    )


SPACES: dict[str, SearchSpace] = {s.name: s for s in (_v2_space(), _b0_space())}


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; choose from {', '.join(SPACES)}")
    return SPACES[name]


# -- genotypes -----------------------------------------------------------------------------------

Genotype = tuple[dict[str, Any], ...]  # one {choice: value} per stage
Chooser = Callable[[str, tuple], Any]  # (parameter name, allowed values) -> one of them


def param_name(stage: int, choice: str) -> str:
    return f"s{stage}_{choice}"


def sample(space: SearchSpace, choose: Chooser | int) -> Genotype:
    """One genotype; ``choose`` is a seed (deterministic), or e.g. an Optuna trial's
    ``suggest_categorical`` (an ``effnet.lab.nas`` detail)."""
    if isinstance(choose, int) and not isinstance(choose, bool):
        rng = random.Random(choose)

        def choose(_name: str, values: tuple) -> Any:
            return rng.choice(values)

    out = []
    for i, st in enumerate(space.stages):
        row = {}
        for k in CHOICES:
            values = getattr(st, k)
            if k == "se" and space.se_follows_block:
                row[k] = 0.25 if row["block"] == "mbconv" else 0.0
            else:
                row[k] = values[0] if len(values) == 1 else choose(param_name(i, k), values)
        out.append(row)
    return tuple(out)


def to_family(space: SearchSpace, genotype: Genotype, name: str | None = None) -> specs.FamilySpec:
    """The genotype's stage table, on the space's backbone (ValueError if it is not a point)."""
    check_genotype(space, genotype)
    stages = tuple(
        specs.StageSpec(g["block"], g["r"], g["k"], st.s, g["e"], g["c"], float(g["se"]))
        for st, g in zip(space.stages, genotype, strict=True)
    )
    return replace(
        space.backbone, name=name or f"nas_{space.name}_{genotype_id(genotype)}", stages=stages
    )


def genotype_of(family: specs.FamilySpec) -> Genotype:
    return tuple({k: getattr(s, k) for k in CHOICES} for s in family.stages)


def check_genotype(space: SearchSpace, genotype: Genotype) -> None:
    if len(genotype) != len(space.stages):
        raise ValueError(
            f"space {space.name} has {len(space.stages)} stages, the genotype {len(genotype)}"
        )
    for i, (st, g) in enumerate(zip(space.stages, genotype, strict=True)):
        for k in CHOICES:
            allowed = getattr(st, k)
            if k == "se" and space.se_follows_block:
                allowed = (0.25,) if g.get("block") == "mbconv" else (0.0,)
            if g.get(k) not in allowed:
                raise ValueError(
                    f"stage {i}: {k} = {g.get(k)!r} is not in space {space.name}'s {allowed}"
                )


def contains(space: SearchSpace, family: specs.FamilySpec) -> bool:
    """Whether ``family``'s stage table is a point of ``space`` (same strides and stem/head)."""
    if len(family.stages) != len(space.stages):
        return False
    if (family.stem_ch, family.head_ch, family.act) != (
        space.backbone.stem_ch,
        space.backbone.head_ch,
        space.backbone.act,
    ):
        return False
    if any(f.s != st.s for f, st in zip(family.stages, space.stages, strict=True)):
        return False
    try:
        check_genotype(space, genotype_of(family))
    except ValueError:
        return False
    return True


def genotype_id(genotype: Genotype) -> str:
    """A short stable hash: one training folder per distinct genotype."""
    text = json.dumps([sorted(g.items()) for g in genotype], default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def genotype_text(genotype: Genotype) -> str:
    """A compact one-line form: ``er_r2_k3_e1_c24 ir_r4_k5_e6_c48_se0.25 ...``."""
    return " ".join(
        str(specs.StageSpec(g["block"], g["r"], g["k"], 1, g["e"], g["c"], g["se"])).replace(
            "_s1", ""
        )
        for g in genotype
    )


# -- rewards -------------------------------------------------------------------------------------

V2_W, V2_V = -0.07, -0.05
MNAS_W, MNAS_T, MNAS_SIZE = -0.07, 400e6, 224


def v2_reward(acc: float, step_time: float, params: float, ref_step_time: float) -> float:
    """EfficientNetV2's ``A * S^w * P^v``: S is the step time over ``ref_step_time``."""
    return acc * (step_time / ref_step_time) ** V2_W * params**V2_V


def mnas_reward(acc: float, macs: float, image_size: int) -> float:
    """MnasNet / B0's ``ACC * (FLOPS / T)^w``, T = 400M MACs at 224 px scaled to ``image_size``."""
    target = MNAS_T * (image_size / MNAS_SIZE) ** 2
    return acc * (macs / target) ** MNAS_W


REWARD_NAMES = ("acc", "step_time", "params", "macs", "image_size")
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"log": math.log, "sqrt": math.sqrt, "exp": math.exp, "min": min, "max": max}


def reward_expression(text: str) -> Callable[[Mapping[str, float]], float]:
    """A safe evaluator of ``text`` (numbers, + - * / **, log sqrt exp min max and the names
    ``REWARD_NAMES``); a ValueError (one line) for one that does not parse or names others."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"reward {text!r} does not parse ({e.msg})") from None

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            return check(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return None
        if isinstance(node, ast.Name):
            if node.id not in REWARD_NAMES:
                raise ValueError(
                    f"reward {text!r}: unknown name {node.id!r}; use {', '.join(REWARD_NAMES)}"
                )
            return None
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return check(node.left) or check(node.right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            if node.func.id not in _FUNCS:
                raise ValueError(f"reward {text!r}: unknown function {node.func.id!r}")
            for a in node.args:
                check(a)
            return None
        raise ValueError(f"reward {text!r}: {type(node).__name__} is not allowed")

    check(tree)

    def evaluate(node: ast.AST, env: Mapping[str, float]) -> float:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](evaluate(node.left, env), evaluate(node.right, env))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](evaluate(node.operand, env))
        return _FUNCS[node.func.id](*(evaluate(a, env) for a in node.args))

    def reward(env: Mapping[str, float]) -> float:
        try:
            return float(evaluate(tree.body, env))
        except (ArithmeticError, ValueError, TypeError) as e:
            raise ValueError(f"reward {text!r} failed on {dict(env)} ({e})") from None

    return reward
