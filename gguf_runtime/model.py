"""The Llama-family forward pass (llama; qwen2 = llama + Q/K/V bias and NeoX RoPE) on quantized weights.

Weights stay in the memory-mapped file: every matrix is a QMatrix over its raw GGUF blocks. One call runs T
tokens at the cache's next positions: T = 1 goes through the matvec kernels (decode), T > 1 through the
matmul kernels (prefill, speculative verify). No sampling, tokenizer or I/O in here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import ModelConfig
from .gguf_file import GGUFError, GGUFFile
from .kv_cache import KVCache
from .ops import attend_many, attend_one, rms_norm, rope, rope_tables, swiglu
from .quants import QMatrix, embed_rows

# Up to this many tokens a forward pass uses decode's numerics token by token (integer matmul on Q8
# activations, per-token attention), so a speculative verify of up to 16 drafts reproduces exactly the
# logits plain decoding would have produced. Larger batches (prefill) take the BLAS paths.
DECODE_NUMERICS_MAX_TOKENS = 17


@dataclass
class Layer:
    attn_norm: np.ndarray  # (D,)
    wq: QMatrix  # (H·hd, D)
    wk: QMatrix  # (H_kv·hd, D)
    wv: QMatrix  # (H_kv·hd, D)
    bq: np.ndarray | None  # (H·hd,) qwen2 only
    bk: np.ndarray | None  # (H_kv·hd,)
    bv: np.ndarray | None  # (H_kv·hd,)
    wo: QMatrix  # (D, H·hd)
    ffn_norm: np.ndarray  # (D,)
    w_gate: QMatrix  # (F, D)
    w_up: QMatrix  # (F, D)
    w_down: QMatrix  # (D, F)


class Model:
    def __init__(self, gguf: GGUFFile, config: ModelConfig):
        self.config = config
        self._gguf = gguf

        def matrix(name: str) -> QMatrix:
            info = self._tensor(name)
            return QMatrix(gguf.tensor_data(name), info.ggml_type, name)

        def vector(name: str, required: bool = True) -> np.ndarray | None:
            if name not in gguf.tensors and not required:
                return None
            info = self._tensor(name)
            if info.type_name != "F32":
                raise GGUFError(f"tensor {name}: expected F32, found {info.type_name}")
            return gguf.tensor_data(name)

        embd = self._tensor("token_embd.weight")
        self.tok_embd = gguf.tensor_data("token_embd.weight")  # (V, D) raw blocks
        self.tok_embd_type = embd.ggml_type
        self.layers = [
            Layer(
                attn_norm=vector(f"blk.{i}.attn_norm.weight"),
                wq=matrix(f"blk.{i}.attn_q.weight"),
                wk=matrix(f"blk.{i}.attn_k.weight"),
                wv=matrix(f"blk.{i}.attn_v.weight"),
                bq=vector(f"blk.{i}.attn_q.bias", required=False),
                bk=vector(f"blk.{i}.attn_k.bias", required=False),
                bv=vector(f"blk.{i}.attn_v.bias", required=False),
                wo=matrix(f"blk.{i}.attn_output.weight"),
                ffn_norm=vector(f"blk.{i}.ffn_norm.weight"),
                w_gate=matrix(f"blk.{i}.ffn_gate.weight"),
                w_up=matrix(f"blk.{i}.ffn_up.weight"),
                w_down=matrix(f"blk.{i}.ffn_down.weight"),
            )
            for i in range(config.n_layers)
        ]
        self.output_norm = vector("output_norm.weight")
        # tied embeddings: no output.weight means the token table doubles as the output projection
        self.output = matrix("output.weight" if "output.weight" in gguf.tensors else "token_embd.weight")
        self.rope_freq_factors = vector("rope_freqs.weight", required=False)  # Llama 3.1 long-context factors
        self.n_vocab = self.output.n_rows
        self.attn_scale = 1.0 / math.sqrt(config.head_dim)

    def _tensor(self, name: str):
        info = self._gguf.tensors.get(name)
        if info is None:
            raise GGUFError(f"tensor {name} is missing from {self._gguf.path.name}")
        return info

    def new_cache(self, n_ctx: int) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, c.head_dim, n_ctx)

    def rotate(self, x: np.ndarray, positions: np.ndarray) -> None:
        """Apply RoPE in place to x: (T, heads, hd) at the given (T,) positions (may be negative deltas)."""
        c = self.config
        cos, sin = rope_tables(positions, c.n_rot, c.rope_base, c.rope_freq_scale, self.rope_freq_factors)
        rope(x, cos, sin, c.rope_style == "neox")

    def shift_keys(self, keys: np.ndarray, delta: int) -> None:
        """Re-rotate cached keys (T, H_kv, hd) by delta positions: the context-shift hook of KVCache."""
        self.rotate(keys, np.full(keys.shape[0], delta))

    def forward(self, tokens: np.ndarray, cache: KVCache, logits: str | None = "last") -> np.ndarray | None:
        """Run tokens at positions cache.n.. and append them to the cache.

        Returns float32 logits: (T, V) for logits="all", (1, V) of the last token for "last", None for None
        (a prefill chunk whose logits nobody reads skips the vocabulary projection).
        """
        c = self.config
        n_tok = len(tokens)
        start = cache.n
        if n_tok == 0 or start + n_tok > cache.n_ctx:
            raise ValueError(f"{n_tok} tokens at position {start} do not fit a context of {cache.n_ctx}")
        H, H_kv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        cos, sin = rope_tables(np.arange(start, start + n_tok), c.n_rot, c.rope_base, c.rope_freq_scale,
                               self.rope_freq_factors)
        neox = c.rope_style == "neox"

        x = embed_rows(self.tok_embd, self.tok_embd_type, np.asarray(tokens, dtype=np.int64),
                       np.empty((n_tok, c.n_embd), dtype=np.float32))  # (T, D) residual stream
        h = np.empty_like(x)  # (T, D) normed input of each sublayer
        scores = np.empty((H, start + n_tok), dtype=np.float32)  # decode attention scratch

        for i, L in enumerate(self.layers):
            # attention
            rms_norm(x, L.attn_norm, c.rms_eps, h)
            q = _linear(L.wq, h, L.bq).reshape(n_tok, H, hd)  # (T, H, hd)
            k = _linear(L.wk, h, L.bk).reshape(n_tok, H_kv, hd)  # (T, H_kv, hd)
            v = _linear(L.wv, h, L.bv).reshape(n_tok, H_kv, hd)  # (T, H_kv, hd)
            rope(q, cos, sin, neox)
            rope(k, cos, sin, neox)
            cache.store(i, start, k, v)
            if n_tok <= DECODE_NUMERICS_MAX_TOKENS:
                attn = np.empty((n_tok, H, hd), dtype=np.float32)  # (T, H, hd)
                for t in range(n_tok):
                    attend_one(q[t], cache.k[i], cache.v[i], start + t + 1, np.float32(self.attn_scale),
                               scores, attn[t])
            else:
                attn = attend_many(q, cache.k[i], cache.v[i], start, self.attn_scale)  # (T, H, hd)
            x += _linear(L.wo, attn.reshape(n_tok, H * hd))

            # feed-forward (SwiGLU)
            rms_norm(x, L.ffn_norm, c.rms_eps, h)
            gate = _linear(L.w_gate, h)  # (T, F)
            up = _linear(L.w_up, h)  # (T, F)
            x += _linear(L.w_down, swiglu(gate, up, gate))

        cache.tokens.extend(int(t) for t in tokens)
        if logits is None:
            return None
        if logits == "last":
            x = x[-1:]
        rms_norm(x, self.output_norm, c.rms_eps, x)
        return _linear(self.output, x)  # (T or 1, V)


def _linear(w: QMatrix, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x (T, in) → (T, out): matvec for one token, decode-identical integer matmul for a few, else matmul."""
    n_tok = x.shape[0]
    if n_tok == 1:
        y = w.matvec(x[0])[None]
    elif n_tok <= DECODE_NUMERICS_MAX_TOKENS:
        y = w.matmul_integer(x)
    else:
        y = w.matmul(x)
    if bias is not None:
        y += bias
    return y
