"""CHARIS (Character Holistic Attribute-Ranked Identity Scoring): the five-axis evaluator.

Library entry points: :func:`score_pair`, :func:`score_batch`, :class:`Evaluator`; results are the
dataclasses in :mod:`.results` (``.to_dict()`` / ``.to_json()``). Axis metadata lives in
:mod:`.axes`, the composite in :mod:`.composite`, the colour axis in :mod:`.color` +
:mod:`.segment`, CLIP / CLIP-IQA in :mod:`.clip`, the VLM judges in :mod:`.vlm`.
"""

from .axes import AxisInfo, all_axes, get_axis
from .composite import CompositeSpec, composite, weighted_geometric_mean
from .config import CharisConfig, load_config
from .evaluator import Evaluator, Item, score_batch, score_pair
from .results import AxisResult, Composite, PairResult

__all__ = ["AxisInfo", "AxisResult", "CharisConfig", "Composite", "CompositeSpec", "Evaluator", "Item", "PairResult",
           "all_axes", "composite", "get_axis", "load_config", "score_batch", "score_pair", "weighted_geometric_mean"]
