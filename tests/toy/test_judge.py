"""The miniature's simulated VLM: it answers CHARIS's own prompts from the pictures, through CHARIS's
real OpenAI-compatible backend and parser."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def mods(comfy):
    from instruct_identity.benchmarks.toy import judge
    from instruct_identity.charis.vlm import prompts
    from instruct_identity.miniature import sprites

    return judge, prompts, sprites


def _up(rgb, k=4):
    return np.repeat(np.repeat(rgb, k, 0), k, 1)


A = dict(head="red", torso="blue", legs="green", pattern="striped", hat="yellow")


def test_judge_reads_pose_and_part_colours_and_answers_each_task(mods):
    judge, P, sprites = mods
    a = sprites.Character(**A)
    drift = sprites.Character(**{**A, "torso": "purple"})
    p1, p2 = sprites.Pose("left", "large", "standing"), sprites.Pose("right", "small", "lying")
    ref, tgt, bad = (sprites.render(c, p)[0] for c, p in ((a, p1), (a, p2), (drift, p2)))
    r = judge.Reading(ref)
    assert r.pose == p1 and r.colours == {"head": "red", "torso": "blue", "legs": "green", "hat": "yellow"}
    assert judge.Reading(_up(tgt)).pose == p2                      # size-independent
    with judge.PaletteJudge() as jd:
        same = jd.answer(P.IDENTITY_JUDGE.render(prompt=p2.caption(), attributes="-"), [ref, tgt])
        assert '"score": 4' in same and "mismatch" not in same
        drifted = jd.answer(P.IDENTITY_JUDGE.render(prompt=p2.caption(), attributes="-"), [ref, bad])
        assert '"score": 3' in drifted and drifted.count("mismatch") == 1
        assert '"score": 4' in jd.answer(P.PROMPT.render(prompt=p2.caption()), [tgt])
        assert '"score": 4' not in jd.answer(P.PROMPT.render(prompt=p1.caption()), [tgt])
        assert '"score": 0' in jd.answer(P.DIVERSITY.render(prompt=p1.caption()), [ref, ref])
        assert '"score": 4' in jd.answer(P.DIVERSITY.render(prompt=p2.caption()), [ref, tgt])
        with pytest.raises(ValueError):
            jd.answer("What is the meaning of life?", [ref])


def test_error_rate_corrupts_that_share_of_answers_deterministically(mods):
    judge, P, sprites = mods
    chars = sprites.all_characters()[:40]
    pics = [sprites.render(c, sprites.ALL_POSES[i % 18])[0] for i, c in enumerate(chars)]
    prompt = P.DIVERSITY.render(prompt="x")
    with judge.PaletteJudge(0.4, seed=3) as a, judge.PaletteJudge(0.4, seed=3) as b, judge.PaletteJudge(0.0) as clean:
        answers = [a.answer(prompt, [p, q]) for p, q in zip(pics, pics[1:])]
        assert answers == [b.answer(prompt, [p, q]) for p, q in zip(pics, pics[1:])]
        assert 0.15 < a.corrupted / a.requests < 0.65
        truth = [clean.answer(prompt, [p, q]) for p, q in zip(pics, pics[1:])]
        assert clean.corrupted == 0 and sum(x != y for x, y in zip(answers, truth)) > 0


def test_charis_filter_with_the_judge_keeps_the_same_character_and_drops_drift_and_copies(mods):
    judge, _, sprites = mods
    from instruct_identity import charis
    from instruct_identity.curation.filters import charis_filter

    a = sprites.Character(**A)
    drift = sprites.Character(**{**A, "legs": "pink"})
    p1, p2 = sprites.Pose("left", "large", "standing"), sprites.Pose("center", "small", "arms up")
    ref, tgt, bad = (_up(sprites.render(c, p)[0]) for c, p in ((a, p1), (a, p2), (drift, p2)))
    with judge.PaletteJudge() as jd:
        keep = charis_filter(charis.Evaluator(charis.load_config(None, judge.charis_config(jd))))
        assert keep(ref, tgt, p2.caption()).keep
        verdict = keep(ref, bad, p2.caption())
        assert not verdict.keep and "identity" in verdict.reason
        assert not keep(ref, ref, p1.caption()).keep              # a copy: no transformation
        assert jd.by_task.get("identity_judge", 0) >= 3 and jd.by_task.get("diversity", 0) >= 3
