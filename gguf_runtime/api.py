"""The Python API, in vLLM's shape: `LLM(model=...).generate(prompts, SamplingParams(...))`."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Iterator, Sequence

import numpy as np

from .batch import BatchStats, generate_batch
from .catalog import resolve_model
from .chat_template import ChatTemplate
from .config import ModelConfig
from .generate import Generation, GenerationStats, generate
from .gguf_file import GGUFFile
from .model import Model
from .quants import set_threads
from .sampling import SampledToken, Sampler, SamplingParams
from .scoring import default_pooling, embedding
from .session import ContextLengthError, Session
from .speculative import Drafter, ModelDrafter, NgramDrafter, check_vocab_compatible
from .state import load_state, save_state
from .tokenizer import Tokenizer

# vLLM constructor arguments that mean nothing on one CPU: accepted at their vLLM default, refused otherwise.
_VLLM_DEFAULTS: dict[str, Any] = {
    "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "quantization": None, "dtype": "auto",
    "gpu_memory_utilization": 0.9, "trust_remote_code": False, "enforce_eager": False, "tokenizer": None,
    "tokenizer_mode": "auto", "swap_space": 4, "cpu_offload_gb": 0, "revision": None, "download_dir": None,
}


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, float]] | None = None  # per generated token: {token_id: logprob}, top-N + chosen
    metrics: GenerationStats = field(default_factory=GenerationStats)


@dataclass
class EmbeddingOutput:
    embedding: list[float]


@dataclass
class EmbeddingRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: EmbeddingOutput


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True
    metrics: GenerationStats = field(default_factory=GenerationStats)  # of the first output: its prefill


class LLM:
    """A GGUF model loaded for generation. `model` is a path or a catalog name (e.g. "smollm2-135m")."""

    def __init__(self, model: str | os.PathLike | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 256, seed: int | None = None, max_model_len: int | None = None,
                 draft_model: str | os.PathLike | None = None, speculative: str | None = None,
                 draft_max: int = 16, draft_min: int = 1, draft_p_min: float = 0.75, max_num_seqs: int = 8,
                 kv_cache_dtype: str = "f32", kv_cache_tokens: int | None = None,
                 enable_prefix_caching: bool | None = True, **kwargs):
        """draft_model: a smaller model with the same vocabulary drafts tokens for speculative decoding;
        speculative="ngram" drafts by prompt lookup instead (no second model). Output is unchanged either way.

        max_num_seqs: sequences `generate` decodes together (continuous batching). kv_cache_dtype: "f32"
        (closest to llama.cpp's logits here), "f16" (half the memory), "q8_0" (a quarter), or another llama.cpp
        cache type.
        kv_cache_tokens: positions the shared KV pool holds for all sequences (default 2 x n_ctx).
        enable_prefix_caching: reuse cached blocks of a prompt prefix computed by an earlier request."""
        self._check_vllm_kwargs(kwargs)
        if max_model_len is not None:
            n_ctx = max_model_len
        path = resolve_model(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}" + (
                "" if model is None or os.sep in str(model) else
                f" (fetch catalog models with `gguf-runtime pull NAME`)"))
        if n_threads is not None:
            set_threads(n_threads)
        t0 = time.perf_counter()
        self.path: Path = path
        self.gguf, self.tokenizer, self.model = load(path)
        self.config = self.model.config
        self.n_ctx = int(n_ctx)
        self.n_batch = n_batch
        self.max_num_seqs = max_num_seqs
        if kv_cache_dtype == "auto":
            kv_cache_dtype = "f32"
        pool_tokens = 2 * self.n_ctx if kv_cache_tokens is None else int(kv_cache_tokens)
        if pool_tokens < self.n_ctx:
            raise ValueError(f"kv_cache_tokens ({pool_tokens}) must hold at least one context (n_ctx {self.n_ctx})")
        self.pool = self.model.new_pool(pool_tokens, kv_cache_dtype)
        self.pool.prefix_caching = enable_prefix_caching is not False
        self.session = Session(self.model, self.n_ctx, n_batch=n_batch, pool=self.pool)
        self.batch_stats: BatchStats | None = None  # of the last generate call
        if speculative not in (None, "draft", "ngram"):
            raise ValueError(f"speculative must be None, 'draft' or 'ngram', got {speculative!r}")
        if speculative == "draft" and draft_model is None:
            raise ValueError("speculative='draft' needs draft_model")
        self.speculative = "draft" if draft_model is not None and speculative is None else speculative
        self._draft_args = dict(draft_max=draft_max, draft_min=draft_min)
        self.draft_session: Session | None = None
        self.draft_p_min = draft_p_min
        if draft_model is not None:
            draft_path = resolve_model(draft_model)
            if not draft_path.is_file():
                raise FileNotFoundError(f"draft model file not found: {draft_path}")
            _, draft_tok, draft = load(draft_path)
            check_vocab_compatible(self.tokenizer, draft_tok)
            self.draft_session = Session(draft, self.n_ctx, n_batch=n_batch)
        self.seed = seed
        self._template: ChatTemplate | None = None
        self._requests = 0
        self.load_seconds = time.perf_counter() - t0

    @staticmethod
    def _check_vllm_kwargs(kwargs: dict[str, Any]) -> None:
        for name, value in kwargs.items():
            if name not in _VLLM_DEFAULTS:
                raise TypeError(f"LLM() got an unexpected argument {name!r}; supported: model, n_ctx "
                                f"(= max_model_len), n_threads, n_batch, seed")
            if value != _VLLM_DEFAULTS[name] and not (name == "quantization" and value == "gguf"):
                raise ValueError(f"LLM({name}={value!r}) is not supported: gguf-runtime runs one GGUF model on "
                                 f"the CPU in one process ({name} must stay {_VLLM_DEFAULTS[name]!r})")

    # ---- tokens ----------------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special=skip_special)

    def prompt_token_ids(self, prompt: str | Sequence[int] | dict) -> list[int]:
        """The token ids `generate` would run for this prompt (tokenized, validated, length-checked)."""
        return self._prompt_ids(prompt)[1]

    def _prompt_ids(self, prompt: str | Sequence[int] | dict, room: int = 1) -> tuple[str | None, list[int]]:
        """A string is tokenized like llama.cpp's completion (special tokens parsed, BOS per metadata);
        token ids are used as is; vLLM's {"prompt": ...} / {"prompt_token_ids": [...]} dicts also work."""
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                prompt = prompt["prompt_token_ids"]
            elif "prompt" in prompt:
                prompt = prompt["prompt"]
            else:
                raise ValueError("a prompt dict needs a 'prompt' or 'prompt_token_ids' key")
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, add_special=True, parse_special=True)
            text: str | None = prompt
        else:
            ids = [int(t) for t in prompt]
            text = None
            bad = [t for t in ids if not 0 <= t < self.tokenizer.n_vocab]
            if bad:
                raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.tokenizer.n_vocab})")
        if not ids:
            raise ValueError("the prompt is empty (no tokens); give some text or token ids")
        if len(ids) + room > self.n_ctx:  # generation needs room for at least one new token
            raise ContextLengthError(f"prompt is {len(ids)} tokens but the context holds {self.n_ctx} "
                                     f"(raise n_ctx or shorten the prompt)")
        return text, ids

    # ---- generation ------------------------------------------------------------------------------------------

    def _params(self, params: SamplingParams | None) -> SamplingParams:
        params = params or SamplingParams()
        if params.seed is None and self.seed is not None:
            params = dataclasses.replace(params, seed=self.seed)
        return params

    def new_drafter(self) -> Drafter | None:
        """A fresh drafter (its own acceptance stats) for one request, or None without speculation."""
        if self.speculative == "ngram":
            return NgramDrafter(**self._draft_args)
        if self.speculative == "draft":
            return ModelDrafter(self.draft_session, p_min=self.draft_p_min, **self._draft_args)
        return None

    def _run(self, ids: list[int], params: SamplingParams, stream: int, n_keep: int = 0) -> Iterator[str]:
        return generate(self.session, self.tokenizer, ids, params, Sampler(params, stream=stream), n_keep=n_keep,
                        drafter=self.new_drafter())

    def generate(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int] | dict] | dict,
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for each prompt (a string, a list of token ids, or a list of those). Prompts run together,
        up to max_num_seqs sequences at a time (continuous batching); each result equals running it alone."""
        single = isinstance(prompts, (str, dict)) or (
            isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], (int, np.integer)))
        batch = [prompts] if single else list(prompts)
        params_list = (list(sampling_params) if isinstance(sampling_params, Sequence)
                       else [sampling_params] * len(batch))
        if len(params_list) != len(batch):
            raise ValueError(f"{len(params_list)} sampling params for {len(batch)} prompts")
        params_list = [self._params(p) for p in params_list]
        prompts = [self._prompt_ids(p) for p in batch]
        if self.speculative is not None:  # drafts are per sequence: one request at a time
            generations = [[_drain(self._run(ids, p, stream=i)) for i in range(p.n)]
                           for (_, ids), p in zip(prompts, params_list)]
        else:
            self.session.reset()  # its blocks stay cached in the pool for the requests to reuse
            self.batch_stats = BatchStats()
            generations = generate_batch(self.model, self.tokenizer, self.pool, [ids for _, ids in prompts],
                                         params_list, self.n_ctx, self.n_batch, self.max_num_seqs,
                                         self.batch_stats)
        outputs = []
        for (text, ids), gens in zip(prompts, generations):
            completions = [self._completion(i, g) for i, g in enumerate(gens)]
            outputs.append(RequestOutput(str(self._requests), text, ids, completions, metrics=completions[0].metrics))
            self._requests += 1
        return outputs

    def stream(self, prompt: str | Sequence[int] | dict, sampling_params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text deltas as they are generated (UTF-8 safe, stop strings never leak)."""
        yield from self.generate_stream(prompt, sampling_params)

    def generate_stream(self, prompt: str | Sequence[int] | dict, sampling_params: SamplingParams | None = None,
                        n_keep: int = 0) -> Generator[str, None, Generation]:
        """Like `stream`, and the generator's return value is the finished Generation (text, ids, stats):
        `result = yield from llm.generate_stream(...)`. n_keep: tokens a context shift must keep."""
        params = self._params(sampling_params)
        return self._run(self.prompt_token_ids(prompt), params, stream=0, n_keep=n_keep)

    def chat(self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | None = None,
             add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Render messages with the model's chat template (sandboxed), then generate."""
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        return self.generate([self.render_chat(c, add_generation_prompt) for c in conversations], sampling_params)

    @property
    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            self._template = ChatTemplate.from_metadata(self.gguf.metadata, self.tokenizer.token_text)
        return self._template

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        # the prompt is tokenized with BOS added per metadata, so a template's own leading BOS would double it
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt,
                                         strip_bos=self.tokenizer.add_bos)

    def _completion(self, index: int, gen: Generation) -> CompletionOutput:
        logprobs = cumulative = None
        if gen.logprobs is not None:
            logprobs = [_logprob_dict(s) for s in gen.logprobs]
            cumulative = float(sum(s.logprob for s in gen.logprobs))
        return CompletionOutput(index, gen.text, gen.token_ids, gen.finish_reason, gen.stop_reason,
                                cumulative, logprobs, gen.stats)

    # ---- saved state ------------------------------------------------------------------------------------------

    def save_state(self, path: str | os.PathLike) -> None:
        """Save the conversation's KV cache (the tokens `stream`/`generate_stream` last ran) to a file."""
        save_state(self.session.cache, self.model.fingerprint, path)

    def load_state(self, path: str | os.PathLike) -> list[int]:
        """Restore a saved KV cache; a following prompt that starts with its tokens evaluates only the rest.
        Returns the restored tokens. A file of another model, cache type or context is refused."""
        load_state(self.session.cache, self.model.fingerprint, path, self.tokenizer.n_vocab)
        return list(self.session.tokens)

    # ---- raw model access ------------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 logits (n_tokens, n_vocab) for every position, evaluated in a fresh context."""
        _, ids = self._prompt_ids(list(token_ids), room=0)
        self.session.reset()
        return self.session.eval_prompt(ids, all_logits=True, reuse_pool=False)

    def embed(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int] | dict] | dict,
              pooling: str | None = None, normalize: bool = True) -> list[EmbeddingRequestOutput]:
        """One embedding per prompt, vLLM-shaped (`outputs[i].outputs.embedding`): the final hidden states
        pooled as llama.cpp's --pooling does ("mean", "cls" or "last"; default: the model's own pooling type,
        else "mean"), then L2-normalised unless normalize=False. Runs outside the KV pool (see scoring.py)."""
        pooling = pooling or default_pooling(self.gguf.metadata, self.config.arch)
        outputs = []
        for prompt in _prompt_list(prompts):
            _, ids = self._prompt_ids(prompt, room=0)
            vector = embedding(self.model, ids, pooling, normalize, self.n_batch)
            outputs.append(EmbeddingRequestOutput(str(self._requests), ids, EmbeddingOutput(vector.tolist())))
            self._requests += 1
        return outputs


def load(path: Path) -> tuple[GGUFFile, Tokenizer, Model]:
    """Open a GGUF file and build its tokenizer and model (weights stay memory-mapped)."""
    gguf = GGUFFile(path)
    tokenizer = Tokenizer.from_metadata(gguf.metadata)
    return gguf, tokenizer, Model(gguf, ModelConfig.from_metadata(gguf.metadata, tokenizer.n_vocab))


def _prompt_list(prompts) -> list:
    """One prompt (text, token ids, a vLLM prompt dict) as a list of one; a list of prompts as is."""
    single = isinstance(prompts, (str, dict)) or (
        isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], (int, np.integer)))
    return [prompts] if single else list(prompts)


def _drain(gen: Iterator[str]) -> Generation:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _logprob_dict(s: SampledToken) -> dict[int, float]:
    out = dict(s.top_logprobs or ())
    out[s.token_id] = s.logprob
    return out
