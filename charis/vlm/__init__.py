"""VLM judges: prompt texts, answer parsing, backends (OpenAI-compatible HTTP, local transformers),
an on-disk answer cache and the :class:`Judge` that ties them together."""

from .backends import OpenAICompatibleBackend, TransformersBackend, VLMError
from .cache import AnswerCache
from .judge import Answer, Judge
from .parse import parse_answer
from .prompts import TASKS

__all__ = ["Answer", "AnswerCache", "Judge", "OpenAICompatibleBackend", "TASKS", "TransformersBackend", "VLMError",
           "parse_answer"]
