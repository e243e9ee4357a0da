"""The one construction entry: every kind named by config, one pick shape, state carried."""

from __future__ import annotations

import ast
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sidecar.balance
from sidecar.balance import KINDS, Balancer, make_balancer
from sidecar.testing import FakeClock as Clock


@dataclass(frozen=True)
class Ep:
    name: str
    weight: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.name, 80)


EPS = [Ep("a"), Ep("b"), Ep("c")]


def build(kind: str, eps: list[Ep] = EPS, **options: Any) -> Balancer[Ep]:
    return make_balancer(kind, eps, rng=random.Random(1), clock=Clock(), **options)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_the_same_shape(kind: str) -> None:
    balancer = build(kind)
    previous = None
    for n in range(300):
        handle = balancer.pick(b"key-%d" % n, exclude=previous)
        assert handle is not None and handle.endpoint in EPS
        assert handle.endpoint != previous, "a retry never goes to the same endpoint"
        handle.done(0.010, ok=n % 7 != 0)
        previous = handle.endpoint
    assert balancer.loads.group.pending == 0
    assert build(kind, []).pick(b"k") is None
    balancer.penalize(EPS[0], 10.0)
    for _ in range(50):
        handle = balancer.pick(b"k")
        assert handle is not None and handle.endpoint != EPS[0]
        handle.done(0.010)


def test_round_robin_keeps_its_order() -> None:
    balancer = build("round_robin", [Ep("a", 5), Ep("b", 1), Ep("c", 1)])
    picks = []
    for _ in range(7):
        handle = balancer.pick()
        assert handle is not None
        picks.append(handle.endpoint.name)
        handle.done(0.010)
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's smooth order


def test_round_robin_exclude_when_one_weight_fills_the_round() -> None:
    heavy, light = Ep("heavy", 100), Ep("light", 1)
    balancer = build("round_robin", [heavy, light])
    for _ in range(20):
        handle = balancer.pick(exclude=heavy)
        assert handle is not None and handle.endpoint == light
        handle.done(0.010)


def test_state_carries_across_kinds() -> None:
    first = build("round_robin")
    first.observe(EPS[0], 0.900)
    second = make_balancer("least_request", [Ep("a"), Ep("b")], rng=random.Random(2),
                           clock=Clock(), previous=first, decay=5.0)
    load = second.loads.by_address[("a", 80)]
    assert load.latency(0.0) == pytest.approx(0.900) and load.settings.decay == 5.0
    picks: Counter[str] = Counter()
    for _ in range(10):
        handle = second.pick()
        assert handle is not None
        picks[handle.endpoint.name] += 1
        handle.done(0.010)
    assert picks == {"b": 10}


def test_unknown_kind_and_option() -> None:
    with pytest.raises(ValueError, match="unknown balancer 'fastest'"):
        build("fastest")
    with pytest.raises(TypeError):
        build("random", decay=3.0)
    with pytest.raises(ValueError, match="decay"):
        build("least_request", decay=0.0)


def test_balancers_import_only_the_standard_library_and_core() -> None:
    package = Path(sidecar.balance.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom):  # relative: within balance, or ..core
                assert node.level == 1 or (node.level == 2 and node.module == "core"), \
                    f"{path.name}: from {'.' * node.level}{node.module}"
                continue
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith("sidecar.core"), \
                    f"{path.name} imports {name}"
