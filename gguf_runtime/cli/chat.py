"""`gguf-runtime chat`: an interactive conversation with the model's chat template.

Each turn renders the whole conversation; the KV cache keeps the previous turns, so only the new tokens are
evaluated. When the context fills, the oldest turns are dropped (mid-reply, the context shifts, keeping the
system prompt). Input has readline editing and history; `\"\"\"` starts and ends a multi-line message.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._app import UserError, main
from ._conversation import Conversation, ConversationFileError
from ._load import THINKING, first_wait_message, load_llm
from ._options import (SETTABLE, build_params, model_options, pop_sampling_params, pop_speculative,
                       pop_structured_outputs, sampling_options, speculative_options, structured_options)
from ._stream import stats_line, stream_to

if TYPE_CHECKING:
    from ..api import LLM
    from ..sampling import SamplingParams

MAX_TOKENS = 512
PROMPT, CONTINUATION = ">>> ", "... "
MULTILINE = '"""'
EXIT_HINT = "(use /bye or Ctrl-D to exit)"


@main.command()
@model_options
@sampling_options(max_tokens=MAX_TOKENS)
@speculative_options
@structured_options
@click.option("--system", default=None, help="System message that starts the conversation.")
@click.option("--tools", "tools_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Offer these tools (a JSON list in OpenAI's format) to the model; its calls are "
                                   "shown, and /tool TEXT answers one.")
@click.option("--think/--no-think", default=None,
              help="Reasoning models: think before answering, or not (default: the template's choice).")
@click.option("--stats", "show_stats", is_flag=True, help="Print prompt and decode speed after each reply.")
def chat(model: str, n_ctx: int, threads: int | None, kv_type: str, system: str | None, tools_file: Path | None,
         think: bool | None, show_stats: bool, **sampling) -> None:
    """Chat with a model in the terminal (type /help inside for commands).

    Sampling defaults are llama.cpp's; a reply is at most 512 tokens unless -n says otherwise.
    """
    params = build_params(pop_sampling_params(sampling), structured_outputs=pop_structured_outputs(sampling))
    llm = load_llm(model, n_ctx, threads, kv_type, **pop_speculative(sampling))
    _ = llm.chat_template  # compile it now: a broken template is reported before the first prompt
    conversation = Conversation(system, tools=read_tools(tools_file) if tools_file else None,
                                template_kwargs={} if think is None else {"enable_thinking": think})
    Repl(llm, model, conversation, params, show_stats).run()


def read_tools(path: Path) -> list[dict]:
    """The --tools file: OpenAI tools, checked (a one-line UserError when it is not)."""
    import json

    from ..errors import StructuredOutputError
    from ..structured.tool_calls import check_tools

    try:
        return check_tools(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, StructuredOutputError) as e:
        raise UserError(f"--tools {path}: {e}") from None


@dataclass(frozen=True)
class Command:
    run: Callable[[Repl, str], bool]  # returns False to leave the REPL
    usage: str
    help: str


class Repl:
    """Reads messages and slash commands, streams replies, keeps the conversation."""

    def __init__(self, llm: LLM, model: str, conversation: Conversation, params: SamplingParams,
                 show_stats: bool):
        self.llm = llm
        self.model = model
        self.conversation = conversation
        self.params = params
        self.show_stats = show_stats
        self.interactive = sys.stdin.isatty()
        self.waiting = first_wait_message()  # for the first reply: it may compile the kernels
        self.console = Console(highlight=False, soft_wrap=True)
        self.notes = Console(stderr=True, highlight=False, soft_wrap=True)  # keeps stdout to replies and output

    def run(self) -> None:
        if self.interactive:
            _enable_line_editing(sorted(COMMANDS))
            self.note(f"chatting with {self.llm.path.name}; /help for commands, /bye or Ctrl-D to exit")
        while True:
            try:
                line = self.read_message()
            except EOFError:
                if self.interactive:
                    self.console.print()
                return
            except KeyboardInterrupt:
                self.console.print()
                self.note(EXIT_HINT)
                continue
            if not line.strip():
                continue
            try:
                if line.startswith("/") and "\n" not in line:
                    if not self.command(line):
                        return
                else:
                    self.reply({"role": "user", "content": line})
            except KeyboardInterrupt:  # outside a reply's streaming (which stops gently): drop what was doing
                self.console.print()
                self.note("(interrupted)")

    def read_message(self) -> str:
        """One message: a line, or the lines between \"\"\" and \"\"\" (EOFError at end of input)."""
        line = self.input(PROMPT)
        if not line.startswith(MULTILINE):
            return line
        lines = [line[len(MULTILINE):]]
        while not lines[-1].endswith(MULTILINE):
            lines.append(self.input(CONTINUATION))
        lines[-1] = lines[-1][:-len(MULTILINE)]
        return "\n".join(lines).strip("\n")

    def input(self, prompt: str) -> str:
        return input(prompt if self.interactive else "")

    def note(self, text: str) -> None:
        """A line from the REPL itself (not the model), dimmed on a terminal."""
        self.notes.print(Text(text, style="dim"))

    # -- a turn ----------------------------------------------------------------------------------------------

    def reply(self, message: dict) -> None:
        """Send a user (or tool) message and stream the reply: thinking dimmed, tool calls as one-liners."""
        from ..chat_template import ChatTemplateError
        from ..errors import ContextLengthError
        from ._reply import ReplyPrinter

        turns = self.conversation.turns
        turns.append(message)
        try:
            prompt = self.conversation.prompt(self.llm, reserve=min(self.params.max_tokens, self.llm.n_ctx // 2))
        except (ContextLengthError, ChatTemplateError, KeyboardInterrupt) as e:
            turns.pop()  # the message was not sent
            self.note("(cancelled)" if isinstance(e, KeyboardInterrupt) else f"error: {e}")
            return
        if prompt.dropped:
            self.note(f"(context full: forgot the {prompt.dropped} oldest messages)")
        printer = ReplyPrinter(self.console, self.llm.chat_output_parser(prompt.text,
                                                                         tools=bool(self.conversation.tools)))
        gen = self.llm.generate_stream(prompt.token_ids, self.params, n_keep=prompt.n_keep)
        streamed = stream_to(printer, gen, self.waiting)
        printer.finish()
        self.waiting = THINKING
        if not streamed.clean:  # stopped inside the model: its cache may not match its tokens
            self.llm.reset()
        if not printer.ends_with_newline:
            self.console.print()
        sys.stdout.flush()
        reply = printer.parser.message()  # partial if interrupted: still said
        reply.pop("reasoning_content", None)  # templates drop past thinking anyway
        turns.append(reply)
        if streamed.interrupted:
            self.note("(reply stopped)")
        elif self.show_stats:
            self.note(stats_line(streamed.generation))

    def tool(self, argument: str) -> bool:
        """/tool TEXT: the result of the model's last tool call, sent back for it to answer from."""
        turns = self.conversation.turns
        calls = turns[-1].get("tool_calls") if turns and turns[-1].get("role") == "assistant" else None
        if not calls:
            self.note("the model's last reply called no tool; /tool TEXT answers its call")
            return True
        if not argument:
            self.note("usage: /tool TEXT (the tool's result, e.g. JSON)")
            return True
        self.reply({"role": "tool", "tool_call_id": calls[0]["id"], "content": argument})
        return True

    # -- slash commands --------------------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        name, _, argument = line.strip().partition(" ")
        command = COMMANDS.get(name)
        if command is None:
            self.note(f"unknown command {name}; /help lists them")
            return True
        return command.run(self, argument.strip())

    def help(self, _: str) -> bool:
        table = Table.grid(padding=(0, 2))
        for name, command in COMMANDS.items():
            table.add_row(Text(command.usage or name), Text(command.help))
        table.add_row(Text(MULTILINE), Text(f"start a multi-line message; end it with {MULTILINE}"))
        table.add_row(Text("Ctrl-C"), Text("stop the reply (it stays in the conversation)"))
        self.console.print(table)
        return True

    def set(self, argument: str) -> bool:
        name, _, value = argument.partition(" ")
        value = value.strip()
        if name == "system":
            self.conversation.system = value or None
            self.note(f"system message {'set' if value else 'removed'}")
            return True
        if name == "think":
            if value.lower() not in ("on", "off"):
                self.note("usage: /set think on|off")
                return True
            self.conversation.template_kwargs["enable_thinking"] = value.lower() == "on"
            self.note(f"think {value.lower()}")
            return True
        flag = SETTABLE.get(name.replace("-", "_"))
        if flag is None or not value:
            self.note(f"usage: /set <name> <value>, name one of: system, think, {', '.join(SETTABLE)}")
            return True
        try:
            parsed = None if name == "seed" and value.lower() in ("none", "random") else flag.parse(value)
            self.params = build_params(self.params, **{flag.field: parsed})
        except (click.BadParameter, UserError) as e:
            self.note(f"error: {name}: {e.format_message()}")
            return True
        self.note(f"{name} = {parsed}")
        return True

    def show(self, _: str) -> bool:
        from .info import summarize

        s = summarize(self.llm.gguf)
        model = Table.grid(padding=(0, 2))
        for label, value in (
                ("model", f"{self.model} ({s['path']})"), ("architecture", s["architecture"]),
                ("name", s["name"]), ("parameters", f"{s['parameters'] / 1e6:,.1f} M"),
                ("file type", s["file_type"]),
                ("context", f"{self.llm.n_ctx} tokens, {len(self.llm.conversation_tokens)} in use "
                            f"(trained for {s['context_length']})"),
                ("messages", str(len(self.conversation.messages()))), ("stats", "on" if self.show_stats else "off")):
            model.add_row(Text(label, style="bold"), Text(str(value)))
        self.console.print(model)
        params = Table("parameter", "value", title="sampling", title_justify="left")
        for name, flag in SETTABLE.items():
            params.add_row(name, str(getattr(self.params, flag.field)))
        params.add_row("stop", ", ".join(map(repr, self.params.stop)) or "-")
        params.add_row("system", Text(self.conversation.system or "-"))
        self.console.print(params)
        template = self.llm.chat_template
        kind = "llama.cpp's ChatML fallback (the model has none)" if template.is_fallback else "from the model"
        self.console.print(Text(f"chat template ({kind}):", style="bold"))
        self.console.print(Text(template.source))
        return True

    def clear(self, _: str) -> bool:
        self.conversation.turns.clear()
        self.note("conversation cleared (the system message stays)")
        return True

    def save(self, argument: str) -> bool:
        if not argument:
            self.note("usage: /save FILE")
            return True
        path = Path(argument).expanduser()
        try:
            self.conversation.save(path)
        except OSError as e:
            self.note(f"error: cannot write {path}: {e.strerror or e}")
            return True
        self.note(f"saved {len(self.conversation.messages())} messages to {path}")
        return True

    def load(self, argument: str) -> bool:
        if not argument:
            self.note("usage: /load FILE")
            return True
        path = Path(argument).expanduser()
        try:
            loaded = Conversation.load(path)
        except OSError as e:
            self.note(f"error: cannot read {path}: {e.strerror or e}")
            return True
        except ConversationFileError as e:
            self.note(f"error: {e}")
            return True
        old = self.conversation
        self.conversation = Conversation(loaded.system, loaded.turns, old.tools, old.template_kwargs)
        self.note(f"loaded {len(self.conversation.messages())} messages from {path}")
        return True

    def stats(self, _: str) -> bool:
        self.show_stats = not self.show_stats
        self.note(f"stats {'on' if self.show_stats else 'off'}")
        return True

    def bye(self, _: str) -> bool:
        return False


COMMANDS: dict[str, Command] = {
    "/help": Command(Repl.help, "/help", "this list"),
    "/set": Command(Repl.set, "/set <name> <value>",
                    f"change a parameter ({', '.join(SETTABLE)}), the system message (/set system TEXT) or "
                    f"thinking (/set think on|off)"),
    "/tool": Command(Repl.tool, "/tool TEXT", "answer the model's tool call with its result"),
    "/show": Command(Repl.show, "/show", "model, parameters and chat template"),
    "/clear": Command(Repl.clear, "/clear", "forget the conversation, keep the system message"),
    "/save": Command(Repl.save, "/save FILE", "write the conversation as JSON"),
    "/load": Command(Repl.load, "/load FILE", "read a conversation saved with /save"),
    "/stats": Command(Repl.stats, "/stats", "toggle speed figures after each reply"),
    "/bye": Command(Repl.bye, "/bye", "leave (Ctrl-D too)"),
}


def _enable_line_editing(words: list[str]) -> None:
    """readline editing and in-session history for input(), with Tab completing slash commands."""
    try:
        import readline
    except ImportError:  # e.g. Windows without pyreadline: plain input() still works
        return

    def complete(text: str, state: int) -> str | None:
        matches = [w for w in words if w.startswith(text)]
        return matches[state] if state < len(matches) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")
    # macOS's Python links libedit, which takes a different binding syntax
    readline.parse_and_bind("bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") else "tab: complete")
