"""The Python API, in vLLM's shape: `LLM(model=...).generate(prompts, SamplingParams(...))`."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterator, Sequence

import numpy as np

from . import runtime
from .catalog import resolve_model
from .config import ModelConfig
from .engine import Engine, EngineMetrics, Generation, GenerationStats
from .engine.proposers import DraftModelProposer, NgramProposer, PayoffMemory, Proposer, check_vocab_compatible
from .engine.runner import ModelRunner
from .gguf_file import GGUFFile
from .model import Model
from .quants import set_threads
from .sampling import SampledToken, SamplingParams
from .scoring import default_pooling, embedding
from .state import load_state, save_state
from .tokenizer import Tokenizer
from .weights import check_finite_scales

if TYPE_CHECKING:  # jinja2 (~50 ms to import) only for the commands that render a chat
    from .chat_template import ChatTemplate

CONVERSATION = "conversation"  # the engine slot `stream`/`generate_stream`, saved state and the chat REPL use

# vLLM constructor arguments that mean nothing on one CPU: accepted at their vLLM default, refused otherwise.
_VLLM_DEFAULTS: dict[str, Any] = {
    "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "quantization": None, "dtype": "auto",
    "gpu_memory_utilization": 0.9, "trust_remote_code": False, "enforce_eager": False, "tokenizer": None,
    "tokenizer_mode": "auto", "swap_space": 4, "cpu_offload_gb": 0, "revision": None, "download_dir": None,
}


@dataclass
class BatchStats:
    """What one `generate` call cost, counted by the engine."""
    steps: int = 0  # scheduler iterations
    decode_steps: int = 0  # batched decode passes
    prompt_tokens: int = 0  # prompt tokens of all requests
    prompt_tokens_evaluated: int = 0  # of those, run through the model (the rest came from cached blocks)
    decode_tokens: int = 0  # tokens run through decode steps (drafts included)
    max_running: int = 0  # most sequences decoding at once
    seconds: float = 0.0

    @property
    def tokens_evaluated(self) -> int:
        return self.prompt_tokens_evaluated + self.decode_tokens


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
    # set by LLM.chat: `text` split into the answer, the model's thinking and its tool calls (OpenAI's shapes)
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict] | None = None


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
                 draft_max: int = 16, draft_min: int = 1, draft_p_min: float = 0.75, adaptive_drafting: bool = True,
                 max_num_seqs: int = 8,
                 kv_cache_dtype: str = "f32", kv_cache_tokens: int | None = None,
                 enable_prefix_caching: bool | None = True, swa_full: bool = False, **kwargs):
        """draft_model: a smaller model with the same vocabulary drafts tokens for speculative decoding;
        speculative="ngram" drafts by prompt lookup instead (no second model). Output is unchanged either way.
        adaptive_drafting: pause drafting while it is measured slower per token than plain steps (see
        engine/proposers.py: DraftPayoff); False drafts on every step.

        max_num_seqs: sequences `generate` decodes together (continuous batching). kv_cache_dtype: "f32"
        (closest to llama.cpp's logits here), "f16" (half the memory), "q8_0" (a quarter), or another llama.cpp
        cache type.
        kv_cache_tokens: positions the shared KV pool holds for all sequences (default 2 x n_ctx).
        enable_prefix_caching: reuse cached blocks of a prompt prefix computed by an earlier request.
        swa_full: sliding-window layers (gemma2/3) keep K/V for every position, as llama.cpp's --swa-full; by
        default they hold only their window (+ n_batch) for each of max_num_seqs sequences, in a pool of their
        own, and a prefix is reused, or a chat turn continued, only where those windows are still cached."""
        self._check_vllm_kwargs(kwargs)
        runtime.setup()
        if max_model_len is not None:
            n_ctx = max_model_len
        path = resolve_model(model)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}" + (
                "" if model is None or os.sep in str(model) else
                f" (fetch catalog models with `gguf-runtime pull NAME`)"))
        if n_threads is not None:
            set_threads(n_threads)  # validates it; the runner applies it to every forward pass it runs
        self.n_threads = n_threads
        t0 = time.perf_counter()
        self.path: Path = path
        self.gguf, self.tokenizer, self.model = load(path)
        self.config = self.model.config
        self.n_ctx = int(n_ctx)
        if self.n_ctx < 8:
            raise ValueError(f"n_ctx must be at least 8, got {self.n_ctx}")
        self.n_batch = n_batch
        if kv_cache_dtype == "auto":
            kv_cache_dtype = "f32"
        pool_tokens = 2 * self.n_ctx if kv_cache_tokens is None else int(kv_cache_tokens)
        if pool_tokens < self.n_ctx:
            raise ValueError(f"kv_cache_tokens ({pool_tokens}) must hold at least one context (n_ctx {self.n_ctx})")
        pool = self.model.new_pool(pool_tokens, kv_cache_dtype, max_seqs=None if swa_full else max_num_seqs,
                                   max_rows=None if swa_full else n_batch)
        pool.prefix_caching = enable_prefix_caching is not False
        self.kv_bytes_per_token = pool.bytes_per_token
        self.batch_stats: BatchStats | None = None  # of the last generate call
        if speculative not in (None, "draft", "ngram"):
            raise ValueError(f"speculative must be None, 'draft' or 'ngram', got {speculative!r}")
        if speculative == "draft" and draft_model is None:
            raise ValueError("speculative='draft' needs draft_model")
        self.speculative = "draft" if draft_model is not None and speculative is None else speculative
        new_proposer = None
        memory = PayoffMemory()  # what drafting's pause rule learnt, for this LLM's later sequences
        if self.speculative == "ngram":
            new_proposer = lambda: NgramProposer(draft_max=draft_max, draft_min=draft_min,  # noqa: E731
                                                 adaptive=adaptive_drafting, memory=memory)
            Proposer(draft_max, draft_min)  # validates the draft lengths now
        elif self.speculative == "draft":
            draft_path = resolve_model(draft_model)
            if not draft_path.is_file():
                raise FileNotFoundError(f"draft model file not found: {draft_path}")
            _, draft_tok, draft = load(draft_path)
            check_vocab_compatible(self.tokenizer, draft_tok)
            Proposer(draft_max, draft_min, draft_p_min)
            draft_runner = ModelRunner(draft, n_batch, n_threads)
            # a draft sequence mirrors a target sequence: a pool as large as the target's holds them all
            draft_pool = draft.new_pool(pool_tokens, "f32")
            new_proposer = lambda: DraftModelProposer(draft_runner, draft_pool, self.n_ctx, draft_max,  # noqa: E731
                                                      draft_min, draft_p_min, adaptive_drafting, memory)
        self.engine = Engine(ModelRunner(self.model, n_batch, n_threads), pool, self.tokenizer, self.n_ctx,
                             max_num_seqs, new_proposer)
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

    @property
    def max_num_seqs(self) -> int:
        """Sequences the engine decodes together (continuous batching); settable between calls."""
        return self.engine.scheduler.max_num_seqs

    @max_num_seqs.setter
    def max_num_seqs(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {n}")
        self.engine.scheduler.max_num_seqs = int(n)

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
            return prompt, self.engine.check_prompt(self.tokenize(prompt, add_special=True, parse_special=True), room)
        return None, self.engine.check_prompt(prompt, room)

    # ---- generation ------------------------------------------------------------------------------------------

    def _params(self, params: SamplingParams | None) -> SamplingParams:
        params = params or SamplingParams()
        if params.seed is None and self.seed is not None:
            params = dataclasses.replace(params, seed=self.seed)
        return params

    def _request_id(self) -> str:
        self._requests += 1
        return str(self._requests - 1)

    def _run_to_completion(self) -> dict[tuple[str, int], Generation]:
        """Step the engine until nothing is left; the finished samples by (request id, index)."""
        before, t0 = self.engine.metrics(), time.perf_counter()
        stats = BatchStats()
        done: dict[tuple[str, int], Generation] = {}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished:
                    done[out.request_id, out.index] = out.generation
            stats.max_running = max(stats.max_running, self.engine.metrics().running)
        after = self.engine.metrics()
        stats.steps = after.steps_total - before.steps_total
        stats.decode_steps = after.decode_steps_total - before.decode_steps_total
        stats.decode_tokens = after.decode_tokens_total - before.decode_tokens_total
        stats.prompt_tokens = after.prompt_tokens_total - before.prompt_tokens_total
        stats.prompt_tokens_evaluated = stats.prompt_tokens - (after.prompt_tokens_cached_total -
                                                               before.prompt_tokens_cached_total)
        stats.seconds = time.perf_counter() - t0
        self.batch_stats = stats
        return done

    def generate(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int] | dict] | dict,
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for each prompt (a string, a list of token ids, or a list of those). Prompts run together,
        up to max_num_seqs sequences at a time (continuous batching, speculative decoding included); each
        result equals running it alone."""
        single = isinstance(prompts, (str, dict)) or (
            isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], (int, np.integer)))
        batch = [prompts] if single else list(prompts)
        params_list = (list(sampling_params) if isinstance(sampling_params, Sequence)
                       else [sampling_params] * len(batch))
        if len(params_list) != len(batch):
            raise ValueError(f"{len(params_list)} sampling params for {len(batch)} prompts")
        params_list = [self._params(p) for p in params_list]
        prompts = [self._prompt_ids(p) for p in batch]
        if self.engine.has_unfinished():
            raise RuntimeError("the engine is running other requests (LLM.generate drives it alone)")
        ids = []
        try:
            for (_, prompt_ids), params in zip(prompts, params_list):
                ids.append(self._request_id())
                self.engine.add_request(ids[-1], prompt_ids, params)
            done = self._run_to_completion()
        except BaseException:  # a refused request, Ctrl-C: leave nothing queued or holding blocks
            for request_id in ids:
                self.engine.abort_request(request_id)
            while self.engine.has_unfinished():
                self.engine.step()
            raise
        outputs = []
        for request_id, (text, prompt_ids), params in zip(ids, prompts, params_list):
            completions = [self._completion(i, done[request_id, i]) for i in range(params.n)]
            outputs.append(RequestOutput(request_id, text, prompt_ids, completions, metrics=completions[0].metrics))
        return outputs

    def stream(self, prompt: str | Sequence[int] | dict, sampling_params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text deltas as they are generated (UTF-8 safe, stop strings never leak)."""
        yield from self.generate_stream(prompt, sampling_params)

    def generate_stream(self, prompt: str | Sequence[int] | dict, sampling_params: SamplingParams | None = None,
                        n_keep: int = 0) -> Generator[str, None, Generation]:
        """Like `stream`, and the generator's return value is the finished Generation (text, ids, stats):
        `result = yield from llm.generate_stream(...)`. n_keep: tokens a context shift must keep.

        It continues the conversation cache (what the previous stream left, reused as far as the prompt
        agrees with it: the chat REPL's next turn evaluates only the new tokens). Closing the generator early
        stops the generation at once; the cache keeps what was computed."""
        params = self._params(sampling_params)
        ids = self.prompt_token_ids(prompt)  # refused here, at the call
        return self._stream(ids, params, n_keep)

    def _stream(self, ids: list[int], params: SamplingParams, n_keep: int) -> Generator[str, None, Generation]:
        # queued at the first next(), so a generator that is never started leaves the engine as it was
        if self.engine.has_unfinished():
            raise RuntimeError("the engine is running other requests (LLM.generate_stream drives it alone)")
        request_id = self._request_id()
        self.engine.add_request(request_id, ids, params, n_keep=n_keep, slot=CONVERSATION)
        finished = False
        try:
            while True:
                for out in self.engine.step():
                    if out.new_text:
                        yield out.new_text
                    if out.finished:
                        finished = True
                        return out.generation
        finally:
            if not finished:
                self.engine.abort_request(request_id)
                self.engine.step()  # collect the abort report

    def chat(self, messages: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, use_tqdm: bool = False,
             add_generation_prompt: bool = True, tools: list[dict] | None = None, tool_choice: str | dict | None = None,
             chat_template_kwargs: dict[str, Any] | None = None,
             parallel_tool_calls: bool = True) -> list[RequestOutput]:
        """Render messages with the model's chat template (sandboxed), then generate; each output's `content`,
        `reasoning_content` and `tool_calls` hold the reply parsed the OpenAI way.

        tools (OpenAI function tools) reach the template; tool_choice "auto" (the default with tools), "none"
        (tools not offered), "required" or {"type": "function", "function": {"name": ...}} (the output is then
        constrained to a valid call; several unless parallel_tool_calls=False). A reply that calls tools finishes
        with "tool_calls". chat_template_kwargs
        go to the template as variables (e.g. {"enable_thinking": False} for Qwen3).
        """
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        offered = self.offered_tools(tools, tool_choice)
        prompts = [self.render_chat(c, add_generation_prompt, tools=offered, **(chat_template_kwargs or {}))
                   for c in conversations]
        params = ([self.chat_params(p, tools, tool_choice, parallel_tool_calls) for p in sampling_params]
                  if isinstance(sampling_params, Sequence)
                  else self.chat_params(sampling_params, tools, tool_choice, parallel_tool_calls))
        outputs = self.generate(prompts, params)
        for prompt, request in zip(prompts, outputs):
            for completion in request.outputs:
                parser = self.chat_output_parser(prompt, tools=offered is not None)
                parser.feed(completion.text)
                parser.finish()
                message = parser.message()
                completion.content, completion.reasoning_content = message["content"], message.get("reasoning_content")
                completion.tool_calls = message.get("tool_calls")
                if completion.tool_calls and completion.finish_reason == "stop":
                    completion.finish_reason = "tool_calls"
        return outputs

    @staticmethod
    def offered_tools(tools: list[dict] | None, tool_choice: str | dict | None) -> list[dict] | None:
        """The checked tools the template gets (None without tools, or with tool_choice "none")."""
        from .structured.tool_calls import check_tool_choice, check_tools

        checked = check_tools(tools)
        return checked if check_tool_choice(tool_choice, checked) not in (None, "none") else None

    def chat_params(self, params: SamplingParams | None, tools: list[dict] | None,
                    tool_choice: str | dict | None, parallel_tool_calls: bool = True) -> SamplingParams:
        """`params` plus, for tool_choice "required" or a named function, the grammar that forces a call in
        this model's tool-call format (StructuredOutputError for bad tools, or with structured_outputs too)."""
        from .errors import StructuredOutputError
        from .structured.requests import special_token_ids, tool_call_constraint

        params = params or SamplingParams()
        forced = tool_call_constraint(tools, tool_choice, self.tool_call_format, special_token_ids(self.tokenizer),
                                      parallel_tool_calls)
        if forced is None:
            return params
        if params.structured_outputs is not None:
            raise StructuredOutputError("tool_choice forces a tool call: it cannot be combined with structured "
                                        "outputs")
        return dataclasses.replace(params, structured_outputs=forced)

    @property
    def tool_call_format(self) -> str:
        """How this model writes tool calls ("hermes", "llama3_json" or "mistral"), read from its template."""
        from .structured.tool_calls import tool_call_format

        return tool_call_format(self.chat_template.source)

    def chat_output_parser(self, prompt: str, tools: bool = False):
        """A fresh incremental parser (structured.chat_output.ChatOutputParser) for one reply to the rendered
        `prompt`: think blocks to reasoning_content (reasoning models only), tool calls when `tools` were
        offered."""
        from .structured.chat_output import chat_output_parser

        return chat_output_parser(self.chat_template.source, prompt, tools=tools,
                                  vocabulary=self.tokenizer.vocab.token_to_id)

    @property
    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            from .chat_template import ChatTemplate

            self._template = ChatTemplate.from_metadata(self.gguf.metadata, self.tokenizer.token_text)
        return self._template

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None,
                    **template_kwargs: Any) -> str:
        """The prompt text for `messages` (``tool`` messages and assistant ``tool_calls`` included); `tools`
        and `template_kwargs` (chat_template_kwargs such as enable_thinking) reach the template."""
        if tools:
            template_kwargs["tools"] = tools
        # the prompt is tokenized with BOS added per metadata, so a template's own leading BOS would double it
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt,
                                         strip_bos=self.tokenizer.add_bos, **template_kwargs)

    def _completion(self, index: int, gen: Generation) -> CompletionOutput:
        logprobs = cumulative = None
        if gen.logprobs is not None:
            logprobs = [_logprob_dict(s) for s in gen.logprobs]
            cumulative = float(sum(s.logprob for s in gen.logprobs))
        return CompletionOutput(index, gen.text, gen.token_ids, gen.finish_reason, gen.stop_reason,
                                cumulative, logprobs, gen.stats)

    # ---- the conversation cache and the engine's state --------------------------------------------------------

    @property
    def conversation_tokens(self) -> list[int]:
        """The tokens the conversation cache holds (what `stream`/`generate_stream` last ran)."""
        return list(self.engine.slot(CONVERSATION).tokens)

    def reset(self) -> None:
        """Stop every request and empty the conversation cache (its blocks stay cached for prefix reuse)."""
        sch = self.engine.scheduler
        for request_id in {r.request_id for r in list(sch.waiting) + sch.prefilling} | \
                {s.request.request_id for s in sch.running}:
            self.engine.abort_request(request_id)
        while self.engine.has_unfinished():
            self.engine.step()
        self.engine.release_slot(CONVERSATION)

    @property
    def stats(self) -> EngineMetrics:
        """The engine's counters and gauges: requests, tokens, KV blocks."""
        return self.engine.metrics()

    def save_state(self, path: str | os.PathLike) -> None:
        """Save the conversation's KV cache (the tokens `stream`/`generate_stream` last ran) to a file."""
        save_state(self.engine.slot(CONVERSATION), self.model.fingerprint, path)

    def load_state(self, path: str | os.PathLike) -> list[int]:
        """Restore a saved KV cache; a following prompt that starts with its tokens evaluates only the rest.
        Returns the restored tokens. A file of another model, cache type or context is refused."""
        cache = self.engine.slot(CONVERSATION)
        load_state(cache, self.model.fingerprint, path, self.tokenizer.n_vocab)
        return list(cache.tokens)

    # ---- raw model access ------------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int], then: Sequence[int] = ()) -> np.ndarray:
        """float32 logits (n_tokens, n_vocab) for every position, evaluated in a fresh context: token_ids as
        one prompt, then the `then` tokens one at a time (teacher forcing, as llama.cpp evaluates a greedy
        continuation). Rows cover token_ids + then."""
        _, ids = self._prompt_ids(list(token_ids) + list(then), room=0)
        kv = self.engine.kv.new_sequence()
        runner = self.engine.runner
        try:
            rows = [runner.evaluate(kv, ids[:len(ids) - len(then)], all_logits=True)]
            rows += [runner.forward([kv], [[int(t)]]) for t in then]
        finally:
            kv.release()
        return np.concatenate(rows)

    def embed(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int] | dict] | dict,
              pooling: str | None = None, normalize: bool = True) -> list[EmbeddingRequestOutput]:
        """One embedding per prompt, vLLM-shaped (`outputs[i].outputs.embedding`): the final hidden states
        pooled as llama.cpp's --pooling does ("mean", "cls" or "last"; default: the model's own pooling type,
        else "mean"), then L2-normalised unless normalize=False. Runs outside the KV pool (see scoring.py)."""
        pooling = pooling or default_pooling(self.gguf.metadata, self.config.arch)
        outputs = []
        for prompt in _prompt_list(prompts):
            _, ids = self._prompt_ids(prompt, room=0)
            vector = embedding(self.engine.runner, ids, pooling, normalize)
            outputs.append(EmbeddingRequestOutput(str(self._requests), ids, EmbeddingOutput(vector.tolist())))
            self._requests += 1
        return outputs


def load(path: Path, check_weights: bool | None = None) -> tuple[GGUFFile, Tokenizer, Model]:
    """Open a GGUF file and build its tokenizer and model (weights stay memory-mapped), validating metadata and
    every tensor shape first. `check_weights` also scans all block scales for NaN/inf (reads the whole file;
    default: the GGUF_RUNTIME_CHECK_WEIGHTS environment variable, else off)."""
    gguf = GGUFFile(path)
    tokenizer = Tokenizer.from_metadata(gguf.metadata)
    model = Model(gguf, ModelConfig.from_metadata(gguf.metadata, tokenizer.n_vocab))
    if check_weights if check_weights is not None else os.environ.get("GGUF_RUNTIME_CHECK_WEIGHTS") == "1":
        check_finite_scales(gguf)
    return gguf, tokenizer, model


def _prompt_list(prompts) -> list:
    """One prompt (text, token ids, a vLLM prompt dict) as a list of one; a list of prompts as is."""
    single = isinstance(prompts, (str, dict)) or (
        isinstance(prompts, Sequence) and len(prompts) > 0 and isinstance(prompts[0], (int, np.integer)))
    return [prompts] if single else list(prompts)


def _logprob_dict(s: SampledToken) -> dict[int, float]:
    out = dict(s.top_logprobs or ())
    out[s.token_id] = s.logprob
    return out
