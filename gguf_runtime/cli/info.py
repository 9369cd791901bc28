"""`gguf-runtime info MODEL`: what a GGUF file holds, as a readable summary or one JSON object."""

from __future__ import annotations

import json
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..archs import SUPPORTED_ARCHITECTURES
from ..catalog import CATALOG, resolve_model
from ..ggml_constants import GGUFValueType, LlamaFileType
from ..gguf_file import GGUFError, GGUFFile, value_type_name
from ._app import UserError, main

SPECIAL_TOKENS = {  # summary name -> tokenizer.ggml.<key>
    "bos": "bos_token_id",
    "eos": "eos_token_id",
    "eot": "eot_token_id",
    "pad": "padding_token_id",
    "unk": "unknown_token_id",
}
HYPERPARAMETERS = {  # summary name -> <arch>.<key>
    "context_length": "context_length",
    "embedding_length": "embedding_length",
    "block_count": "block_count",
    "feed_forward_length": "feed_forward_length",
    "head_count": "attention.head_count",
    "head_count_kv": "attention.head_count_kv",
}


@main.command()
@click.argument("model")
@click.option("--tensors", "show_tensors", is_flag=True, help="Also list every tensor.")
@click.option("--metadata", "show_metadata", is_flag=True, help="Also list every metadata key with its type.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def info(model: str, show_tensors: bool, show_metadata: bool, as_json: bool) -> None:
    """Summarise a GGUF model: MODEL is a file path or a catalog name (see `gguf-runtime models`)."""
    with open_model(model) as g:
        summary = summarize(g)
        if show_metadata:
            summary["metadata"] = metadata_listing(g)
        if show_tensors:
            summary["tensors"] = [
                {"name": t.name, "type": t.type_name, "shape": list(t.shape), "offset": t.offset,
                 "n_bytes": t.n_bytes}
                for t in g.tensors.values()
            ]
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    else:
        print_summary(summary)


def open_model(model: str) -> GGUFFile:
    """Open a path or catalog model, turning every failure into a one-line UserError."""
    path = resolve_model(model)
    try:
        return GGUFFile(path)
    except FileNotFoundError:
        if model in CATALOG:
            raise UserError(f"model {model!r} is not fetched yet; run `gguf-runtime pull {model}`") from None
        raise UserError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, not a GGUF file") from None
    except OSError as e:
        raise UserError(f"cannot open {path}: {e.strerror or e}") from None
    except GGUFError as e:
        raise UserError(str(e)) from None


def summarize(g: GGUFFile) -> dict[str, Any]:
    """The headline facts of a model file, as JSON-ready values (None where the file does not say)."""
    arch = g.get("general.architecture")
    tokens = g.get("tokenizer.ggml.tokens")
    template = g.get("tokenizer.chat_template")
    n_params = sum(t.n_elements for t in g.tensors.values())
    tensor_bytes = sum(t.n_bytes for t in g.tensors.values())
    return {
        "path": str(g.path),
        "file_size": g.file_size,
        "gguf_version": g.version,
        "architecture": arch,
        "name": g.get("general.name"),
        "parameters": n_params,
        "file_type": file_type_name(g.get("general.file_type")),
        "bits_per_weight": round(8 * tensor_bytes / n_params, 2) if n_params else None,
        "quant_mix": quant_mix(g),
        **{name: _jsonable(g.get(f"{arch}.{key}")) for name, key in HYPERPARAMETERS.items()},
        "runs": arch in SUPPORTED_ARCHITECTURES,
        "architecture_fields": architecture_fields(g, arch),
        "vocab_size": len(tokens) if tokens is not None else _jsonable(g.get(f"{arch}.vocab_size")),
        "tokenizer_model": g.get("tokenizer.ggml.model"),
        "tokenizer_pre": g.get("tokenizer.ggml.pre"),
        "chat_template": {"present": isinstance(template, str),
                          "length": len(template) if isinstance(template, str) else 0},
        "special_tokens": special_tokens(g, tokens),
        "metadata_keys": len(g.metadata),
        "tensor_count": len(g.tensors),
    }


def architecture_fields(g: GGUFFile, arch: Any) -> dict[str, Any]:
    """The `<arch>.*` keys beyond the common hyperparameters (head size, sliding window, RoPE base and scaling,
    soft-caps, expert counts, ...), without the prefix: what sets this architecture's files apart."""
    if not isinstance(arch, str):
        return {}
    common = {f"{arch}.{key}" for key in HYPERPARAMETERS.values()}
    return {key.removeprefix(f"{arch}."): _jsonable(value) for key, value in g.metadata.items()
            if key.startswith(f"{arch}.") and key not in common and g.metadata_types[key] != GGUFValueType.ARRAY}


def file_type_name(file_type: Any) -> str | None:
    """general.file_type as llama.cpp names it: "Q4_K_M", "F16", "F32" (+ " (guessed)")."""
    if not isinstance(file_type, int):
        return None
    guessed = file_type & LlamaFileType.GUESSED
    try:
        name = LlamaFileType(file_type & ~LlamaFileType.GUESSED).name
    except ValueError:
        return f"unknown ({file_type})"
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return f"{name} (guessed)" if guessed else name


def quant_mix(g: GGUFFile) -> dict[str, dict[str, int]]:
    """Tensor type -> {"tensors": count, "bytes": total}, biggest share first."""
    mix: dict[str, dict[str, int]] = {}
    for t in g.tensors.values():
        entry = mix.setdefault(t.type_name, {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += t.n_bytes
    return dict(sorted(mix.items(), key=lambda kv: -kv[1]["bytes"]))


def special_tokens(g: GGUFFile, tokens: list[str] | None) -> dict[str, dict[str, Any]]:
    """bos/eos/eot/pad/unk that the file names: {"id": int, "text": str | None}."""
    found = {}
    for name, key in SPECIAL_TOKENS.items():
        token_id = g.get(f"tokenizer.ggml.{key}")
        if isinstance(token_id, int):
            in_vocab = tokens is not None and 0 <= token_id < len(tokens)
            found[name] = {"id": token_id, "text": tokens[token_id] if in_vocab else None}
    return found


def metadata_listing(g: GGUFFile) -> dict[str, dict[str, Any]]:
    """Every key: its type label, and the value for scalars or the length for arrays."""
    listing = {}
    for key, value in g.metadata.items():
        if g.metadata_types[key] == GGUFValueType.ARRAY:
            label = f"array[{value_type_name(g.metadata_array_types[key])}]"
            listing[key] = {"type": label, "length": len(value)}
        else:
            listing[key] = {"type": value_type_name(g.metadata_types[key]), "value": value}
    return listing


def _jsonable(value: Any) -> Any:
    """Per-layer hyperparameters come as numpy arrays; JSON wants lists."""
    return value.tolist() if isinstance(value, np.ndarray) else value


# -- human-readable output ---------------------------------------------------------------------------

def print_summary(s: dict[str, Any]) -> None:
    console = Console()
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    rows = [
        ("file", f"{s['path']} ({_size(s['file_size'])}, GGUF v{s['gguf_version']})"),
        ("architecture", f"{s['architecture']} ({'runs' if s['runs'] else 'not supported'})"),
        ("name", s["name"]),
        ("parameters", f"{s['parameters'] / 1e6:,.1f} M ({s['parameters']:,})"),
        ("file type", f"{s['file_type']} ({s['bits_per_weight']} bits per weight)"
                      if s["file_type"] else None),
        ("context length", s["context_length"]),
        ("embedding", s["embedding_length"]),
        ("layers", s["block_count"]),
        ("feed-forward", s["feed_forward_length"]),
        ("heads (q / kv)", f"{s['head_count']} / {s['head_count_kv']}"),
        *((key, _preview(value, "float32" if isinstance(value, float) else "")) for key, value in
          s["architecture_fields"].items()),
        ("vocab", s["vocab_size"]),
        ("tokenizer", f"{s['tokenizer_model']} (pre: {s['tokenizer_pre']})"),
        ("chat template", f"yes ({s['chat_template']['length']:,} chars)" if s["chat_template"]["present"]
                          else "no"),
        ("special tokens", "  ".join(f"{name}={tok['id']} {tok['text']!r}" if tok["text"] is not None
                                     else f"{name}={tok['id']}" for name, tok in s["special_tokens"].items())
                           or None),
        ("metadata keys", s["metadata_keys"]),
        ("tensors", s["tensor_count"]),
    ]
    for label, value in rows:
        overview.add_row(label, Text("-" if value is None else str(value)))  # Text: no markup from the file
    console.print(overview)

    mix = Table("type", "tensors", "size", "share", title="quant mix", title_justify="left")
    total = sum(m["bytes"] for m in s["quant_mix"].values()) or 1
    for type_name, m in s["quant_mix"].items():
        mix.add_row(type_name, str(m["tensors"]), _size(m["bytes"]), f"{100 * m['bytes'] / total:.1f}%")
    console.print(mix)

    if "metadata" in s:
        table = Table("key", "type", "value", title="metadata", title_justify="left")
        for key, entry in s["metadata"].items():
            shown = f"{entry['length']:,} items" if "length" in entry else _preview(entry["value"], entry["type"])
            table.add_row(Text(key), Text(entry["type"]), Text(shown))
        console.print(table)

    if "tensors" in s:
        table = Table("name", "type", "shape", "offset", "size", title="tensors", title_justify="left")
        for t in s["tensors"]:
            table.add_row(Text(t["name"]), Text(t["type"]), " x ".join(map(str, t["shape"])), f"{t['offset']:,}",
                          _size(t["n_bytes"]))
        console.print(table)


def _preview(value: Any, type_label: str, limit: int = 60) -> str:
    if type_label == "float32":  # the shortest text that reads back as the same float32
        text = str(np.float32(value))
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _size(n_bytes: float) -> str:
    if n_bytes < 1000:
        return f"{n_bytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1000
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"
