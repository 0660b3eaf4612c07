"""VLM backends. Each has ``id`` (what the answer cache keys on; never a secret) and
``complete(prompt, images, system=None) -> str``.

* :class:`OpenAICompatibleBackend`: ``POST {base_url}/chat/completions`` (Ollama, vLLM, LM Studio,
  OpenAI, ...). The API key is read from an environment variable at request time and only ever put
  in the ``Authorization`` header; every message this module logs or raises is passed through
  :meth:`redact`. A concurrency limit, per-request timeout and retries with exponential backoff on
  429 / 5xx / timeouts / connection errors (honouring ``Retry-After``) are built in.
* :class:`TransformersBackend`: a local vision-language model (Qwen2-VL / Qwen2.5-VL class) loaded
  with ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a local folder; greedy decoding.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ...core.errors import InputError
from ..images import data_url

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
#: Hosted APIs that never answer without a key: an unset key variable is an error there, not a warning.
KEY_REQUIRED_HOSTS = {"api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "api.mistral.ai",
                      "api.together.xyz", "openrouter.ai", "api.groq.com", "api.deepinfra.com", "api.fireworks.ai"}


class VLMError(RuntimeError):
    """The backend could not produce an answer (after its retries)."""


@dataclass
class HttpSettings:
    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the variable, never the key itself
    timeout: float = 120.0
    max_retries: int = 4
    backoff: float = 1.0  # first retry waits about this long, doubling each time
    max_backoff: float = 30.0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 1024
    image_max_side: int = 768
    json_mode: bool = False  # send response_format={"type": "json_object"} (not every server accepts it)


class OpenAICompatibleBackend:
    def __init__(self, settings: HttpSettings):
        from ..config import check_key_env

        if not settings.base_url or not settings.model:
            raise InputError("vlm.base_url / vlm.model (--vlm-url / --vlm-model)",
                             "the OpenAI-compatible VLM needs a base URL and a model name.",
                             "Give both, e.g. --vlm-url http://localhost:11434/v1 --vlm-model qwen2.5vl:7b.")
        check_key_env(settings.api_key_env)
        self.settings = settings
        if settings.api_key_env and not os.environ.get(settings.api_key_env):
            host = urllib.parse.urlsplit(settings.base_url).hostname or ""
            if host in KEY_REQUIRED_HOSTS:
                raise InputError("vlm.api_key_env (--vlm-key-env)",
                                 f"the environment variable {settings.api_key_env} is not set, and {host} needs a key.",
                                 f"export {settings.api_key_env}=... before running (or name the variable that "
                                 "holds it).")
            log.warning("VLM: the environment variable %s is not set, so requests to %s go without an API key "
                        "(fine for a local Ollama / vLLM / LM Studio; set it for a hosted API)",
                        settings.api_key_env, settings.base_url)
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.id = f"openai:{settings.base_url.rstrip('/')}:{settings.model}"
        self._slots = threading.BoundedSemaphore(max(1, int(settings.concurrency)))
        self.requests = 0  # HTTP requests sent, retries included

    # -- secrets -------------------------------------------------------------------------------
    def _key(self) -> str | None:
        env = self.settings.api_key_env
        return os.environ.get(env) or None if env else None

    def redact(self, text: str) -> str:
        key = self._key()
        text = str(text)
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return text

    # -- request -------------------------------------------------------------------------------
    def payload(self, prompt: str, images: list[Image.Image], system: str | None) -> dict:
        s = self.settings
        content = [{"type": "text", "text": prompt}]
        for img in images:
            img = img.copy()
            img.thumbnail((s.image_max_side, s.image_max_side), Image.Resampling.LANCZOS)
            content.append({"type": "image_url", "image_url": {"url": data_url(img)}})
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        body = {"model": s.model, "messages": messages, "temperature": s.temperature, "max_tokens": s.max_tokens}
        if s.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def complete(self, prompt: str, images: list[Image.Image], system: str | None = None) -> str:
        data = json.dumps(self.payload(prompt, images, system)).encode("utf-8")
        s = self.settings
        last = "no attempt made"
        for attempt in range(s.max_retries + 1):
            retry_after = None
            with self._slots:
                self.requests += 1
                try:
                    return self._post(data)
                except urllib.error.HTTPError as e:
                    body = _read(e)
                    last = f"HTTP {e.code} from {self.settings.base_url}: {body[:300]}"
                    if e.code not in RETRY_STATUS:
                        raise VLMError(self.redact(_explain(e.code, last, s.api_key_env))) from None
                    retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
                except (TimeoutError, socket.timeout) as e:
                    last = f"no answer from {self.settings.base_url} within {s.timeout:g}s ({type(e).__name__})"
                except urllib.error.URLError as e:
                    if isinstance(e.reason, (TimeoutError, socket.timeout)):
                        last = f"no answer from {self.settings.base_url} within {s.timeout:g}s"
                    else:
                        last = f"cannot reach {self.settings.base_url}: {e.reason}"
                except _BadResponse as e:
                    last = str(e)
                except (ConnectionError, OSError) as e:
                    last = f"connection to {self.settings.base_url} failed: {e}"
            if attempt == s.max_retries:
                break
            wait = min(s.max_backoff, s.backoff * (2 ** attempt)) * (0.75 + 0.5 * random.random())
            if retry_after is not None:
                wait = min(s.max_backoff, max(wait, retry_after))
            log.warning("VLM request failed (%s); retry %d/%d in %.1fs", self.redact(last), attempt + 1,
                        s.max_retries, wait)
            time.sleep(wait)
        raise VLMError(self.redact(f"{last} (gave up after {s.max_retries + 1} attempts)"))

    def _post(self, data: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.settings.timeout) as r:
            raw = r.read()
        try:
            body = json.loads(raw)
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _BadResponse(f"the server's reply is not an OpenAI chat completion: {raw[:200]!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _BadResponse("the chat completion has no text content")
        return content


class _BadResponse(Exception):
    pass


def _read(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001
        return ""


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _explain(code: int, message: str, env: str | None) -> str:
    if code in (401, 403):
        where = f"the environment variable {env}" if env else "an environment variable (set api_key_env)"
        return f"{message} -- the server refused the credentials; put the API key in {where}"
    if code == 404:
        return f"{message} -- check the base URL (it usually ends in /v1) and the model name"
    return message


class TransformersBackend:
    """A local transformers vision-language model (Qwen2-VL / Qwen2.5-VL class) from a folder."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str = "auto", max_new_tokens: int = 768,
                 image_max_side: int = 768):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a transformers model folder (no config.json)")
        self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True,
                                                                 dtype=torch_dtype).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.image_max_side = image_max_side
        self.id = f"transformers:{path.name}"
        self._lock = threading.Lock()
        self.requests = 0

    def complete(self, prompt: str, images: list[Image.Image], system: str | None = None) -> str:
        import torch

        text = f"{system}\n\n{prompt}" if system else prompt
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        imgs = []
        for img in images:
            img = img.convert("RGB")
            img.thumbnail((self.image_max_side, self.image_max_side), Image.Resampling.LANCZOS)
            imgs.append(img)
        with self._lock, torch.no_grad():
            self.requests += 1
            inputs = self.processor(text=[chat], images=imgs or None, return_tensors="pt").to(self.model.device)
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
