"""A jinja2 sandbox with budgets, for templates that come from strangers (GGUF chat templates).

jinja2's `ImmutableSandboxedEnvironment` stops a template from reaching Python, but not from spending
unbounded time or memory: nested `range(100000)` loops, `int` squaring, `'x'|center(10**9)`, a string
doubled in a loop, `tojson(indent=N)`, or a nested list printed exponentially. Here every render runs under
a `Budget`:

- steps: every block the template enters (a loop iteration, a macro call, an if branch) ticks a counter,
  and a wall-clock deadline is checked with it;
- values: every string, list or number the template builds through an operator (`*`, `**`, `+`, `%`, `~`),
  a filter or a method call is size-checked *before* it is built where the size can be predicted, and
  counted into a total of built characters;
- output: the rendered text is bounded;
- printing a container first walks it (iteratively, counting repeated references), so a structure that
  would print as gigabytes is refused before `str()` runs.

The optimizer (constant folding at compile time) is off, so no template expression is evaluated before a
budget exists. Everything that exceeds a budget raises `SecurityError` with a one-line reason.
"""

from __future__ import annotations

import contextvars
import operator
import re
import time
from dataclasses import dataclass, field
from typing import Any

from jinja2.compiler import CodeGenerator
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_STEPS = 1_000_000  # blocks entered per render (real chat templates: a few thousand)
MAX_SECONDS = 1.0  # wall time per render
MAX_VALUE = 4_000_000  # characters (or items) of one string or list a template builds
MAX_BUILT = 64_000_000  # characters built over a whole render
MAX_OUTPUT = 8_000_000  # characters of rendered text
MAX_INT_BITS = 4096  # size of an integer a template may compute
MAX_WIDTH = 100_000  # a format width, indent or padding
MAX_JSON_INDENT = 16
MAX_PRINT_NODES = 200_000  # items walked to size a printed container
MAX_NESTING = 100  # depth of a container a template may print
MAX_SEQUENCE_REPEAT = 1_000_000  # longest string/list a template may build with `*`
MAX_POWER_EXPONENT = 1_000  # largest integer exponent a template may use with `**`

_FORMAT_NUMBERS = re.compile(r"\d+")


@dataclass
class Budget:
    """What one render may still spend. `allowance`: characters of input (the messages), which a template
    may legitimately copy a few times over, on top of the fixed limits."""

    allowance: int = 0
    steps: int = MAX_STEPS
    built: int = 0
    value_limit: int = 0
    output_limit: int = 0
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_SECONDS)

    def __post_init__(self) -> None:
        self.built = MAX_BUILT + 16 * self.allowance
        self.value_limit = MAX_VALUE + 2 * self.allowance
        self.output_limit = MAX_OUTPUT + 2 * self.allowance

    def tick(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise SecurityError(f"the template ran more than {MAX_STEPS} steps")
        if self.steps % 64 == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"the template ran longer than {MAX_SECONDS} s")

    def charge(self, n: int, what: str) -> None:
        if n > self.value_limit:
            raise SecurityError(f"{what} would build a value of {n} characters or items "
                                f"(limit {self.value_limit})")
        self.built -= n
        if self.built < 0:
            raise SecurityError(f"the template built more than {MAX_BUILT} characters in all")


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _budget() -> Budget:
    """The running render's budget; outside a render (nothing runs there) a fresh, throwaway one."""
    return _current.get() or Budget()


def printed_size(value: Any) -> int:
    """An upper bound of len(str(value)), found without building it; SecurityError past MAX_VALUE or too deep."""
    total = nodes = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_PRINT_NODES:
            raise SecurityError(f"printing a value of more than {MAX_PRINT_NODES} items")
        if depth > MAX_NESTING:
            raise SecurityError(f"a value nested deeper than {MAX_NESTING} levels")
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, (list, tuple, set, frozenset)):
            if all(type(x) is str for x in item):  # the common flat case, at C speed
                total += sum(map(len, item)) + 4 * len(item) + 2
            else:
                total += 2 + 2 * len(item)
                stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend((x, depth + 1) for kv in item.items() for x in kv)
        elif isinstance(item, Namespace):
            attrs = object.__getattribute__(item, "_Namespace__attrs")
            total += 16
            stack.append((attrs, depth + 1))
        else:
            total += 32
        if total > MAX_VALUE:
            raise SecurityError(f"printing a value of more than {MAX_VALUE} characters")
    return total


def _bounded_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        printed_size(value)
        value = str(value)
    _budget().charge(len(value), what)
    return value


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"{what} would compute an integer of more than {MAX_INT_BITS} bits")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        shown = value if abs(value) < 10**12 else f"about 2**{abs(value).bit_length()}"
        raise SecurityError(f"{what} with a width or count of {shown} (limit {MAX_WIDTH})")


def _check_format(fmt: str, args: tuple, what: str) -> None:
    """printf- and str.format-style strings: every literal number (widths, precisions) and every integer
    argument (a `*` width, a `{:{}}` width) bounded; the result's size bounded by its parts."""
    for number in _FORMAT_NUMBERS.findall(fmt):
        if len(number) > 6 or int(number) > MAX_WIDTH:
            raise SecurityError(f"{what}: a format width or precision of {number} (limit {MAX_WIDTH})")
    size = len(fmt)
    for arg in args:
        _check_width(arg, what)
        size += printed_size(arg)
    _budget().charge(size + fmt.count("%") * MAX_WIDTH // 100, what)


def _predict_call(obj: Any, args: tuple, kwargs: dict) -> None:
    """Refuse, before it runs, a string method or global whose result size depends on an argument."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if obj is generate_lorem_ipsum:
        n = args[0] if args else kwargs.get("n", 5)
        most = args[3] if len(args) > 3 else kwargs.get("max", 100)
        if not (isinstance(n, int) and isinstance(most, int)) or n * most > 100_000:
            raise SecurityError("lipsum() asked for more than 100000 words")
        return
    if not isinstance(owner, str):
        for value in (*args, *kwargs.values()):
            _check_int(value, f"calling {name}()")
        return
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill"):
        for value in args:
            _check_width(value, what)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _check_width(size, what)
        _budget().charge(len(owner) + owner.count("\t") * int(size), what)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = owner.count(args[0]) if args[0] else len(owner) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        _budget().charge(len(owner) + count * max(0, len(args[1]) - len(args[0])), what)
    elif name == "join" and args:
        items = list(args[0]) if isinstance(args[0], (list, tuple, str)) else []
        _budget().charge(sum(printed_size(x) for x in items) + len(owner) * len(items), what)
    elif name in ("format", "format_map"):
        _check_format(owner, (*args, *kwargs.values()), what)


def _sized_result(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple, dict)):
        _budget().charge(len(value), what)
    elif isinstance(value, int):
        _check_int(value, what)
    return value


class _BudgetedCodeGenerator(CodeGenerator):
    """Compiles templates with a budget tick at the start of every block (each loop iteration, macro call and
    branch runs one) and `~` routed through the size-checked join."""

    def blockvisit(self, nodes, frame) -> None:
        self.writeline("environment.tick()")
        super().blockvisit(nodes, frame)

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, failing loudly on unsafe attributes, with every render under a `Budget`."""

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})

    def __init__(self, **options: Any):
        super().__init__(optimized=False, finalize=self._finalize, **options)
        for name, fn in list(self.filters.items()):
            self.filters[name] = budgeted_filter(name, fn)

    # -- budget hooks called from compiled templates ------------------------------------------------------
    @staticmethod
    def tick() -> None:
        _budget().tick()

    @staticmethod
    def concat(parts: tuple) -> str:
        return "".join(_bounded_str(p, "'~'") for p in parts)

    @staticmethod
    def _finalize(value: Any) -> Any:
        return value if isinstance(value, str) else _bounded_str(value, "printing")

    def render_budgeted(self, template, context: dict, allowance: int = 0) -> str:
        """Render under a fresh budget (see Budget for `allowance`), the output bounded too."""
        budget = Budget(allowance)
        token = _current.set(budget)
        try:
            out, size = [], 0
            for chunk in template.generate(context):
                size += len(chunk)
                if size > budget.output_limit:
                    raise SecurityError(f"the template's output is longer than {budget.output_limit} characters")
                out.append(chunk)
            return "".join(out)
        finally:
            _current.reset(token)

    # -- sandbox overrides -------------------------------------------------------------------------------
    def unsafe_undefined(self, obj: Any, attribute: str):
        # The stock sandbox returns an Undefined that prints as "": fail loudly instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def wrap_str_format(self, value: Any):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, (*args, *kwargs.values()), f"str.{value.__name__}()")
            return _sized_result(wrapper(*args, **kwargs), "str.format()")

        return checked

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
        _predict_call(__obj, args, kwargs)
        return _sized_result(super().call(__context, __obj, *args, **kwargs), "a call")

    def call_binop(self, context, op: str, left: Any, right: Any) -> Any:
        what = f"'{op}'"
        if op == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > MAX_SEQUENCE_REPEAT:
                    raise SecurityError(f"'*' would build a sequence longer than {MAX_SEQUENCE_REPEAT}")
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"'*' would compute an integer of more than {MAX_INT_BITS} bits")
        elif op == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                if right > MAX_POWER_EXPONENT:
                    raise SecurityError(f"'**' with an exponent above {MAX_POWER_EXPONENT}")
                if (left.bit_length() - 1) * right > MAX_INT_BITS:
                    raise SecurityError(f"'**' would compute an integer of more than {MAX_INT_BITS} bits")
        elif op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            _budget().charge(len(left) + len(right), what)
        elif op == "%" and isinstance(left, str):
            _check_format(left, right if isinstance(right, tuple) else (right,), what)
        return _sized_result(_BINOPS[op](left, right), what)


_BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod, "//": operator.floordiv,
           "/": operator.truediv, "-": operator.sub}


def budgeted_filter(name: str, fn):
    """A builtin filter with its size-dependent arguments checked first and its result counted."""
    what = f"the {name} filter"

    def budgeted(*args, **kwargs):
        values = [*args, *kwargs.values()]
        for value in values:
            if isinstance(value, int) and name not in ("int", "float", "round", "abs", "string", "filesizeformat"):
                _check_width(value, what)
        subject = next((v for v in args if not _is_context(v)), None)
        if name == "indent" and isinstance(subject, str):
            width = next((v for v in values[1:] if isinstance(v, int) and not isinstance(v, bool)), 4)
            _budget().charge(len(subject) + (subject.count("\n") + 1) * abs(width), what)
        elif name == "wordwrap" and isinstance(subject, str) and len(subject) > MAX_WIDTH:
            raise SecurityError(f"{what} on more than {MAX_WIDTH} characters")
        elif name in ("format",) and isinstance(subject, str):
            _check_format(subject, tuple(v for v in values if v is not subject), what)
        elif name == "replace" and len(args) >= 4 and all(isinstance(a, str) for a in args[1:4]):
            s, old, new = args[1:4]
            _budget().charge(len(s) + (s.count(old) if old else len(s) + 1) * max(0, len(new) - len(old)), what)
        elif name in ("join", "string", "pprint", "tojson", "list", "sum", "unique", "sort", "map", "batch",
                      "slice", "dictsort", "groupby", "items", "center", "truncate") and subject is not None:
            printed_size(subject)
        if name == "tojson":
            indent = kwargs.get("indent", args[2] if len(args) > 2 else None)
            if isinstance(indent, int) and not 0 <= indent <= MAX_JSON_INDENT:
                raise SecurityError(f"{what} with indent={indent} (limit {MAX_JSON_INDENT})")
            _budget().charge(printed_size(subject) * (1 + (indent or 0)), what)
        return _sized_result(fn(*args, **kwargs), what)

    for attr in ("jinja_pass_arg",):  # keep pass_context / pass_eval_context / pass_environment
        if hasattr(fn, attr):
            setattr(budgeted, attr, getattr(fn, attr))
    budgeted.__name__ = getattr(fn, "__name__", name)
    return budgeted


def _is_context(value: Any) -> bool:
    return isinstance(value, (EvalContext, Context, Environment))
