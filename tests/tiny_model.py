"""Write small random-weight GGUF models of every supported architecture with gguf.GGUFWriter.

Tests that need many fast runs use them, and so do the architecture parity tests: `ARCH_CASES` are recorded
against llama.cpp (scripts/fixtures_archs.py) and rewritten byte-identically at test time (seeded). To
re-record after changing this file:

    python tests/tiny_model.py /tmp/tiny            # the runtime's interpreter
    .fixtures-venv/bin/python scripts/make_fixtures.py archs /tmp/tiny
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, RopeScalingType

from gguf_runtime.archs import ARCHITECTURES
from gguf_runtime.quants import quantize

LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
F32, Q8_0 = GGMLQuantizationType.F32, GGMLQuantizationType.Q8_0

# name -> write_tiny_model arguments: each architecture at realistic ratios (head_dim set apart from
# n_embd / n_head where the architecture allows it, 3x FFN, grouped-query heads), enough layers for both a
# sliding and a global layer, a window shorter than the test sequences, and F32 and Q8_0 weights.
_ARCH_SHAPES = {
    "llama": dict(n_layers=2, n_kv_heads=2),
    "qwen2": dict(n_layers=2, n_kv_heads=2),
    "qwen3": dict(n_layers=2, n_kv_heads=2, head_dim=64),
    "gemma2": dict(n_layers=3, n_kv_heads=2, head_dim=64, sliding_window=8, tied=True),
    "gemma3": dict(n_layers=6, n_kv_heads=1, head_dim=64, sliding_window=8, tied=True),
    "olmo2": dict(n_layers=2, n_kv_heads=4),
    "qwen3moe": dict(n_layers=2, n_kv_heads=2, head_dim=64, n_expert=8, n_expert_used=2),
    "phi3": dict(n_layers=2, n_kv_heads=2, long_rope=512),
}
_COMMON = dict(n_vocab=160, n_embd=128, n_heads=4, n_ff=384, equal_norm_rows=True, seed=7)
ARCH_CASES = {
    f"{arch}-{quant.name.lower()}": dict(arch=arch, quant=quant, **_COMMON, **shape)
    for arch, shape in _ARCH_SHAPES.items() for quant in (F32, Q8_0)
} | {  # RoPE scaling: Llama 3.1's per-dim factors (rope_freqs) and YaRN (long-context Qwen files)
    "llama-rope-freqs-f32": dict(arch="llama", quant=F32, rope_freqs=True, **_COMMON, **_ARCH_SHAPES["llama"]),
    "qwen3-yarn-f32": dict(arch="qwen3", quant=F32, yarn=(4.0, 64), **_COMMON, **_ARCH_SHAPES["qwen3"]),
    # an original context (64) below the tests' (128): LongRoPE's long factors
    "phi3-long-f32": dict(arch="phi3", quant=F32, **_COMMON, **(_ARCH_SHAPES["phi3"] | dict(long_rope=64))),
    # with the attention factor a LongRoPE file states (Phi-3 128k: sqrt(1 + ln 32 / ln 4096) = 1.19)
    "phi3-long-attn-f32": dict(arch="phi3", quant=F32, **_COMMON,
                               **(_ARCH_SHAPES["phi3"] | dict(long_rope=64, rope_attn_factor=1.19))),
}


def write_tiny_model(path: Path, arch: str = "llama", n_vocab: int = 24, n_embd: int = 64, n_layers: int = 2,
                     n_heads: int = 4, n_kv_heads: int = 2, n_ff: int = 96, quant: GGMLQuantizationType = Q8_0,
                     seed: int = 0, logit_scale: float = 1.0, head_dim: int | None = None,
                     sliding_window: int | None = None, tied: bool = False, equal_norm_rows: bool = False,
                     n_expert: int = 0, n_expert_used: int = 0, rope_freqs: bool = False,
                     yarn: tuple[float, int] | None = None, long_rope: int = 0,
                     rope_attn_factor: float | None = None) -> Path:
    """A random model whose vocabulary is <eos>, single letters, then <xN> tokens (byte-level BPE, no merges).

    The tensors are the ones `arch` declares (QK-norms, pre/post norms, qwen2's biases, experts of n_ff / 4
    rows each). rope_freqs adds Llama 3.1-style per-dim RoPE factors; yarn = (factor, original context) YaRN
    scaling; long_rope = original context adds LongRoPE's long and short factors, rope_attn_factor its
    rope.scaling.attn_factor. phi3 gets fused attn_qkv
    and gate+up ffn_up tensors. equal_norm_rows gives every embedding row the same norm, so tied logits are not ranked by row
    norm alone.
    """
    spec = ARCHITECTURES[arch]
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_heads
    w = GGUFWriter(str(path), arch)
    w.add_block_count(n_layers)
    w.add_context_length(512)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    if head_dim is not None:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if sliding_window is not None:
        w.add_sliding_window(sliding_window)
    if long_rope:
        w.add_rope_scaling_orig_ctx_len(long_rope)
    if rope_attn_factor is not None:
        w.add_rope_scaling_attn_factors(rope_attn_factor)
    if spec.experts:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
        w.add_expert_feed_forward_length(n_ff // 4)
    w.add_rope_freq_base(10000.0)
    if yarn is not None:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(yarn[0])
        w.add_rope_scaling_orig_ctx_len(yarn[1])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    tokens = (["<eos>"] + LETTERS + [f"<x{i}>" for i in range(n_vocab)])[:n_vocab]
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (n_vocab - 1))
    w.add_token_merges(["a b"])  # one merge: "ab" is not in the vocab, so it never applies
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    def add(name: str, x: np.ndarray) -> None:
        if quant == F32:
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, quantize(x, int(quant)), raw_dtype=quant)

    def matrix(name: str, rows: int, cols: int, scale: float = 1.0, n: int = 0) -> None:
        shape = (n, rows, cols) if n else (rows, cols)  # n experts: a 3-D tensor
        add(name, (rng.standard_normal(shape) * scale / np.sqrt(cols)).astype(np.float32))

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    embd = rng.standard_normal((n_vocab, n_embd))
    if equal_norm_rows:
        embd /= np.linalg.norm(embd, axis=1, keepdims=True) / np.sqrt(n_embd)
    add("token_embd.weight", embd.astype(np.float32))
    q_norm, k_norm = {"head": (hd, hd), "full": (n_heads * hd, n_kv_heads * hd), None: (0, 0)}[spec.qk_norm]
    for i in range(n_layers):
        if spec.pre_norms:
            norm(f"blk.{i}.attn_norm.weight", n_embd)
        if arch == "phi3":
            matrix(f"blk.{i}.attn_qkv.weight", (n_heads + 2 * n_kv_heads) * hd, n_embd)
        else:
            matrix(f"blk.{i}.attn_q.weight", n_heads * hd, n_embd)
            matrix(f"blk.{i}.attn_k.weight", n_kv_heads * hd, n_embd)
            matrix(f"blk.{i}.attn_v.weight", n_kv_heads * hd, n_embd)
        if arch == "qwen2":
            for part, n in (("q", n_heads * hd), ("k", n_kv_heads * hd), ("v", n_kv_heads * hd)):
                w.add_tensor(f"blk.{i}.attn_{part}.bias", (0.1 * rng.standard_normal(n)).astype(np.float32))
        if q_norm:
            norm(f"blk.{i}.attn_q_norm.weight", q_norm)
            norm(f"blk.{i}.attn_k_norm.weight", k_norm)
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_heads * hd)
        if spec.post_norms:
            norm(f"blk.{i}.post_attention_norm.weight", n_embd)
        if spec.pre_norms:
            norm(f"blk.{i}.ffn_norm.weight", n_embd)
        if spec.experts:
            w.add_tensor(f"blk.{i}.ffn_gate_inp.weight",
                         (rng.standard_normal((n_expert, n_embd)) / np.sqrt(n_embd)).astype(np.float32))
            matrix(f"blk.{i}.ffn_gate_exps.weight", n_ff // 4, n_embd, n=n_expert)
            matrix(f"blk.{i}.ffn_up_exps.weight", n_ff // 4, n_embd, n=n_expert)
            matrix(f"blk.{i}.ffn_down_exps.weight", n_embd, n_ff // 4, n=n_expert)
        elif spec.fused_gate_up:
            matrix(f"blk.{i}.ffn_up.weight", 2 * n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
        else:
            matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
            matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
        if spec.post_norms:
            norm(f"blk.{i}.post_ffw_norm.weight", n_embd)
    norm("output_norm.weight", n_embd)
    if long_rope:  # LongRoPE: mild factors for short contexts, up to 4x stretched for long ones
        w.add_tensor("rope_factors_short.weight", np.linspace(1.0, 1.5, hd // 2).astype(np.float32))
        w.add_tensor("rope_factors_long.weight", np.geomspace(1.0, 4.0, hd // 2).astype(np.float32))
    if rope_freqs:  # 1 for the fast-turning dims up to 8 for the slowest, as Llama 3.1's low/high-frequency rule
        w.add_tensor("rope_freqs.weight", np.geomspace(1.0, 8.0, hd // 2).astype(np.float32))
    if not tied:
        matrix("output.weight", n_vocab, n_embd, scale=logit_scale * np.sqrt(n_embd))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for case, kwargs in ARCH_CASES.items():
        print(write_tiny_model(out / f"{case}.gguf", **kwargs))
