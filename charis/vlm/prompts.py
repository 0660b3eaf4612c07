"""What CHARIS asks the VLM (our own wording). Every task asks for one JSON object; the parser in
:mod:`.parse` validates it against the task's shape.

Image order is part of each task: ``images`` lists what the VLM is shown, in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SYSTEM = ("You are a meticulous visual evaluator for character-consistent image generation. You look closely "
          "at the images you are given and answer with a single JSON object only: no prose before or after it, "
          "no code fences.")

RUBRIC_0_4 = "Use whole numbers from 0 to 4."

ATTRIBUTE_VERDICTS = ("match", "partial", "mismatch", "not_visible")


@dataclass(frozen=True)
class Task:
    name: str
    images: tuple[str, ...]  # which pictures, in order: "reference", "generated"
    template: str
    kind: str  # "attributes", "verdicts", "score" or "caption"

    def render(self, **fields) -> str:
        return self.template.format(**{k: v for k, v in fields.items()})


IDENTITY_ATTRIBUTES = Task("identity_attributes", ("reference",), """\
The image shows a character (a person, animal, creature or object with a persistent identity).
List the visual attributes that make this character recognisable and that should stay the same in any
new picture of it, whatever the pose, scene or style: hair (colour, length, style), skin or fur colour,
eye colour, facial features, markings, each clothing piece with its colour and pattern, accessories,
body shape and proportions, distinctive marks. Ignore the background, the pose and the lighting.
Give 4 to 20 attributes, the most distinctive first; each value must be specific (a colour name, a
pattern, a shape), never "normal" or "default".
Answer with JSON of exactly this shape:
{{"attributes": [{{"attribute": "hair colour", "value": "bright red", "region": "hair"}}, ...]}}
"region" names the body part or item the attribute belongs to (one or two words, e.g. "hair", "jacket",
"left arm", "face"); it is used to find that part in the images.""", "attributes")

IDENTITY_JUDGE = Task("identity_judge", ("reference", "generated"), """\
The first image is the reference character; the second image is a newly generated picture that should
show the same character (in another pose, scene or style, as its prompt asked: "{prompt}").
Here are the reference character's identity attributes:
{attributes}
For each attribute, look at the generated image and decide:
"match" (clearly the same), "partial" (recognisably similar but altered, e.g. a shade off or a missing
detail), "mismatch" (different or missing although it should be visible), or "not_visible" (hidden by
the pose or the framing, so it cannot be judged).
Then rate how well the generated image preserves the character's identity overall, judging only the
visible attributes and not the pose, scene or style:
4 = every visible attribute matches; 3 = minor deviations; 2 = several attributes altered but still
recognisable; 1 = most attributes wrong; 0 = a different character. """ + RUBRIC_0_4 + """
Answer with JSON of exactly this shape:
{{"verdicts": [{{"attribute": "hair colour", "verdict": "match", "note": "same red"}}, ...], "score": 3}}
List one verdict per attribute above, in the same order.""", "verdicts")

PROMPT = Task("prompt", ("generated",), """\
The image was generated from this prompt: "{prompt}".
Rate how completely and faithfully the image follows the prompt: the actions, pose, objects, scene,
background, style and any counts or colours it asks for.
4 = everything in the prompt is depicted correctly; 3 = one minor element missing or wrong; 2 = the
main idea is there but several elements are missing or wrong; 1 = only loosely related; 0 = unrelated.
""" + RUBRIC_0_4 + """
Answer with JSON of exactly this shape: {{"score": 3, "missing": ["..."], "reason": "one sentence"}}""", "score")

DIVERSITY = Task("diversity", ("reference", "generated"), """\
The first image is a reference character; the second is a new picture of it made for the prompt "{prompt}".
Rate how much the second image transforms the reference rather than copying it: consider pose, body
orientation and viewpoint, camera distance and framing, scene and background, expression and action.
Do not judge identity or quality here.
4 = a substantially new picture (new pose and viewpoint and scene); 3 = clearly changed in most of these;
2 = some changes but the layout follows the reference; 1 = nearly the same picture with small edits;
0 = a copy of the reference (same pose, framing and background). """ + RUBRIC_0_4 + """
Answer with JSON of exactly this shape:
{{"score": 2, "changed": ["pose", "background"], "reason": "one sentence"}}""", "score")

DREAMBENCH_CP = Task("dreambench_cp", ("reference", "generated"), """\
The first image shows a subject (the concept); the second image was generated to show the same subject.
Rate concept preservation: how closely the subject in the second image resembles the subject in the
first one in shape, colours, textures, markings and details. Ignore pose, background and style changes.
4 = practically identical subject; 3 = very similar with minor differences; 2 = similar but with
noticeable differences; 1 = only loosely resembling; 0 = no resemblance. """ + RUBRIC_0_4 + """
Answer with JSON of exactly this shape: {{"score": 3, "reason": "one sentence"}}""", "score")

DREAMBENCH_PF = Task("dreambench_pf", ("generated",), """\
The image was generated for the prompt "{prompt}".
Rate prompt following: how well the image depicts what the prompt describes (subject, action,
setting, style).
4 = follows the prompt fully; 3 = follows it with a minor omission; 2 = partly follows it; 1 = barely
related; 0 = ignores it. """ + RUBRIC_0_4 + """
Answer with JSON of exactly this shape: {{"score": 3, "reason": "one sentence"}}""", "score")

DREAMBENCH_CP_DEBIASED = Task("dreambench_cp_debiased", ("reference", "generated"), """\
The first image shows a subject; the second image was generated for the prompt "{prompt}", which asks
for that subject in a new situation.
Rate concept preservation, but do not reward copying: if the second image reproduces the first one
with little or no transformation (same pose, framing or background where the prompt asked for a
change), the score must be at most 1. Otherwise rate how closely the subject's shape, colours,
textures and details are preserved.
4 = identical subject, properly re-posed or re-staged; 3 = very similar with minor differences;
2 = noticeable differences; 1 = loose resemblance, or a copy-paste of the reference; 0 = no resemblance.
""" + RUBRIC_0_4 + """
Answer with JSON of exactly this shape: {{"score": 3, "copied": false, "reason": "one sentence"}}""", "score")

DREAMBENCH_PF_DEBIASED = Task("dreambench_pf_debiased", ("reference", "generated"), """\
The first image shows a subject; the second image was generated for the prompt "{prompt}".
Rate how well the second image follows the prompt. Content carried over unchanged from the first image
does not count as following the prompt: if the second image is mostly a copy of the first (same pose,
framing or background where the prompt asked for something else), the score must be at most 1.
4 = fully follows the prompt with a genuinely new composition; 3 = follows it with a minor omission;
2 = partly follows it; 1 = barely, or mostly a copy of the first image; 0 = ignores it. """ + RUBRIC_0_4 + """
Answer with JSON of exactly this shape: {{"score": 3, "copied": false, "reason": "one sentence"}}""", "score")

CAPTION = Task("caption", ("generated",), """\
The image is a training picture of a character for an image generator; it was made for this prompt:
"{prompt}".
Write the caption the picture should be trained with: one or two sentences describing what is actually
visible -- the character's pose, action, expression and viewpoint, what it wears and holds, the scene or
background, and the style. Keep what the prompt says where the picture shows it; correct or leave out
what it does not show. No opinions, no quality words, no mention of "the image" or "the prompt".
Answer with JSON of exactly this shape: {{"caption": "..."}}""", "caption")

TASKS = {t.name: t for t in (IDENTITY_ATTRIBUTES, IDENTITY_JUDGE, PROMPT, DIVERSITY, DREAMBENCH_CP,
                             DREAMBENCH_PF, DREAMBENCH_CP_DEBIASED, DREAMBENCH_PF_DEBIASED, CAPTION)}

RETRY_HINT = ("\n\nYour previous answer could not be used ({problem}). Reply again with only the JSON object "
              "in the shape given above.")


def render(task: str, **fields) -> str:
    t = TASKS[task]
    if "attributes" in fields and not isinstance(fields["attributes"], str):
        fields["attributes"] = format_attributes(fields["attributes"])
    if "prompt" in fields:
        fields["prompt"] = str(fields["prompt"]).replace('"', "'").strip()
    return t.render(**fields)


def format_attributes(attributes: list[dict]) -> str:
    return "\n".join(f"{i + 1}. {json.dumps(a, ensure_ascii=False)}" for i, a in enumerate(attributes))
