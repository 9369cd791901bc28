"""The forward pass of every supported architecture, on quantized weights.

One block serves them all: llama's pre-norm attention + gated FFN, with the differences each architecture
declares in gguf_runtime/archs/ (QK-norm, post-norms, GeGLU, embedding scale, sliding windows, soft-caps)
taken from the weights and hyperparameters it loaded, never from its name.

Weights stay in the memory-mapped file: every matrix is a QMatrix over its raw GGUF blocks. One call runs the
next tokens of one or more sequences (a batched decode step, a prefill chunk, a speculative verify), each
at its cache's next positions, through every weight once. No sampling, tokenizer or I/O in here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .config import ModelConfig
from .errors import NonFiniteError
from .fused import FusedLayers
from .gguf_file import GGUFError, GGUFFile
from .attention import attend, store_rows
from .kv import BLOCK_TOKENS, ForwardBatch, KVPool, sliding_blocks_per_sequence
from .ops import gated_activation, rms_norm, rope, rope_tables, softcap
from .quants import QMatrix, embed_rows
from .weights import Weights

# Every row of a forward pass gets the numerics of decoding it alone: quantized weights always go through the
# integer kernels (each row equals a one-token matvec) and attention runs per row over the cache, so
# batching, prompt chunking, prefix reuse and speculative verification never change a sequence's logits.
# Float weights (F32/F16) take BLAS above this many tokens per sequence, keeping that exactness for a
# verify of up to 16 drafts.
DECODE_NUMERICS_MAX_TOKENS = 17


@dataclass
class Experts:
    """A mixture-of-experts FFN. Each expert is a QMatrix view of its slice of the 3-D GGUF tensor, so a
    token reads only the rows of the experts the router picked for it."""
    router: QMatrix  # (E, D) ffn_gate_inp
    gate: list[QMatrix]  # E x (F, D)
    up: list[QMatrix]  # E x (F, D)
    down: list[QMatrix]  # E x (D, F)
    n_used: int  # experts per token


@dataclass
class Layer:
    attn_norm: np.ndarray | None  # (D,) none without pre-norms (olmo2)
    wq: QMatrix  # (H·hd, D)
    wk: QMatrix  # (H_kv·hd, D)
    wv: QMatrix  # (H_kv·hd, D)
    bq: np.ndarray | None  # (H·hd,) qwen2 only
    bk: np.ndarray | None  # (H_kv·hd,)
    bv: np.ndarray | None  # (H_kv·hd,)
    q_norm: np.ndarray | None  # (hd,) per head or (H·hd,) whole projection; none without QK-norm
    k_norm: np.ndarray | None  # (hd,) or (H_kv·hd,)
    wo: QMatrix  # (D, H·hd)
    post_attn_norm: np.ndarray | None  # (D,) post-norm architectures only
    ffn_norm: np.ndarray | None  # (D,)
    w_gate: QMatrix | None  # (F, D) dense FFN
    w_up: QMatrix | None  # (F, D)
    w_down: QMatrix | None  # (D, F)
    experts: Experts | None  # a mixture-of-experts FFN instead
    post_ffn_norm: np.ndarray | None  # (D,)
    window: int  # positions this layer attends over; 0: all
    rope: int  # index of its RoPE (base, scale) in Model.ropes


class Model:
    def __init__(self, gguf: GGUFFile, config: ModelConfig):
        """Take every tensor with the shape `config` requires (GGUFError naming the tensor otherwise): the
        kernels below read exactly these shapes, so a malformed file is refused here, not read out of bounds."""
        self.config = config
        self._gguf = gguf
        c, spec = config, config.spec
        H, H_kv, hd, D, V = c.n_heads, c.n_kv_heads, c.head_dim, c.n_embd, c.n_vocab
        q_norm_size, k_norm_size = {"head": (hd, hd), "full": (H * hd, H_kv * hd), None: (0, 0)}[spec.qk_norm]
        self.ropes = sorted({c.layer_rope(i) for i in range(c.n_layers)})  # distinct (base, freq_scale)
        w = Weights(gguf)

        def split(fused: str, parts: dict[str, int], cols: int, separate: list[str]) -> dict[str, QMatrix]:
            """Matrices stored as one tensor (phi3's attn_qkv, its gate+up ffn_up), as zero-copy views of its
            row ranges, or the separate tensors where the file has those instead."""
            if not w.has(fused):
                return {key: w.matrix(name, rows, cols) for (key, rows), name in zip(parts.items(), separate)}
            whole = w.matrix(fused, sum(parts.values()), cols)
            views, start = {}, 0
            for key, rows in parts.items():
                views[key] = QMatrix(whole.data[start:start + rows], whole.ggml_type, f"{fused}[{key}]")
                start += rows
            return views

        def experts(name: str, rows: int, cols: int) -> list[QMatrix]:
            info = w.info(name, (cols, rows, c.n_expert))
            data = gguf.tensor_data(name)  # (E, rows, row bytes or cols)
            return [QMatrix(data[e], info.ggml_type, f"{name}[{e}]") for e in range(c.n_expert)]

        def norm(name: str, size: int, present: bool = True) -> np.ndarray | None:
            return w.vector(name, size) if present else None

        embd = w.info("token_embd.weight", (D, V))
        self.tok_embd_type = embd.ggml_type
        self.tok_embd = w.rows("token_embd.weight", embd, V)  # (V, D) raw blocks
        self.layers = [
            Layer(
                attn_norm=norm(f"blk.{i}.attn_norm.weight", D, spec.pre_norms),
                **split(f"blk.{i}.attn_qkv.weight", {"wq": H * hd, "wk": H_kv * hd, "wv": H_kv * hd}, D,
                        [f"blk.{i}.attn_{p}.weight" for p in "qkv"]),
                bq=w.vector(f"blk.{i}.attn_q.bias", H * hd, required=spec.qkv_bias),
                bk=w.vector(f"blk.{i}.attn_k.bias", H_kv * hd, required=spec.qkv_bias),
                bv=w.vector(f"blk.{i}.attn_v.bias", H_kv * hd, required=spec.qkv_bias),
                q_norm=norm(f"blk.{i}.attn_q_norm.weight", q_norm_size, spec.qk_norm is not None),
                k_norm=norm(f"blk.{i}.attn_k_norm.weight", k_norm_size, spec.qk_norm is not None),
                wo=w.matrix(f"blk.{i}.attn_output.weight", D, H * hd),
                post_attn_norm=norm(f"blk.{i}.post_attention_norm.weight", D, spec.post_norms),
                ffn_norm=norm(f"blk.{i}.ffn_norm.weight", D, spec.pre_norms),
                **({"w_gate": None, "w_up": None} if c.n_expert else
                   split(f"blk.{i}.ffn_up.weight", {"w_gate": c.n_ff, "w_up": c.n_ff}, D,
                         [f"blk.{i}.ffn_gate.weight", f"blk.{i}.ffn_up.weight"]) if spec.fused_gate_up else
                   {"w_gate": w.matrix(f"blk.{i}.ffn_gate.weight", c.n_ff, D),
                    "w_up": w.matrix(f"blk.{i}.ffn_up.weight", c.n_ff, D)}),
                w_down=None if c.n_expert else w.matrix(f"blk.{i}.ffn_down.weight", D, c.n_ff),
                experts=Experts(
                    router=w.matrix(f"blk.{i}.ffn_gate_inp.weight", c.n_expert, D),
                    gate=experts(f"blk.{i}.ffn_gate_exps.weight", c.n_ff, D),
                    up=experts(f"blk.{i}.ffn_up_exps.weight", c.n_ff, D),
                    down=experts(f"blk.{i}.ffn_down_exps.weight", D, c.n_ff),
                    n_used=c.n_expert_used,
                ) if c.n_expert else None,
                post_ffn_norm=norm(f"blk.{i}.post_ffw_norm.weight", D, spec.post_norms),
                window=c.layer_window(i),
                rope=self.ropes.index(c.layer_rope(i)),
            )
            for i in range(c.n_layers)
        ]
        self.output_norm = w.vector("output_norm.weight", D)
        # tied embeddings: no output.weight means the token table doubles as the output projection
        self.output = w.matrix("output.weight" if w.has("output.weight") else "token_embd.weight", V, D)
        # per-dim RoPE frequency divisors: Llama 3.1's rope_freqs, or LongRoPE's pair (phi3), long for contexts
        # past the original one, short otherwise (as llama.cpp picks them, by context size)
        self.rope_freq_factors = w.vector("rope_freqs.weight", c.n_rot // 2, required=False)
        self.rope_factors_long = w.vector("rope_factors_long.weight", c.n_rot // 2, required=False)
        self.rope_factors_short = w.vector("rope_factors_short.weight", c.n_rot // 2, required=False)
        for name, factors in (("rope_freqs", self.rope_freq_factors), ("rope_factors_long", self.rope_factors_long),
                              ("rope_factors_short", self.rope_factors_short)):
            if factors is not None and not (factors > 0).all():
                raise GGUFError(f"tensor {name}.weight: every factor must be a finite number > 0")
        w.check_all_used(f"{c.arch} with {c.n_layers} layers")
        self.n_vocab = self.output.n_rows
        self.gated_activation = gated_activation(spec.activation)  # (gate, up, out) -> act(gate) · up
        self.fused = FusedLayers(self)  # decode steps: all layers in one parallel region per run of types

    @property
    def fingerprint(self) -> str:
        """Identifies the weights a saved KV state belongs to (architecture, shape, name, file size)."""
        c, g = self.config, self._gguf
        return (f"{c.arch}/{c.n_layers}x{c.n_embd}/{self.n_vocab}/{g.get('general.name', '')}/"
                f"{g.path.stat().st_size}")

    def _non_finite(self) -> NonFiniteError:
        return NonFiniteError(f"{self._gguf.path.name}: the forward pass produced NaN or infinite values "
                              "(the file's weights or scales are corrupt)")

    def new_pool(self, n_tokens: int, kv_type: str = "f32", block_tokens: int = BLOCK_TOKENS,
                 max_seqs: int | None = None, max_rows: int | None = None) -> KVPool:
        """A KV pool for n_tokens cached positions in all (plus one block of copy-on-write slack).

        Given the most sequences that run at once and the most rows one of them runs per pass, the
        sliding-window layers get a pool of their own holding only their windows, where that is smaller
        (llama.cpp's iSWA cache); without them (llama.cpp's swa_full) they keep every position."""
        c = self.config
        n_blocks = -(-n_tokens // block_tokens) + 1
        windows = [L.window for L in self.layers]
        sliding = None
        if max_seqs is not None and max_rows is not None and len({w for w in windows if w}) == 1:
            sliding = max_seqs * sliding_blocks_per_sequence(max(windows), max_rows, block_tokens)
        if sliding is None or sliding >= n_blocks:
            return KVPool(c.n_layers, c.n_kv_heads, c.head_dim, n_blocks, block_tokens, kv_type, windows)
        return KVPool(c.n_layers, c.n_kv_heads, c.head_dim, n_blocks, block_tokens, kv_type, windows, sliding,
                      max_rows)

    def rope_tables(self, positions: np.ndarray, n_ctx: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """cos, sin (T, n_rot/2) at the given (T,) positions (may be negative deltas) for each of self.ropes,
        in a context of n_ctx positions per sequence."""
        c = self.config
        factors = self.rope_freq_factors
        if factors is None and self.rope_factors_long is not None:
            factors = self.rope_factors_long if n_ctx > c.rope_orig_ctx else self.rope_factors_short
        return [rope_tables(positions, c.n_rot, base, scale, factors, c.rope_orig_ctx, c.rope_yarn,
                            c.rope_attn_factor)
                for base, scale in self.ropes]

    def shift_keys(self, layer: int, keys: np.ndarray, delta: int, n_ctx: int) -> None:
        """Re-rotate one layer's cached keys (T, H_kv, hd) by delta positions: the context-shift hook of
        KVCache (layers may differ in RoPE base)."""
        cos, sin = self.rope_tables(np.full(keys.shape[0], delta), n_ctx)[self.layers[layer].rope]
        rope(keys, cos, sin, self.config.rope_style == "neox")

    def forward(self, batch: ForwardBatch, logits: str | None = "last") -> np.ndarray | None:
        """Run a batch of rows (the next tokens of one or more sequences, see kv/batch.py), all sequences
        through each weight at once, storing every row's K/V where the batch says.

        Returns float32 logits: (T, V) for logits="all", (B, V) of each sequence's last token for "last",
        (R, V) of the given rows for an int array of R row indices (a pass mixing decode rows with prompt
        chunks), None for None (a prefill chunk whose logits nobody reads skips the vocabulary projection);
        "hidden" returns the final-normed hidden states (T, D) instead (embeddings).
        NonFiniteError when NaN/inf weights or scales poison the computation (the tokens are not committed).
        """
        try:
            return self._forward(batch, logits)
        except (ZeroDivisionError, SystemError):  # numba kernels dividing by inf/NaN-derived zeros
            raise self._non_finite() from None

    def _forward(self, batch: ForwardBatch, logits: str | None) -> np.ndarray | None:
        c = self.config
        n_tok = len(batch.tokens)
        # the rows of a sequence running a few tokens take decode's numerics even for float weights (quantized
        # ones always do: integer rows equal one-token matvecs), so verifying drafts, or decoding beside
        # another sequence's prompt chunk, never changes a sequence's logits
        decode = RowNumerics.of(batch.seq, batch.runs)
        ropes = self.rope_tables(batch.positions, batch.n_ctx)  # per RoPE of the model: cos, sin (T, n_rot/2)
        eps = c.rms_eps

        x = embed_rows(self.tok_embd, self.tok_embd_type, batch.tokens,
                       np.empty((n_tok, c.n_embd), dtype=np.float32))  # (T, D) residual stream
        x *= np.float32(c.embedding_scale)
        out = None
        hidden = isinstance(logits, str) and logits == "hidden"
        rows = None  # the rows whose logits are returned: (B,) for "last", (T,) for "all", (R,) as given
        if isinstance(logits, np.ndarray):
            rows = logits.astype(np.int64)
        elif logits in ("last", "all"):
            rows = batch.last_rows if logits == "last" else np.arange(n_tok)
        if self.fused.serves(n_tok, decode is True, numba.get_num_threads(), batch.pool.code):  # a region per layer run
            out = self.fused.run(x, batch, np.stack([cs[0] for cs in ropes]), np.stack([cs[1] for cs in ropes]),
                                 rows)  # the logits in the same region
        else:
            self._layer_by_layer(x, batch, decode, ropes)

        if logits is not None:
            if out is None:
                if rows is not None:
                    x = x[rows]  # (R, D)
                rms_norm(x, self.output_norm, eps, x)
                # each sequence's logit rows as it alone would get them: decode numerics for a few per sequence
                exact = True if rows is None else RowNumerics.of(batch.seq[rows], np.bincount(batch.seq[rows]))
                out = x if hidden else _linear(self.output, x, None, exact)  # (T, D) or (R, V)
            if c.final_softcap and not hidden:
                out = softcap(out, np.float32(c.final_softcap))
        # NaN/inf weights or scales surface here; refused before the tokens count as cached
        if not np.isfinite(x).all() or (out is not None and not np.isfinite(out).all()):
            raise self._non_finite()
        return out

    def _layer_by_layer(self, x: np.ndarray, batch: ForwardBatch, decode: "bool | RowNumerics", ropes: list) -> None:
        """Every layer, one op (one parallel kernel) at a time, on the residual stream x (T, D) in place:
        for what fused.py does not serve (prefill chunks, mixture-of-experts layers)."""
        c = self.config
        H, H_kv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        pool, pos, seq = batch.pool, batch.positions, batch.seq
        n_tok = len(batch.tokens)
        neox = c.rope_style == "neox"
        code = pool.code
        eps = c.rms_eps
        h = np.empty_like(x)  # (T, D) normed input of each sublayer
        n_act = hd if pool.qtype.activation else 0  # queries quantized as the key type's dot wants them
        q_act = (np.empty((n_tok, H, n_act), np.int8), np.empty((n_tok, H, n_act // 32), np.float32),
                 np.empty((n_tok, H, n_act // 16), np.int16))
        attn = np.empty((n_tok, H, hd), np.float32)  # (T, H, hd)

        for i, L in enumerate(self.layers):
            # attention
            a = _normed(x, L.attn_norm, eps, h)  # (T, D)
            q = _linear(L.wq, a, L.bq, decode)  # (T, H·hd)
            k = _linear(L.wk, a, L.bk, decode)  # (T, H_kv·hd)
            v = _linear(L.wv, a, L.bv, decode).reshape(n_tok, H_kv, hd)  # (T, H_kv, hd)
            _norm_groups(q, L.q_norm, eps)
            _norm_groups(k, L.k_norm, eps)
            q, k = q.reshape(n_tok, H, hd), k.reshape(n_tok, H_kv, hd)  # (T, H, hd), (T, H_kv, hd)
            cos, sin = ropes[L.rope]
            rope(q, cos, sin, neox)
            rope(k, cos, sin, neox)
            K, V, where = batch.layer(i)  # this layer's blocks; where the rows go, the block tables to read
            store_rows(code, K, V, where.blocks, where.slots, k, v)
            attend(code, q, K, V, where.tables, seq, pos, np.float32(c.attn_scale), L.window,
                   np.float32(c.attn_softcap), q_act, attn)
            o = _linear(L.wo, attn.reshape(n_tok, H * hd), None, decode)  # (T, D)
            x += _normed(o, L.post_attn_norm, eps, o)

            # feed-forward: down(act(gate) · up)
            f = _normed(x, L.ffn_norm, eps, h)  # (T, D)
            if L.experts is None:
                gate = _linear(L.w_gate, f, None, decode)  # (T, F)
                up = _linear(L.w_up, f, None, decode)  # (T, F)
                o = _linear(L.w_down, self.gated_activation(gate, up, gate), None, decode)  # (T, D)
            else:
                o = _experts_ffn(L.experts, f, self.gated_activation, decode)  # (T, D)
            x += _normed(o, L.post_ffn_norm, eps, o)


def _experts_ffn(ex: Experts, x: np.ndarray, activation, decode: "bool | RowNumerics") -> np.ndarray:
    """Mixture of experts as llama.cpp computes it (softmax gating, weights renormalised over the chosen
    experts, outputs summed in the order of choice). Tokens are grouped by expert: one matmul per expert
    over the tokens that chose it, so a decode step reads only its chosen experts' weights.   x: (T, D)"""
    n_tok, k = x.shape[0], ex.n_used
    logits = _linear(ex.router, x, None, decode)  # (T, E)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (T, k) best first
    weights = np.take_along_axis(probs, chosen, axis=1)  # (T, k)
    weights /= weights.sum(axis=1, keepdims=True)
    y = np.empty((n_tok, k, ex.down[0].n_rows), np.float32)  # (T, k, D) each chosen expert's output
    for e in np.unique(chosen):
        rows, slots = np.nonzero(chosen == e)
        xe = np.ascontiguousarray(x[rows])  # (n_e, D)
        exact = decode if decode is True else decode.subset(rows)
        gate = _linear(ex.gate[e], xe, None, exact)  # (n_e, F)
        up = _linear(ex.up[e], xe, None, exact)  # (n_e, F)
        y[rows, slots] = _linear(ex.down[e], activation(gate, up, gate), None, exact) * weights[rows, slots, None]
    out = y[:, 0].copy()  # (T, D)
    for j in range(1, k):
        out += y[:, j]
    return out


def _normed(x: np.ndarray, weight: np.ndarray | None, eps: float, out: np.ndarray) -> np.ndarray:
    """RMSNorm of x's rows into out, or x itself where the architecture has no such norm."""
    return x if weight is None else rms_norm(x, weight, eps, out)


def _norm_groups(y: np.ndarray, weight: np.ndarray | None, eps: float) -> None:
    """QK-norm in place: RMSNorm over each group of weight.size values of y (T, n), a head or the whole row."""
    if weight is not None:
        groups = y.reshape(-1, weight.size)
        rms_norm(groups, weight, eps, groups)


class RowNumerics:
    """How the rows of a pass that are not all decode rows are computed, so that each sequence's rows get
    what its own pass would give them: decode numerics (the integer kernels, row by row) for sequences that
    run a few rows, and each other sequence's rows by the matmul its run alone would take, over its rows
    alone (BLAS rows depend on the rows beside them; integer rows do not)."""

    def __init__(self, owner: np.ndarray):
        self.owner = owner  # (T,) -1 for a decode row, else the row's sequence
        self.exact = np.flatnonzero(owner < 0)  # the decode rows
        self.groups = [np.flatnonzero(owner == g) for g in np.unique(owner[owner >= 0])]  # rows per sequence

    @classmethod
    def of(cls, seq: np.ndarray, runs) -> "RowNumerics | bool":
        """True where every row takes decode numerics, for rows of sequences `seq` (T,) with `runs` rows each."""
        short = np.asarray(runs) <= DECODE_NUMERICS_MAX_TOKENS
        return True if short.all() else cls(np.where(short[seq], -1, seq))

    def subset(self, rows: np.ndarray) -> "RowNumerics":
        return RowNumerics(self.owner[rows])


def _linear(w: QMatrix, x: np.ndarray, bias: np.ndarray | None, decode: "bool | RowNumerics") -> np.ndarray:
    """x (T, in) → (T, out): matvec for one token, decode-identical integer matmul for decode rows (all with
    decode=True), whichever matmul is faster for the other sequences' rows (see RowNumerics)."""
    n_tok = x.shape[0]
    parts = None if decode is True else decode.groups
    if parts is not None and len(parts) == 1 and not decode.exact.size:
        y = w.matmul(x)  # one sequence's rows
    elif parts is not None and any(w.strategy(len(rows)) == "tiled" for rows in parts):
        y = np.empty((n_tok, w.n_rows), np.float32)
        for rows in parts:
            y[rows] = w.matmul(np.ascontiguousarray(x[rows]))
        if decode.exact.size:
            y[decode.exact] = w.matmul_integer(np.ascontiguousarray(x[decode.exact]))
    elif n_tok == 1:
        y = w.matvec(x[0])[None]
    else:  # every row by the integer kernels: each row as its own matvec gives it
        y = w.matmul_integer(x)
    if bias is not None:
        y += bias
    return y
