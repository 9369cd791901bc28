"""Write small random llama/qwen2 GGUF models with gguf.GGUFWriter, for tests that need many fast runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from gguf_runtime.quants import quantize

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def write_tiny_model(path: Path, arch: str = "llama", n_vocab: int = 24, n_embd: int = 64, n_layers: int = 2,
                     n_heads: int = 4, n_kv_heads: int = 2, n_ff: int = 96, quant: GGMLQuantizationType =
                     GGMLQuantizationType.Q8_0, seed: int = 0, logit_scale: float = 1.0) -> Path:
    """A random model whose vocabulary is <eos> plus single letters (byte-level BPE, no merges)."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), arch)
    w.add_block_count(n_layers)
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    tokens = ["<eos>"] + LETTERS[: n_vocab - 1]
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (n_vocab - 1))
    w.add_token_merges(["a b"])  # one merge: "ab" is not in the vocab, so it never applies
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    def matrix(name: str, rows: int, cols: int, scale: float = 1.0) -> None:
        x = (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)
        if quant == GGMLQuantizationType.F32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, quantize(x, int(quant)), raw_dtype=quant)

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    hd = n_embd // n_heads
    matrix("token_embd.weight", n_vocab, n_embd, scale=np.sqrt(n_embd))
    for i in range(n_layers):
        norm(f"blk.{i}.attn_norm.weight", n_embd)
        matrix(f"blk.{i}.attn_q.weight", n_heads * hd, n_embd)
        matrix(f"blk.{i}.attn_k.weight", n_kv_heads * hd, n_embd)
        matrix(f"blk.{i}.attn_v.weight", n_kv_heads * hd, n_embd)
        if arch == "qwen2":
            for part, n in (("q", n_heads * hd), ("k", n_kv_heads * hd), ("v", n_kv_heads * hd)):
                w.add_tensor(f"blk.{i}.attn_{part}.bias", (0.1 * rng.standard_normal(n)).astype(np.float32))
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_heads * hd)
        norm(f"blk.{i}.ffn_norm.weight", n_embd)
        matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight", n_embd)
    matrix("output.weight", n_vocab, n_embd, scale=logit_scale * np.sqrt(n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
