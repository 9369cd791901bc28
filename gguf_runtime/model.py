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
from .kv import BLOCK_TOKENS, ForwardBatch, KVPool
from .ops import rms_norm, rope, rope_tables, swiglu
from .quants import QMatrix, embed_rows

# Every row of a forward pass gets the numerics of decoding it alone: quantized weights always go through the
# integer kernels (each row equals a one-token matvec) and attention runs per row over the cache, so
# batching, prompt chunking, prefix reuse and speculative verification never change a sequence's logits.
# Float weights (F32/F16) take BLAS above this many tokens per sequence, keeping that exactness for a
# verify of up to 16 drafts.
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

    @property
    def fingerprint(self) -> str:
        """Identifies the weights a saved KV state belongs to (architecture, shape, name, file size)."""
        c, g = self.config, self._gguf
        return (f"{c.arch}/{c.n_layers}x{c.n_embd}/{self.n_vocab}/{g.get('general.name', '')}/"
                f"{g.path.stat().st_size}")

    def _tensor(self, name: str):
        info = self._gguf.tensors.get(name)
        if info is None:
            raise GGUFError(f"tensor {name} is missing from {self._gguf.path.name}")
        return info

    def new_pool(self, n_tokens: int, kv_type: str = "f32", block_tokens: int = BLOCK_TOKENS) -> KVPool:
        """A KV pool for n_tokens cached positions in all (plus one block of copy-on-write slack)."""
        c = self.config
        return KVPool(c.n_layers, c.n_kv_heads, c.head_dim, -(-n_tokens // block_tokens) + 1, block_tokens, kv_type)

    def rotate(self, x: np.ndarray, positions: np.ndarray) -> None:
        """Apply RoPE in place to x: (T, heads, hd) at the given (T,) positions (may be negative deltas)."""
        c = self.config
        cos, sin = rope_tables(positions, c.n_rot, c.rope_base, c.rope_freq_scale, self.rope_freq_factors)
        rope(x, cos, sin, c.rope_style == "neox")

    def shift_keys(self, keys: np.ndarray, delta: int) -> None:
        """Re-rotate cached keys (T, H_kv, hd) by delta positions: the context-shift hook of KVCache."""
        self.rotate(keys, np.full(keys.shape[0], delta))

    def forward(self, batch: ForwardBatch, logits: str | None = "last") -> np.ndarray | None:
        """Run a batch of rows (the next tokens of one or more sequences, see kv/batch.py), all sequences
        through each weight at once, storing every row's K/V where the batch says.

        Returns float32 logits: (T, V) for logits="all", (B, V) of each sequence's last token for "last",
        None for None (a prefill chunk whose logits nobody reads skips the vocabulary projection).
        """
        c = self.config
        H, H_kv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        pool, tokens, pos, tables, seq = batch.pool, batch.tokens, batch.positions, batch.tables, batch.seq
        blk, slot = batch.blocks, batch.slots  # (T,) where each row's K/V goes
        n_tok = len(tokens)
        # a few tokens per sequence take decode's numerics even for float weights (quantized ones always do:
        # integer rows equal one-token matvecs), so verifying drafts never changes a sequence's logits
        decode = max(batch.runs) <= DECODE_NUMERICS_MAX_TOKENS
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

        if logits is None:
            return None
        if logits == "last":
            x = x[batch.last_rows]  # (B, D)
        rms_norm(x, self.output_norm, c.rms_eps, x)
        return _linear(self.output, x, None, decode)  # (T or B, V)


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
