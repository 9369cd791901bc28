"""The Llama-family forward pass (llama; qwen2 = llama + Q/K/V bias and NeoX RoPE) on quantized weights.

Weights stay in the memory-mapped file: every matrix is a QMatrix over its raw GGUF blocks. One call runs the
next tokens of one or more sequences (a batched decode step, a prefill chunk, a speculative verify), each
at its cache's next positions, through every weight once. No sampling, tokenizer or I/O in here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import ModelConfig
from .gguf_file import GGUFError, GGUFFile
from .attention import attend, store_rows
from .kv_cache import BLOCK_TOKENS, KVCache, KVPool
from .ops import rms_norm, rope, rope_tables, swiglu
from .quants import QMatrix, embed_rows
from .weights import Weights

# Every row of a forward pass gets the numerics of decoding it alone: quantized weights always go through the
# integer kernels (each row equals a one-token matvec) and attention runs per row over the cache, so
# batching, prompt chunking, prefix reuse and speculative verification never change a sequence's logits.
# Float weights (F32/F16) take BLAS above this many tokens per sequence, keeping that exactness for a
# verify of up to 16 drafts.
DECODE_NUMERICS_MAX_TOKENS = 17


class NonFiniteError(GGUFError):
    """The model computed NaN or infinity: its weights (or block scales) hold non-finite values."""


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
        """Take every tensor with the shape `config` requires (GGUFError naming the tensor otherwise): the
        kernels below read exactly these shapes, so a malformed file is refused here, not read out of bounds."""
        self.config = config
        self._gguf = gguf
        c = config
        D, F, V = c.n_embd, c.n_ff, c.n_vocab
        q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        w = Weights(gguf)
        biased = c.arch == "qwen2"  # Q/K/V biases: required there (as in llama.cpp), absent in llama
        embd = w.info("token_embd.weight", (D, V))
        self.tok_embd_type = embd.ggml_type
        self.tok_embd = w.rows("token_embd.weight", embd, V)  # (V, D) raw blocks
        self.layers = [
            Layer(
                attn_norm=w.vector(f"blk.{i}.attn_norm.weight", D),
                wq=w.matrix(f"blk.{i}.attn_q.weight", q_dim, D),
                wk=w.matrix(f"blk.{i}.attn_k.weight", kv_dim, D),
                wv=w.matrix(f"blk.{i}.attn_v.weight", kv_dim, D),
                bq=w.vector(f"blk.{i}.attn_q.bias", q_dim, required=biased),
                bk=w.vector(f"blk.{i}.attn_k.bias", kv_dim, required=biased),
                bv=w.vector(f"blk.{i}.attn_v.bias", kv_dim, required=biased),
                wo=w.matrix(f"blk.{i}.attn_output.weight", D, q_dim),
                ffn_norm=w.vector(f"blk.{i}.ffn_norm.weight", D),
                w_gate=w.matrix(f"blk.{i}.ffn_gate.weight", F, D),
                w_up=w.matrix(f"blk.{i}.ffn_up.weight", F, D),
                w_down=w.matrix(f"blk.{i}.ffn_down.weight", D, F),
            )
            for i in range(c.n_layers)
        ]
        self.output_norm = w.vector("output_norm.weight", D)
        # tied embeddings: no output.weight means the token table doubles as the output projection
        self.output = w.matrix("output.weight" if w.has("output.weight") else "token_embd.weight", V, D)
        # Llama 3.1 long-context factors, one per rotated pair
        self.rope_freq_factors = w.vector("rope_freqs.weight", c.n_rot // 2, required=False)
        if self.rope_freq_factors is not None and not (
                np.isfinite(self.rope_freq_factors).all() and (self.rope_freq_factors > 0).all()):
            raise GGUFError("tensor rope_freqs.weight: every factor must be a finite number > 0")
        w.check_all_used(f"{c.arch} with {c.n_layers} layers")
        self.n_vocab = self.output.n_rows
        self.attn_scale = 1.0 / math.sqrt(config.head_dim)

    @property
    def fingerprint(self) -> str:
        """Identifies the weights a saved KV state belongs to (architecture, shape, name, file size)."""
        c, g = self.config, self._gguf
        return (f"{c.arch}/{c.n_layers}x{c.n_embd}/{self.n_vocab}/{g.get('general.name', '')}/"
                f"{g.path.stat().st_size}")

    def _non_finite(self) -> NonFiniteError:
        return NonFiniteError(f"{self._gguf.path.name}: the forward pass produced NaN or infinite values "
                              "(the file's weights or scales are corrupt)")

    def new_pool(self, n_tokens: int, kv_type: str = "f32", block_tokens: int = BLOCK_TOKENS) -> KVPool:
        """A KV pool for n_tokens cached positions in all (plus one block of copy-on-write slack)."""
        c = self.config
        return KVPool(c.n_layers, c.n_kv_heads, c.head_dim, -(-n_tokens // block_tokens) + 1, block_tokens, kv_type)

    def new_cache(self, n_ctx: int, kv_type: str = "f32") -> KVCache:
        """One sequence in a pool of its own."""
        return KVCache(self.new_pool(n_ctx, kv_type), n_ctx)

    def rotate(self, x: np.ndarray, positions: np.ndarray) -> None:
        """Apply RoPE in place to x: (T, heads, hd) at the given (T,) positions (may be negative deltas)."""
        c = self.config
        cos, sin = rope_tables(positions, c.n_rot, c.rope_base, c.rope_freq_scale, self.rope_freq_factors)
        rope(x, cos, sin, c.rope_style == "neox")

    def shift_keys(self, keys: np.ndarray, delta: int) -> None:
        """Re-rotate cached keys (T, H_kv, hd) by delta positions: the context-shift hook of KVCache."""
        self.rotate(keys, np.full(keys.shape[0], delta))

    def forward(self, tokens: np.ndarray, cache: KVCache, logits: str | None = "last") -> np.ndarray | None:
        """Run tokens at positions cache.n.. of one sequence; see forward_batch."""
        return self.forward_batch([cache], [tokens], logits)

    def forward_batch(self, caches: list[KVCache], token_lists: list, logits: str | None = "last") -> np.ndarray | None:
        """Run each sequence's tokens at its next positions, all sequences through each weight at once,
        and append them to the caches (which share one pool).

        Returns float32 logits: (ΣT, V) for logits="all", (B, V) of each sequence's last token for "last",
        None for None (a prefill chunk whose logits nobody reads skips the vocabulary projection).
        NonFiniteError when NaN/inf weights or scales poison the computation (the tokens are not committed).
        """
        try:
            return self._forward_batch(caches, token_lists, logits)
        except (ZeroDivisionError, SystemError):  # numba kernels dividing by inf/NaN-derived zeros
            raise self._non_finite() from None

    def _forward_batch(self, caches: list[KVCache], token_lists: list, logits: str | None) -> np.ndarray | None:
        c = self.config
        H, H_kv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        runs = [len(t) for t in token_lists]  # tokens per sequence
        pool = caches[0].pool
        if min(runs) == 0 or any(cache.pool is not pool for cache in caches):
            raise ValueError("every sequence of a batch needs tokens, and all must share one KV pool")
        for cache, n in zip(caches, runs):
            cache.prepare(n)
        tokens = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_lists])  # (T,)
        seq = np.repeat(np.arange(len(caches)), runs)  # (T,) sequence of each row
        pos = np.concatenate([np.arange(cache.n, cache.n + n) for cache, n in zip(caches, runs)])  # (T,)
        n_tok = len(tokens)
        tables = np.zeros((len(caches), max(len(cache.blocks) for cache in caches)), np.int32)  # (B, blocks)
        for b, cache in enumerate(caches):
            tables[b, :len(cache.blocks)] = cache.blocks
        blk, slot = tables[seq, pos // pool.block_tokens], pos % pool.block_tokens  # (T,) where each row goes
        # a few tokens per sequence take decode's numerics even for float weights (quantized ones always do:
        # integer rows equal one-token matvecs), so verifying drafts never changes a sequence's logits
        decode = max(runs) <= DECODE_NUMERICS_MAX_TOKENS
        cos, sin = rope_tables(pos, c.n_rot, c.rope_base, c.rope_freq_scale, self.rope_freq_factors)
        neox = c.rope_style == "neox"
        code = pool.code

        x = embed_rows(self.tok_embd, self.tok_embd_type, tokens,
                       np.empty((n_tok, c.n_embd), dtype=np.float32))  # (T, D) residual stream
        h = np.empty_like(x)  # (T, D) normed input of each sublayer
        n_act = hd if pool.qtype.activation else 0  # queries quantized as the key type's dot wants them
        q_act = (np.empty((n_tok, H, n_act), np.int8), np.empty((n_tok, H, n_act // 32), np.float32),
                 np.empty((n_tok, H, n_act // 16), np.int16))
        scores = np.empty((n_tok, H, int(pos.max()) + 1), np.float32)  # (T, H, S) attention weights
        v_row = np.empty((n_tok, H, hd), np.float32)  # (T, H, hd) a dequantized value row per task
        attn = np.empty((n_tok, H, hd), np.float32)  # (T, H, hd)

        for i, L in enumerate(self.layers):
            # attention
            rms_norm(x, L.attn_norm, c.rms_eps, h)
            q = _linear(L.wq, h, L.bq, decode).reshape(n_tok, H, hd)  # (T, H, hd)
            k = _linear(L.wk, h, L.bk, decode).reshape(n_tok, H_kv, hd)  # (T, H_kv, hd)
            v = _linear(L.wv, h, L.bv, decode).reshape(n_tok, H_kv, hd)  # (T, H_kv, hd)
            rope(q, cos, sin, neox)
            rope(k, cos, sin, neox)
            store_rows(code, pool.k[i], pool.v[i], blk, slot, k, v)
            attend(code, q, pool.k[i], pool.v[i], tables, seq, pos, np.float32(self.attn_scale), q_act, scores,
                   v_row, attn)
            x += _linear(L.wo, attn.reshape(n_tok, H * hd), None, decode)

            # feed-forward (SwiGLU)
            rms_norm(x, L.ffn_norm, c.rms_eps, h)
            gate = _linear(L.w_gate, h, None, decode)  # (T, F)
            up = _linear(L.w_up, h, None, decode)  # (T, F)
            x += _linear(L.w_down, swiglu(gate, up, gate), None, decode)

        out = None
        if logits is not None:
            if logits == "last":
                x = x[np.cumsum(runs) - 1]  # (B, D)
            rms_norm(x, self.output_norm, c.rms_eps, x)
            out = _linear(self.output, x, None, decode)  # (T or B, V)
        # NaN/inf weights or scales surface here; refused before the tokens count as cached
        if not np.isfinite(x).all() or (out is not None and not np.isfinite(out).all()):
            raise self._non_finite()
        for cache, t in zip(caches, token_lists):
            cache.commit(t)
        return out


def _linear(w: QMatrix, x: np.ndarray, bias: np.ndarray | None, decode: bool) -> np.ndarray:
    """x (T, in) → (T, out): matvec for one token, decode-identical integer matmul for decode steps, else
    whichever matmul is faster."""
    n_tok = x.shape[0]
    if n_tok == 1:
        y = w.matvec(x[0])[None]
    elif decode:
        y = w.matmul_integer(x)
    else:
        y = w.matmul(x)
    if bias is not None:
        y += bias
    return y
