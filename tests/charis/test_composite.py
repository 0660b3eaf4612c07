"""Composite maths (Algorithm 2) and the axis registry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instruct_identity.charis.axes import CORE_AXES, all_axes, get_axis, register, AxisInfo
from instruct_identity.charis.composite import (BENCHMARK_AXES, FILTER_AXES, CompositeSpec, composite,
                                                weighted_geometric_mean)
from instruct_identity.charis.results import AxisResult, PairResult


def test_equal_weights_give_the_plain_geometric_mean():
    vals = {"identity": 0.9, "prompt": 0.6, "color": 0.8, "quality": 0.5}
    c = composite(vals, CompositeSpec("benchmark"))
    assert c.value == pytest.approx((0.9 * 0.6 * 0.8 * 0.5) ** 0.25)
    assert c.axes_used == list(BENCHMARK_AXES) and c.complete and c.weights == {a: 0.25 for a in BENCHMARK_AXES}


def test_weights_tilt_the_mean():
    vals = {"identity": 1.0, "color": 0.25, "quality": 1.0, "diversity": 1.0}
    spec = CompositeSpec("filter", weights={"identity": 1, "color": 3, "quality": 0, "diversity": 0})
    # (1^1 * 0.25^3) ^ (1/4)
    assert composite(vals, spec).value == pytest.approx(0.25 ** 0.75)
    assert composite(vals, spec).axes_used == ["identity", "color"]  # zero weight: not used


def test_weights_are_scale_free():
    vals = {"identity": 0.7, "prompt": 0.2, "color": 0.9, "quality": 0.4}
    a = composite(vals, CompositeSpec("benchmark", weights={a: 1.0 for a in BENCHMARK_AXES})).value
    b = composite(vals, CompositeSpec("benchmark")).value
    assert a == pytest.approx(b)


def test_a_zero_axis_zeroes_the_composite():
    vals = {"identity": 0.9, "prompt": 0.0, "color": 0.8, "quality": 0.5}
    assert composite(vals, CompositeSpec("benchmark")).value == 0.0


def test_a_missing_axis_is_reported_and_never_filled_in():
    vals = {"identity": AxisResult.absent("identity", "no VLM configured"), "prompt": None,
            "color": AxisResult.ok("color", 0.64), "quality": 0.81}
    c = composite(vals, CompositeSpec("benchmark"))
    assert c.axes_missing == ["identity", "prompt"] and c.axes_used == ["color", "quality"]
    assert not c.complete
    assert c.value == pytest.approx(math.sqrt(0.64 * 0.81))  # over the axes it has, and it says so
    strict = composite(vals, CompositeSpec("benchmark", require_all=True))
    assert strict.value is None and strict.axes_missing == ["identity", "prompt"]
    nothing = composite({}, CompositeSpec("benchmark"))
    assert nothing.value is None and nothing.axes_used == []


def test_filter_mode_thresholds():
    good = {"identity": 0.9, "color": 0.8, "quality": 0.7, "diversity": 0.6}
    spec = CompositeSpec("filter")
    assert spec.axes == FILTER_AXES
    c = composite(good, spec)
    assert c.passed is True and c.failed == {}
    bad = dict(good, color=0.3)
    c = composite(bad, spec)
    assert c.passed is False and "color" in c.failed
    missing = dict(good, identity=None)
    c = composite(missing, spec)
    assert c.passed is False and c.failed["identity"] == "missing"
    assert composite(good, CompositeSpec("filter", thresholds={}, min_composite=0.99)).passed is False
    assert composite(good, CompositeSpec("benchmark")).passed is None


@given(st.dictionaries(st.sampled_from(BENCHMARK_AXES), st.floats(0.0, 1.0), min_size=4, max_size=4),
       st.dictionaries(st.sampled_from(BENCHMARK_AXES), st.floats(0.01, 10.0), min_size=4, max_size=4))
def test_geometric_mean_lies_between_min_and_max(values, weights):
    g = weighted_geometric_mean(values, weights)
    assert min(values.values()) - 1e-9 <= g <= max(values.values()) + 1e-9


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        CompositeSpec("ranking")
    with pytest.raises(ValueError):
        CompositeSpec("benchmark", weights={"identity": -1})
    with pytest.raises(ValueError):
        CompositeSpec("benchmark", weights={"identity": 0})
    with pytest.raises(ValueError):
        weighted_geometric_mean({"identity": 1.5}, {"identity": 1})


def test_registry_metadata_and_near_names():
    axes = all_axes()
    assert set(CORE_AXES) <= set(axes)
    assert axes["color"].needs_vlm is False and axes["identity"].needs_vlm is True
    assert all(a.low == 0.0 and a.high == 1.0 and a.higher_is_better for a in axes.values())
    with pytest.raises(KeyError, match="did you mean 'color'|Did you mean 'color'"):
        get_axis("colour")
    with pytest.raises(ValueError):
        register(AxisInfo("color", "Color", "again"))


def test_results_round_trip_through_json():
    import json

    axes = {"color": AxisResult.ok("color", 0.5, per_space={"rgb": 0.5}), "identity": AxisResult.absent("identity", "x")}
    r = PairResult(id="a", prompt="p", axes=axes, composite=composite(axes, CompositeSpec("benchmark")))
    back = PairResult.from_dict(json.loads(r.to_json()))
    assert back == r
    assert AxisResult.ok("q", float("nan")).value is None  # never a NaN score
