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
    """Issue 13: by default no composite at all when an axis is missing (the reason names each
    missing axis and why); a partial one only when asked for, labelled with the axes it used."""
    vals = {"identity": AxisResult.absent("identity", "no VLM configured"), "prompt": None,
            "color": AxisResult.ok("color", 0.64), "quality": 0.81}
    c = composite(vals, CompositeSpec("benchmark"))
    assert c.axes_missing == ["identity", "prompt"] and c.axes_used == ["color", "quality"]
    assert not c.complete and not c.partial
    assert c.value is None  # (before issue 13: sqrt(0.64 * 0.81) under the name "CHARIS")
    assert "identity: no VLM configured" in c.reason and "prompt: not computed" in c.reason
    assert "allow_partial" in c.reason and c.headline().startswith("CHARIS absent: missing identity")
    partial = composite(vals, CompositeSpec("benchmark", allow_partial=True))
    assert partial.value == pytest.approx(math.sqrt(0.64 * 0.81))  # over the axes it has, and it says so
    assert partial.label == "partial CHARIS: color, quality" and partial.partial
    assert partial.headline() == "partial CHARIS: color, quality 0.720"
    nothing = composite({}, CompositeSpec("benchmark", allow_partial=True))
    assert nothing.value is None and nothing.axes_used == [] and "no axis" in nothing.reason


def test_labels_say_which_axes_were_used():
    full = {"identity": 0.9, "prompt": 0.6, "color": 0.8, "quality": 0.5}
    assert composite(full, CompositeSpec("benchmark")).label == "CHARIS"
    custom = composite(full, CompositeSpec("benchmark", weights={"identity": 1, "color": 1}))
    assert custom.complete and custom.label == "custom CHARIS: identity, color"
    # the colour axis alone is never called CHARIS, with or without the option
    only_color = {"color": AxisResult.ok("color", 0.8)}
    assert composite(only_color, CompositeSpec("benchmark")).value is None
    assert composite(only_color, CompositeSpec("benchmark", allow_partial=True)).label == "partial CHARIS: color"


def test_summaries_never_average_partial_with_complete():
    from instruct_identity.charis.summary import summarize

    spec_p = CompositeSpec("benchmark", allow_partial=True)
    full = {"identity": 0.9, "prompt": 0.9, "color": 0.9, "quality": 0.9}
    part = {"color": 0.1, "quality": 0.1}
    results = [PairResult(id=f"c{i}", prompt="", axes={a: AxisResult.ok(a, v) for a, v in full.items()},
                          composite=composite(full, spec_p)) for i in range(2)]
    results += [PairResult(id=f"p{i}", prompt="", axes={a: AxisResult.ok(a, v) for a, v in part.items()},
                           composite=composite(part, spec_p)) for i in range(3)]
    results.append(PairResult(id="none", prompt="", axes={a: AxisResult.ok(a, v) for a, v in part.items()},
                              composite=composite(part, CompositeSpec("benchmark"))))
    s = summarize(results)
    assert s.complete.count == 2 and s.complete.mean == pytest.approx(0.9)  # not (2*0.9 + 3*0.1) / 5
    assert [(g.label, g.count) for g in s.partial] == [("partial CHARIS: color, quality", 3)]
    assert s.partial[0].mean == pytest.approx(0.1) and s.absent == 1
    assert s.coverage["identity"] == (2, 6) and s.coverage["color"] == (6, 6)
    text = s.text()
    assert "mean CHARIS 0.9000 over 2 complete" in text and "identity 2/6" in text and "not comparable" in text


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
    from instruct_identity.core.errors import InputError

    with pytest.raises(InputError, match="^mode: 'ranking'"):
        CompositeSpec("ranking")
    with pytest.raises(InputError, match="composite.weights.identity"):
        CompositeSpec("benchmark", weights={"identity": True})
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
