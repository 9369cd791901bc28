"""Render a GGUF model's chat template (``tokenizer.chat_template``, Jinja) in a sandbox.

Templates come from model files, i.e. from strangers, so they run in jinja2's `ImmutableSandboxedEnvironment`
with no loader: no attribute starting with ``_``, no mutation of lists/dicts passed in, no file access (the
llama-cpp-python CVE-2024-34359 class of bug was rendering GGUF templates with a plain `Environment`). Unsafe
attribute access fails at once instead of rendering as an empty string, and ``*`` / ``**`` refuse to build huge
strings or numbers. The environment otherwise matches transformers' ``apply_chat_template``: trim_blocks,
lstrip_blocks, the loopcontrols extension, ``raise_exception``, ``strftime_now``, a ``tojson`` that does not
escape HTML, ``{% generation %}`` accepted, and ``bos_token`` / ``eos_token`` / ``tools=None`` /
``documents=None`` in the context.

A model without a template gets llama.cpp's ChatML fallback (what llama-server uses in that case).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension

from .sandbox import MAX_POWER_EXPONENT, MAX_SEQUENCE_REPEAT, BudgetedSandbox, budgeted_filter  # noqa: F401

from .errors import ChatTemplateError  # noqa: F401  (re-exported: its old home)

TEMPLATE_KEY = "tokenizer.chat_template"

# llama.cpp's fallback (common/chat.cpp CHATML_TEMPLATE_SRC) for models whose GGUF carries no template.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)

MAX_TEMPLATE_CHARS = 256 * 1024  # the largest released templates are ~20k; compiling 3 MB takes > 10 s




class _RaisedByTemplate(TemplateError):
    """A template's own ``raise_exception(message)``."""


class _GenerationTag(Extension):
    """transformers' ``{% generation %}...{% endgeneration %}`` marks assistant text for training masks;
    rendering just keeps the body."""

    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str):
    raise _RaisedByTemplate(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, &, ' for HTML; chat templates want plain JSON (as transformers does).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> BudgetedSandbox:
    env = BudgetedSandbox(trim_blocks=True, lstrip_blocks=True,
                          extensions=["jinja2.ext.loopcontrols", _GenerationTag])
    env.filters["tojson"] = budgeted_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _check_messages(messages: Any) -> list[dict]:
    """Plain dict copies of the messages, after checking each has a role and usable content."""
    if not isinstance(messages, (list, tuple)):
        raise ChatTemplateError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, "
                                f"got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"messages[{i}] must be a dict with 'role' and 'content', "
                                    f"got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"messages[{i}]['role'] must be a non-empty string, got {role!r}")
        if "content" not in message:
            raise ChatTemplateError(f"messages[{i}] ({role}) has no 'content'")
        content = message["content"]
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                    raise ChatTemplateError(f"messages[{i}]['content'][{j}] must be a dict with a 'type' "
                                            f"(e.g. {{'type': 'text', 'text': ...}}), got {part!r}")
        elif not isinstance(content, str) and not (content is None and message.get("tool_calls")):
            raise ChatTemplateError(f"messages[{i}]['content'] must be a string or a list of content parts "
                                    f"(None only beside tool_calls), got {type(content).__name__}")
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = _tool_calls_for_template(i, message["tool_calls"])
        checked.append(message)
    return checked


def _tool_calls_for_template(i: int, calls: Any) -> list:
    """OpenAI sends a call's arguments as JSON text; templates (as transformers') expect the object. Calls are
    {"function": {"name", "arguments"}} or the flat {"name", "arguments"}; other shapes pass as they are."""
    if not isinstance(calls, (list, tuple)):
        raise ChatTemplateError(f"messages[{i}]['tool_calls'] must be a list, got {type(calls).__name__}")

    def decoded(function: Any) -> Any:
        arguments = function.get("arguments") if isinstance(function, Mapping) else None
        if not isinstance(arguments, str):
            return function
        try:
            return {**function, "arguments": json.loads(arguments) if arguments.strip() else {}}
        except json.JSONDecodeError:
            raise ChatTemplateError(f"messages[{i}]: tool call {function.get('name')!r} has arguments that are "
                                    f"not JSON: {arguments[:80]!r}") from None

    return [{**call, "function": decoded(call["function"])} if isinstance(call, Mapping) and "function" in call
            else decoded(call) for call in calls]


class ChatTemplate:
    """A compiled, sandboxed chat template. ``source=None`` (or empty) selects llama.cpp's ChatML fallback."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "", name: str | None = None):
        self.is_fallback = not source
        self.source: str = CHATML_TEMPLATE if self.is_fallback else source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        self.refusal: str | None = None  # why the model's own template was replaced by the fallback
        if len(self.source) > MAX_TEMPLATE_CHARS:
            raise ChatTemplateError(f"chat template of {len(self.source)} characters is longer than the "
                                    f"{MAX_TEMPLATE_CHARS} allowed")
        try:
            self._template = _ENV.from_string(self.source)
        except TemplateSyntaxError as err:
            raise ChatTemplateError(f"chat template syntax error at line {err.lineno}: {_one_line(err.message)}") \
                from None
        except (RecursionError, MemoryError):
            raise ChatTemplateError("chat template nests too deeply to compile") from None
        except Exception as err:  # noqa: BLE001 - any compile failure is the template's fault
            raise ChatTemplateError(f"chat template does not compile: {_one_line(err)}") from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], token_text: Callable[[int], str],
                      name: str | None = None) -> ChatTemplate:
        """The template from GGUF metadata: ``tokenizer.chat_template``, or the named variant
        ``tokenizer.chat_template.<name>`` (e.g. ``tool_use``). `token_text` maps a token id to its text, for
        ``bos_token`` / ``eos_token`` (from ``tokenizer.ggml.bos_token_id`` / ``eos_token_id``)."""
        if name is None:
            source = metadata.get(TEMPLATE_KEY)
        else:
            key = f"{TEMPLATE_KEY}.{name}"
            if key not in metadata:
                raise ChatTemplateError(f"no chat template named {name!r}; available: "
                                        f"{', '.join(cls.variant_names(metadata)) or 'none'}")
            source = metadata[key]
        if source is not None and not isinstance(source, str):
            raise ChatTemplateError(f"{TEMPLATE_KEY} must be a string, got {type(source).__name__}")

        def special(key: str) -> str:
            token_id = metadata.get(key)
            if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
                return ""
            try:
                return token_text(token_id)
            except IndexError:  # outside the vocabulary: the tokenizer ignores it too (with a warning)
                return ""

        bos, eos = special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id")
        try:
            return cls(source, bos, eos, name)
        except ChatTemplateError as err:
            if name is not None:  # a variant asked for by name: say no
                raise
            # the model's default template is refused: chat still works, on llama.cpp's ChatML fallback
            fallback = cls(None, bos, eos)
            fallback.refusal = f"the model's chat template is refused ({err}); using the ChatML fallback"
            warnings.warn(fallback.refusal, stacklevel=2)
            return fallback

    @staticmethod
    def variant_names(metadata: Mapping[str, Any]) -> list[str]:
        """Names of the named templates ``tokenizer.chat_template.<name>`` in the metadata."""
        prefix = TEMPLATE_KEY + "."
        return sorted(key[len(prefix):] for key in metadata if key.startswith(prefix))

    def render(self, messages: list[dict], add_generation_prompt: bool = True, *, strip_bos: bool = False,
               strip_eos: bool = False, **extra: Any) -> str:
        """The prompt text for `messages`. `extra` reaches the template as variables (``tools``,
        ``enable_thinking``, ...; it may override ``bos_token`` / ``eos_token``).

        When the tokenizer adds BOS (EOS) itself (``tokenizer.ggml.add_bos_token``), pass ``strip_bos``
        (``strip_eos``) to drop a leading ``bos_token`` (trailing ``eos_token``) from the text, as llama.cpp does,
        so the prompt does not get two (Gemma 3's template writes ``<bos>``).
        """
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, "tools": None, "documents": None,
                   **extra, "messages": _check_messages(messages), "add_generation_prompt": add_generation_prompt}
        allowance = sum(len(str(m.get("content") or "")) for m in context["messages"])
        try:
            text = _ENV.render_budgeted(self._template, context, allowance)
        except _RaisedByTemplate as err:
            raise ChatTemplateError(f"chat template rejected the messages: {_one_line(err.message)}") from None
        except SecurityError as err:
            raise ChatTemplateError(f"chat template blocked by the sandbox: {_one_line(err)}") from None
        except RecursionError:
            raise ChatTemplateError("chat template recursed too deeply") from None
        except ZeroDivisionError:
            raise ChatTemplateError("chat template divides by zero") from None
        except MemoryError:
            raise ChatTemplateError("chat template ran out of memory") from None
        except Exception as err:  # noqa: BLE001 - undefined names, type errors, loader use: all template faults
            raise ChatTemplateError(f"chat template failed ({type(err).__name__}): {_one_line(err)}") from None
        bos, eos = context["bos_token"], context["eos_token"]
        if strip_bos and bos and text.startswith(bos):
            text = text[len(bos):]
        if strip_eos and eos and text.endswith(eos):
            text = text[: -len(eos)]
        return text

    def __repr__(self) -> str:
        kind = "chatml fallback" if self.is_fallback else f"{len(self.source)} chars"
        return f"ChatTemplate({self.name or 'default'}, {kind})"
