"""The fake OpenAI-compatible VLM lives in the package (the benchmark uses it too): see
:mod:`instruct_identity.charis.testing`."""

from instruct_identity.charis.testing import ATTRIBUTES, FakeVLM, answer_for  # noqa: F401
