"""The FLOP model of benchmarks/bench_oneway.py with several references (docs/benchmarks.json's
``multi`` entry): one reference is exactly the diptych's numbers, and the costs grow as they must."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(comfy):
    spec = importlib.util.spec_from_file_location("bench_oneway", REPO / "benchmarks" / "bench_oneway.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_reference_is_the_diptych_and_costs_grow_with_k(bench):
    from instruct_identity.engine import synthetic

    cfg = synthetic.FLUX_DEV
    for px in bench.SIZES:
        one = bench.flop_ratios(cfg, px)
        assert bench.flop_ratios(cfg, px, references=1) == one
        r = [bench.flop_ratios(cfg, px, references=k) for k in (1, 2, 3)]
        joint = [x["joint"] for x in r]
        way = [x["one_way"] for x in r]
        assert joint[0] < joint[1] < joint[2] and way[0] < way[1] < way[2]
        assert joint[2] - joint[1] > way[2] - way[1]                   # one-way grows more slowly with K
        assert joint[2] - joint[1] > joint[1] - joint[0]                 # joint attention is quadratic in K
        b = [bench.cached_bytes(cfg, px, references=k) for k in (1, 2, 3)]
        assert b == [b[0], 2 * b[0], 3 * b[0]]


def test_the_published_numbers_are_the_models(bench):
    from instruct_identity.engine import synthetic

    doc = json.loads((REPO / "docs" / "benchmarks.json").read_text())
    assert doc["multi"] == bench.multi_results(synthetic.FLUX_DEV), "rerun benchmarks/bench_oneway.py --flops-only"
    assert doc["multi"]["joint"]["flops_ratio"]["1"] == doc["joint"]["flops_ratio"]
    assert doc["multi"]["one_way"]["flops_ratio"]["1"] == doc["one_way"]["flops_ratio"]
