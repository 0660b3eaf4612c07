"""CHARIS (Character Holistic Attribute-Ranked Identity Scoring): the five-axis evaluator.

Library entry points: :func:`score_pair`, :func:`score_batch`, :class:`Evaluator`,
:func:`.batch.run_batch`; results are the dataclasses in :mod:`.results` (``.to_dict()`` /
``.to_json()``), :func:`summarize` adds them up without mixing complete and partial composites.
Every axis is scored through the metric registry (:func:`create_metric`). Axis metadata lives in
:mod:`.axes`, the composite in :mod:`.composite`, the colour axis in :mod:`.color` +
:mod:`.segment`, CLIP / CLIP-IQA in :mod:`.clip`, the VLM judges in :mod:`.vlm`.
"""

from .axes import AxisInfo, all_axes, get_axis
from .composite import CompositeSpec, composite, weighted_geometric_mean
from .config import CharisConfig, load_config
from .evaluator import Evaluator, Item, score_batch, score_pair
from .metrics import create_metric
from .results import AxisResult, Composite, PairResult
from .summary import Summary, summarize

__all__ = ["AxisInfo", "AxisResult", "CharisConfig", "Composite", "CompositeSpec", "Evaluator", "Item", "PairResult",
           "Summary", "all_axes", "composite", "create_metric", "get_axis", "load_config", "score_batch", "score_pair",
           "summarize", "weighted_geometric_mean"]
