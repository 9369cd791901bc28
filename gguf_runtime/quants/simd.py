"""Portable SIMD for numba: 256-bit vector values and the few integer dot-product steps the kernels need.

numba's auto-vectoriser does not turn per-block quantized dot products into vector code, so the kernels
spell them out with these intrinsics, written in plain LLVM vector IR (LLVM maps it to AVX2, AVX-512 or
NEON). When numba targets the host CPU and it has AVX2, the multiply-add steps call the x86 instructions
llama.cpp uses: `maddubs` -> vpmaddubsw, `maddubs_s8` -> vpabsb/vpsignb/vpmaddubsw, `madd`/`madd_v` ->
vpmaddwd, `lookup16` -> vpshufb; with F16C (and on every AArch64) halves convert in hardware. On AArch64,
the ARM instructions llama.cpp uses there: `lookup16` -> tbl, and where the target has the dot-product
extension (every Apple M-series) `maddubs`/`maddubs_s8` -> sdot, whose 4-byte sums `madd`/`madd_v` then
scale. Every bound those rely on (no i16 saturation; bytes sdot may read as signed) holds for the callers:
unsigned weights <= 63, or signed ones in [-128, 127], times activations in [-127, 127].

Vector values (`U8x32`, `I16x16`, `I32x8`, `F32x8`) live in registers inside one jitted function; they are
never stored in arrays. Array arguments must be 1-D C-contiguous; offsets are in elements.
"""

from __future__ import annotations

import platform
import re

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.errors import TypingError
from numba.extending import intrinsic, models, register_model

_I8, _I16, _I32, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()


class VectorType(types.Type):
    """A numba type whose value is one LLVM vector."""

    def __init__(self, name: str, lanes: int, element: ir.Type):
        self.llvm_type = ir.VectorType(element, lanes)
        super().__init__(name=name)


@register_model(VectorType)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.llvm_type)


U8x32 = VectorType("U8x32", 32, _I8)    # bytes: unsigned 0..63 for maddubs, signed for maddubs_s8
I16x16 = VectorType("I16x16", 16, _I16)
I32x8 = VectorType("I32x8", 8, _I32)
F32x8 = VectorType("F32x8", 8, _F32)
# What maddubs/maddubs_s8 return and only madd/madd_v read: the partial sums of a 32-byte dot product. With
# sdot they are 8 x i32 sums of 4 products in the same 256 bits; otherwise 16 x i16 sums of 2 (vpmaddubsw's).
ByteDots = VectorType("ByteDots", 16, _I16)

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
_AARCH64 = platform.machine().lower() in ("arm64", "aarch64")
# LLVM CPU names that imply the dot-product extension: Apple A13 and later, so every M-series (macOS on
# Apple Silicon reports a name, not always a feature list).
_DOTPROD_CPU = re.compile(r"apple-(m\d+|a1[3-9])$")


def _target_features() -> dict:
    """The CPU features numba compiles for: NUMBA_CPU_FEATURES if set, else the host's when it targets the
    host (unless NUMBA_CPU_NAME names another CPU, e.g. for a portable cache: then none are assumed).
    CPU-specific instructions are only safe when we know the target has them."""
    if config.CPU_FEATURES is not None:
        return {f[1:]: f[0] == "+" for f in config.CPU_FEATURES.split(",") if f[:1] in ("+", "-")}
    if config.CPU_NAME not in (None, "host"):
        return {}
    return dict(llvm.get_host_cpu_features())


def _target_has_dotprod(features: dict) -> bool:
    if not _AARCH64:
        return False
    if "dotprod" in features:
        return bool(features["dotprod"])
    name = config.CPU_NAME if config.CPU_NAME not in (None, "host") else llvm.get_host_cpu_name()
    return bool(_DOTPROD_CPU.match(name))


_FEATURES = _target_features()
# All read at compile time; tests flip them to exercise the generic IR.
USE_X86_AVX2 = bool(_FEATURES.get("avx2"))
# Hardware half -> float (x86 F16C, every AArch64); elsewhere LLVM would call a runtime helper numba may lack.
USE_NATIVE_F16 = bool(_FEATURES.get("f16c")) or _AARCH64
USE_ARM_NEON = _AARCH64  # tbl: NEON is part of every AArch64
USE_ARM_DOTPROD = _target_has_dotprod(_FEATURES)  # sdot
# vpdpbusd (sums of four u8 x s8 products in one instruction): AVX-VNNI (Intel since Alder Lake) or AVX512-VNNI
# with 256-bit forms (Intel Xeon since Cascade Lake, AMD since Zen 4)
USE_X86_VNNI = USE_X86_AVX2 and (bool(_FEATURES.get("avxvnni")) or (
    bool(_FEATURES.get("avx512vnni")) and bool(_FEATURES.get("avx512vl"))))


# ---------------------------------------------------------------------------------------------- helpers

def _vec(element: ir.Type, values) -> ir.Constant:
    return ir.Constant(ir.VectorType(element, len(values)), list(values))


def _splat(builder, value, vtype: ir.VectorType):
    undef = ir.Constant(vtype, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, _vec(_I32, [0] * vtype.count))


def _pointer(context, builder, array_type, array, offset, pointee: ir.Type):
    """Address of array[offset] as a pointer to `pointee` (any alignment)."""
    ary = context.make_array(array_type)(context, builder, array)
    itemsize = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
    byte_offset = builder.mul(offset, offset.type(itemsize)) if itemsize != 1 else offset
    return cgutils.pointer_add(builder, ary.data, byte_offset, return_type=ir.PointerType(pointee))


def _load(context, builder, array_type, array, offset, vtype):
    return builder.load(_pointer(context, builder, array_type, array, offset, vtype), align=1)


def _check_array(arr, dtypes=None):
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        raise TypingError(f"simd: expected a 1-D C-contiguous array, got {arr}")
    if dtypes is not None and arr.dtype not in dtypes:
        raise TypingError(f"simd: expected an array of {dtypes}, got {arr}")


def _pairwise_add(builder, v, lanes_out: int):
    """(v[0]+v[1], v[2]+v[3], ...) for a vector of 2*lanes_out lanes."""
    undef = ir.Constant(v.type, ir.Undefined)
    even = builder.shuffle_vector(v, undef, _vec(_I32, range(0, 2 * lanes_out, 2)))
    odd = builder.shuffle_vector(v, undef, _vec(_I32, range(1, 2 * lanes_out, 2)))
    return builder.add(even, odd)


def _lane_sum(builder, add, x):
    """The sum of the 8 lanes of x by `add`, as a tree: halves, then quarters, then the last two."""
    half = lambda v, idx: builder.shuffle_vector(v, v, _vec(_I32, idx))  # noqa: E731
    s4 = add(half(x, [0, 1, 2, 3]), half(x, [4, 5, 6, 7]))
    s2 = add(half(s4, [0, 1]), half(s4, [2, 3]))
    return add(builder.extract_element(s2, ir.Constant(_I32, 0)), builder.extract_element(s2, ir.Constant(_I32, 1)))


def _call(builder, name: str, ret: ir.Type, args):
    """A call to the LLVM target intrinsic `name` (x86 or AArch64 instructions)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _halves(builder, v):
    """The low and high 128-bit halves of a 256-bit vector (NEON registers are 128 bits)."""
    n = v.type.count // 2
    return (builder.shuffle_vector(v, v, _vec(_I32, range(n))),
            builder.shuffle_vector(v, v, _vec(_I32, range(n, 2 * n))))


def _concat(builder, lo, hi):
    return builder.shuffle_vector(lo, hi, _vec(_I32, range(2 * lo.type.count)))


def _sdot(builder, a, b):
    """8 x i32: lane k = sum of a[4k+i] * b[4k+i] over i < 4, the bytes taken as signed (two sdot)."""
    i32x4 = ir.VectorType(_I32, 4)
    zero = ir.Constant(i32x4, None)
    sums = [_call(builder, "llvm.aarch64.neon.sdot.v4i32.v16i8", i32x4, [zero, ha, hb])
            for ha, hb in zip(_halves(builder, a), _halves(builder, b))]
    return builder.bitcast(_concat(builder, *sums), ByteDots.llvm_type)


_BYTES = (types.uint8, types.int8)
_CONTRACT = ("contract",)  # let LLVM fuse a*b + c into one FMA where the target has it


# ------------------------------------------------------------------------------------------- byte loads

@intrinsic
def load_u8x32(typingctx, arr, off):
    """32 bytes arr[off:off+32]."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig.args[0], args[0], args[1], U8x32.llvm_type)
    return U8x32(arr, types.intp), codegen


@intrinsic
def load_nibbles(typingctx, arr, off):
    """16 bytes arr[off:off+16] -> their 16 low nibbles followed by their 16 high nibbles."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        v16 = ir.VectorType(_I8, 16)
        q = _load(context, builder, sig.args[0], args[0], args[1], v16)
        lo = builder.and_(q, _vec(_I8, [15] * 16))
        hi = builder.lshr(q, _vec(_I8, [4] * 16))
        return builder.shuffle_vector(lo, hi, _vec(_I32, range(32)))
    return U8x32(arr, types.intp), codegen


@intrinsic
def load_bits(typingctx, arr, off):
    """The 32 bits of the little-endian uint32 at arr[off:off+4] -> 32 bytes, each 0 or 1."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        v4 = ir.VectorType(_I8, 4)
        b = _load(context, builder, sig.args[0], args[0], args[1], v4)
        spread = builder.shuffle_vector(b, ir.Constant(v4, ir.Undefined), _vec(_I32, [i // 8 for i in range(32)]))
        masked = builder.and_(spread, _vec(_I8, [1 << (i % 8) for i in range(32)]))
        nonzero = builder.icmp_unsigned("!=", masked, ir.Constant(U8x32.llvm_type, None))
        return builder.zext(nonzero, U8x32.llvm_type)
    return U8x32(arr, types.intp), codegen


# ------------------------------------------------------------------------------------- byte arithmetic

def _lane_op(op):
    def typer(typingctx, v, c):
        if v not in (U8x32, I16x16):
            raise TypingError("simd: expected U8x32 or I16x16")

        def codegen(context, builder, sig, args):
            t = sig.args[0].llvm_type
            return getattr(builder, op)(args[0], _splat(builder, builder.trunc(args[1], t.element), t))
        return v(v, types.intp), codegen
    return typer


# lane-wise with a scalar c, on U8x32 (bytes) or I16x16
vand = intrinsic(_lane_op("and_"))   # v & c
vshr = intrinsic(_lane_op("lshr"))   # v >> c  (logical)
vshl = intrinsic(_lane_op("shl"))    # v << c
vsub = intrinsic(_lane_op("sub"))    # v - c   (wrapping: turns offset-binary q into signed values)


@intrinsic
def vor(typingctx, a, b):
    """a | b."""
    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])
    return U8x32(U8x32, U8x32), codegen


# -------------------------------------------------------------------------------- integer dot products

def _unsigned_times_signed(builder, u, xv, signed):
    """(u', x') with u' unsigned and u' * x' = u * xv per byte: for signed weights (`signed`) x86's sign trick,
    |v| * (x with v's sign), which fits vpmaddubsw's and vpdpbusd's unsigned x signed form (xv avoids -128)."""
    if not signed:
        return u, xv
    t = U8x32.llvm_type
    return _call(builder, "llvm.x86.avx2.pabs.b", t, [u]), _call(builder, "llvm.x86.avx2.psign.b", t, [xv, u])


def _byte_pairs(builder, u, xv, signed):
    """16 x i16 sums of 2 products (vpmaddubsw's form), on x86 or in portable IR."""
    if USE_X86_AVX2:
        return _call(builder, "llvm.x86.avx2.pmadd.ub.sw", I16x16.llvm_type,
                     list(_unsigned_times_signed(builder, u, xv, signed)))
    wide = ir.VectorType(_I16, 32)
    extend = builder.sext if signed else builder.zext
    return _pairwise_add(builder, builder.mul(extend(u, wide), builder.sext(xv, wide)), 16)


def _byte_partials(typingctx, u, x, off, signed):
    """maddubs / maddubs_s8: ByteDots of u times x[off:off+32]."""
    _check_array(x, (types.int8,))

    def codegen(context, builder, sig, args):
        xv = _load(context, builder, sig.args[1], args[1], args[2], U8x32.llvm_type)
        if USE_ARM_DOTPROD:
            return _sdot(builder, args[0], xv)
        return _byte_pairs(builder, args[0], xv, signed)
    return ByteDots(U8x32, x, types.intp), codegen


@intrinsic
def maddubs(typingctx, u, x, off):
    """u (unsigned bytes) times x[off:off+32] (signed bytes), partial sums for `madd`/`madd_v`.

    As vpmaddubsw: 16 x i16, lane i = elements 2i, 2i+1 (lanes 0..7 the first 16 elements, 8..15 the last 16).
    With sdot: 8 x i32, lane k = elements 4k..4k+3 (u must stay below 128, read as signed).
    """
    return _byte_partials(typingctx, u, x, off, False)


@intrinsic
def maddubs_s8(typingctx, v, x, off):
    """v (signed bytes) times x[off:off+32] (signed bytes), partial sums as `maddubs`.

    x must avoid -128 (the activation quantizers give [-127, 127]) so the x86 sign trick cannot overflow.
    """
    return _byte_partials(typingctx, v, x, off, True)


def _byte_quads(typingctx, u, x, off, signed):
    """dot4 / dot4_s8: 8 x i32 sums of 4 products of u and x[off:off+32]."""
    _check_array(x, (types.int8,))

    def codegen(context, builder, sig, args):
        xv = _load(context, builder, sig.args[1], args[1], args[2], U8x32.llvm_type)
        if USE_ARM_DOTPROD:
            return builder.bitcast(_sdot(builder, args[0], xv), I32x8.llvm_type)
        if USE_X86_VNNI:
            i32x8 = I32x8.llvm_type
            a, b = _unsigned_times_signed(builder, args[0], xv, signed)
            return _call(builder, "llvm.x86.avx512.vpdpbusd.256", i32x8,
                         [ir.Constant(i32x8, None), builder.bitcast(a, i32x8), builder.bitcast(b, i32x8)])
        ones = ir.Constant(I16x16.llvm_type, [1] * 16)
        return _madd_wd(builder, _byte_pairs(builder, args[0], xv, signed), ones)
    return I32x8(U8x32, x, types.intp), codegen


@intrinsic
def dot4(typingctx, u, x, off):
    """u (unsigned bytes) . x[off:off+32] (signed bytes) in 8 x i32, lane k = elements 4k..4k+3: the integers
    madd(maddubs(u, x, off), 1, 1) gives, in one instruction where the target has one (x86 VNNI vpdpbusd,
    AArch64 sdot) and in vpmaddubsw + vpmaddwd on plain AVX2."""
    return _byte_quads(typingctx, u, x, off, False)


@intrinsic
def dot4_s8(typingctx, v, x, off):
    """dot4 for signed bytes v: the integers madd(maddubs_s8(v, x, off), 1, 1) gives (x avoids -128)."""
    return _byte_quads(typingctx, v, x, off, True)


def _scale_pair(builder, s0, s1):
    """16 x i16: s0 in lanes 0..7, s1 in lanes 8..15."""
    v16 = I16x16.llvm_type
    a = _splat(builder, builder.trunc(s0, _I16), v16)
    b = _splat(builder, builder.trunc(s1, _I16), v16)
    return builder.shuffle_vector(a, b, _vec(_I32, list(range(8)) + list(range(24, 32))))


def _madd_wd(builder, a, b):
    """a * b lane-wise (16 x i16), adjacent products summed -> 8 x i32 (vpmaddwd)."""
    if USE_X86_AVX2:
        return _call(builder, "llvm.x86.avx2.pmadd.wd", I32x8.llvm_type, [a, b])
    wide = ir.VectorType(_I32, 16)
    return _pairwise_add(builder, builder.mul(builder.sext(a, wide), builder.sext(b, wide)), 8)


def _scale_dots(builder, p, p_type, scales):
    """ByteDots (or plain I16x16) p times 16 x i16 scales -> 8 x i32, as vpmaddwd on the pair sums. The sdot
    form holds sums of 4 bytes, so lane k takes scale 2k: the callers' scales repeat over each 4 bytes."""
    if p_type == ByteDots and USE_ARM_DOTPROD:
        even = builder.shuffle_vector(scales, scales, _vec(_I32, range(0, 16, 2)))
        return builder.mul(builder.bitcast(p, I32x8.llvm_type), builder.sext(even, I32x8.llvm_type))
    return _madd_wd(builder, p, scales)


def _check_dots(p):
    if p not in (ByteDots, I16x16):
        raise TypingError(f"simd: expected maddubs' ByteDots or an I16x16, got {p}")


@intrinsic
def scale_pair(typingctx, s0, s1):
    """16 x i16 with s0 in lanes 0..7 and s1 in lanes 8..15: `madd`'s scales as a vector, for `madd_v`."""
    def codegen(context, builder, sig, args):
        return _scale_pair(builder, args[0], args[1])
    return I16x16(types.intp, types.intp), codegen


@intrinsic
def madd(typingctx, p, s0, s1):
    """maddubs' sums times a scale (s0 for elements 0..15, s1 for 16..31), summed in pairs -> 8 x i32.

    I32x8 lanes 0..3 hold s0 * (sums of elements 0..15) and lanes 4..7 s1 * (16..31), on every path.
    """
    _check_dots(p)

    def codegen(context, builder, sig, args):
        return _scale_dots(builder, args[0], sig.args[0], _scale_pair(builder, args[1], args[2]))
    return I32x8(p, types.intp, types.intp), codegen


@intrinsic
def maddubs_v(typingctx, u, xv):
    """maddubs on two vector values: u (unsigned bytes) times xv (signed bytes), partial sums for madd_v."""
    def codegen(context, builder, sig, args):
        if USE_ARM_DOTPROD:
            return _sdot(builder, args[0], args[1])
        return _byte_pairs(builder, args[0], args[1], False)
    return ByteDots(U8x32, U8x32), codegen


@intrinsic
def dots_add(typingctx, a, b):
    """a + b for two maddubs results (lane-wise, wrapping: the callers bound the sums to fit i16)."""
    _check_dots(a)

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return ByteDots(ByteDots, ByteDots), codegen


def _broadcast_word(dtypes, vtype):
    def typer(typingctx, arr, off):
        """The 4 bytes at arr[off] (element offset) in every 32-bit lane."""
        _check_array(arr, dtypes)

        def codegen(context, builder, sig, args):
            word = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
            return builder.bitcast(_splat(builder, word, I32x8.llvm_type), vtype.llvm_type)
        return vtype(arr, types.intp), codegen
    return typer


# the 4 activation bytes (or two int16 block sums) at arr[off] in all 8 lanes: vpbroadcastd, for weights
# interleaved 8 rows to a vector (one row per 32-bit lane)
broadcast4 = intrinsic(_broadcast_word((types.int8,), U8x32))
broadcast_pair = intrinsic(_broadcast_word((types.int16,), I16x16))


@intrinsic
def load_halves(typingctx, arr, lo, hi):
    """32 bytes: arr[lo:lo+16], then arr[hi:hi+16] (two rows' bytes side by side, for store_transposed4)."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        v16 = ir.VectorType(_I8, 16)
        a = _load(context, builder, sig.args[0], args[0], args[1], v16)
        b = _load(context, builder, sig.args[0], args[0], args[2], v16)
        return _concat(builder, a, b)
    return U8x32(arr, types.intp, types.intp), codegen


def _transpose_words(builder, words):
    """Within each 128-bit half, the 4 x 4 transpose of four I32x8 as 32-bit words: out[j] holds word j of
    each half of words[0..3] in turn (in-lane shuffles only: vpunpck*dq, vpunpck*qdq on x86)."""
    def mix(a, b, idx):
        return builder.shuffle_vector(a, b, _vec(_I32, idx))
    low, high = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    lo01, hi01 = mix(words[0], words[1], low), mix(words[0], words[1], high)
    lo23, hi23 = mix(words[2], words[3], low), mix(words[2], words[3], high)
    return [mix(lo01, lo23, [0, 1, 8, 9, 4, 5, 12, 13]), mix(lo01, lo23, [2, 3, 10, 11, 6, 7, 14, 15]),
            mix(hi01, hi23, [0, 1, 8, 9, 4, 5, 12, 13]), mix(hi01, hi23, [2, 3, 10, 11, 6, 7, 14, 15])]


def _transposable(arr, vs):
    """The store_transposed* arguments checked: a byte or int16 array, and vectors of one 256-bit type."""
    _check_array(arr, _BYTES + (types.int16,))
    if len(set(vs)) != 1 or vs[0] not in (U8x32, I16x16, I32x8):
        raise TypingError(f"simd: expected {len(vs)} vectors of one 256-bit type, got {vs}")
    return vs


def _store_words(context, builder, sig, args, values):
    """Store the I32x8 `values` at 32-byte steps from arr[off] (args[0], args[1])."""
    itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
    for word, value in enumerate(values):
        off = builder.add(args[1], args[1].type(32 * word // itemsize))
        builder.store(value, _pointer(context, builder, sig.args[0], args[0], off, I32x8.llvm_type), align=1)


@intrinsic
def store_transposed4(typingctx, arr, off, v0, v1, v2, v3):
    """store_transposed for vectors that hold two rows each, rows k and k+4 in the halves of vk (load_halves):
    the 32 bytes at arr[off + 32 * j bytes] get word j of rows 0..7 in turn, j < 4. Only in-lane shuffles:
    8 for 4 outputs where store_transposed needs 24 for 8."""
    vs = _transposable(arr, (v0, v1, v2, v3))

    def codegen(context, builder, sig, args):
        words = [builder.bitcast(a, I32x8.llvm_type) for a in args[2:]]
        _store_words(context, builder, sig, args, _transpose_words(builder, words))
        return context.get_dummy_value()
    return types.none(arr, types.intp, *vs), codegen


@intrinsic
def store_transposed(typingctx, arr, off, v0, v1, v2, v3, v4, v5, v6, v7):
    """Store the 8 x 8 transpose of eight 256-bit vectors as 32-bit words: the 32 bytes at arr[off + 32 * j
    bytes] get word j of v0, v1, ..., v7 in turn. Eight rows' bytes (or scales) in, one vector per 4
    columns out, with row r in lane r: the interleaved form of the integer GEMM. Three stages of in-lane
    shuffles (vpunpck*dq, vpunpck*qdq, vperm2i128 on x86)."""
    vs = _transposable(arr, (v0, v1, v2, v3, v4, v5, v6, v7))

    def codegen(context, builder, sig, args):
        words = [builder.bitcast(a, I32x8.llvm_type) for a in args[2:]]
        low, high = _transpose_words(builder, words[:4]), _transpose_words(builder, words[4:])
        # low[j]: rows 0-3 of words j (first half) and j + 4 (second half); high[j]: rows 4-7 of the same
        halves = lambda a, b, idx: builder.shuffle_vector(a, b, _vec(_I32, idx))  # noqa: E731
        _store_words(context, builder, sig, args,
                     [halves(low[j], high[j], [0, 1, 2, 3, 8, 9, 10, 11]) for j in range(4)] +
                     [halves(low[j], high[j], [4, 5, 6, 7, 12, 13, 14, 15]) for j in range(4)])
        return context.get_dummy_value()
    return types.none(arr, types.intp, *vs), codegen


def _pairs_of(half: int):
    def typer(typingctx, v):
        """16 x i16 with lanes 2j and 2j+1 both lane 8*half + j of v: eight scales, each in one 32-bit word."""
        if v != I16x16:
            raise TypingError("simd: expected an I16x16")

        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[0], _vec(_I32, [8 * half + i // 2 for i in range(16)]))
        return I16x16(I16x16), codegen
    return typer


pairs_low = intrinsic(_pairs_of(0))   # lanes 0..7 of v, each twice
pairs_high = intrinsic(_pairs_of(1))  # lanes 8..15 of v, each twice


@intrinsic
def lookup16(typingctx, table, idx):
    """table[idx & 15] per byte; table's bytes 16..31 must repeat bytes 0..15 (x86 shuffles each half alone)."""
    def codegen(context, builder, sig, args):
        t = U8x32.llvm_type
        low = builder.and_(args[1], _vec(_I8, [15] * 32))
        if USE_X86_AVX2:
            return _call(builder, "llvm.x86.avx2.pshuf.b", t, [args[0], low])
        if USE_ARM_NEON:
            i8x16 = ir.VectorType(_I8, 16)
            table16 = _halves(builder, args[0])[0]
            return _concat(builder, *(_call(builder, "llvm.aarch64.neon.tbl1.v16i8", i8x16, [table16, half])
                                      for half in _halves(builder, low)))
        out = ir.Constant(t, ir.Undefined)
        for i in range(32):
            k = builder.extract_element(low, ir.Constant(_I32, i))
            out = builder.insert_element(out, builder.extract_element(args[0], k), ir.Constant(_I32, i))
        return out
    return U8x32(U8x32, U8x32), codegen


@intrinsic
def madd_v(typingctx, a, b):
    """a * b lane-wise, adjacent products summed -> 8 x i32: a is maddubs' sums (then b, the scales, must repeat
    over each pair of lanes, i.e. each 4 bytes) or any 16 x i16."""
    _check_dots(a)

    def codegen(context, builder, sig, args):
        return _scale_dots(builder, args[0], sig.args[0], args[1])
    return I32x8(a, I16x16), codegen


@intrinsic
def prefetch(typingctx, arr, off):
    """A hint to bring the cache line of arr[off] toward L1 (for reading, kept in every level)."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], _I8)
        hint = ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32])  # address, read, keep in all, data
        # llvmlite names the overload for its pointer type (typed before LLVM 15, which upgrades the name)
        fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type], hint)
        builder.call(fn, [ptr, _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()
    return types.none(arr, types.intp), codegen


@intrinsic
def lane(typingctx, v, i):
    """Lane i of a 16 x i16 vector, sign-extended."""
    def codegen(context, builder, sig, args):
        return builder.sext(builder.extract_element(args[0], builder.trunc(args[1], _I32)), ir.IntType(64))
    return types.int64(I16x16, types.intp), codegen


@intrinsic
def load_i16x16(typingctx, arr, off):
    """16 int16 arr[off:off+16]."""
    _check_array(arr, (types.int16,))

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig.args[0], args[0], args[1], I16x16.llvm_type)
    return I16x16(arr, types.intp), codegen


def _widen_load(extend):
    def typer(typingctx, arr, off):
        _check_array(arr, _BYTES)

        def codegen(context, builder, sig, args):
            b = _load(context, builder, sig.args[0], args[0], args[1], ir.VectorType(_I8, 16))
            return getattr(builder, extend)(b, I16x16.llvm_type)
        return I16x16(arr, types.intp), codegen
    return typer


widen_u8 = intrinsic(_widen_load("zext"))  # 16 bytes arr[off:off+16] -> 16 x i16, as unsigned
widen_s8 = intrinsic(_widen_load("sext"))  # ... as signed


def _bytes_of(builder, words):
    v = ir.Constant(ir.VectorType(_I32, len(words)), ir.Undefined)
    for i, word in enumerate(words):
        v = builder.insert_element(v, word, ir.Constant(_I32, i))
    return builder.bitcast(v, ir.VectorType(_I8, 4 * len(words)))


@intrinsic
def widen_u32x4(typingctx, a, b, c, d):
    """The 16 bytes of four little-endian uint32 (a first) -> 16 x i16 (zero-extended)."""
    def codegen(context, builder, sig, args):
        return builder.zext(_bytes_of(builder, args), I16x16.llvm_type)
    return I16x16(types.uint32, types.uint32, types.uint32, types.uint32), codegen


@intrinsic
def widen_pairs(typingctx, a, b):
    """The 8 bytes of two uint32, each repeated twice -> 16 x i16: pairs per-32 values with per-16 sums."""
    def codegen(context, builder, sig, args):
        v8 = _bytes_of(builder, args)
        twice = builder.shuffle_vector(v8, v8, _vec(_I32, [i // 2 for i in range(16)]))
        return builder.zext(twice, I16x16.llvm_type)
    return I16x16(types.uint32, types.uint32), codegen


@intrinsic
def izero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(I32x8.llvm_type, None)
    return I32x8(), codegen


@intrinsic
def iadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return I32x8(I32x8, I32x8), codegen


@intrinsic
def ihsum2(typingctx, a, b):
    """(sum of a's 8 lanes, sum of b's) for two I32x8, in one shuffle tree (exact: the sums fit 32 bits)."""
    def codegen(context, builder, sig, args):
        pick = lambda u, v, idx: builder.shuffle_vector(u, v, _vec(_I32, idx))  # noqa: E731
        a4 = builder.add(pick(args[0], args[0], [0, 1, 2, 3]), pick(args[0], args[0], [4, 5, 6, 7]))
        b4 = builder.add(pick(args[1], args[1], [0, 1, 2, 3]), pick(args[1], args[1], [4, 5, 6, 7]))
        ab2 = builder.add(pick(a4, b4, [0, 2, 4, 6]), pick(a4, b4, [1, 3, 5, 7]))
        ab = builder.add(pick(ab2, ab2, [0, 2]), pick(ab2, ab2, [1, 3]))
        i64 = ir.IntType(64)
        sums = [builder.sext(builder.extract_element(ab, ir.Constant(_I32, k)), i64) for k in range(2)]
        return context.make_tuple(builder, sig.return_type, sums)
    return types.UniTuple(types.int64, 2)(I32x8, I32x8), codegen


# ----------------------------------------------------------------------------------------- float lanes

@intrinsic
def fzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(F32x8.llvm_type, None)
    return F32x8(), codegen


@intrinsic
def fmadd_i(typingctx, acc, v, s):
    """acc + float(v) * s."""
    def codegen(context, builder, sig, args):
        t = F32x8.llvm_type
        scaled = builder.fmul(builder.sitofp(args[1], t), _splat(builder, args[2], t), flags=_CONTRACT)
        return builder.fadd(args[0], scaled, flags=_CONTRACT)
    return F32x8(F32x8, I32x8, types.float32), codegen


@intrinsic
def fma_i(typingctx, acc, v, s):
    """acc + float(v) * s lane-wise, rounded once (llvm.fma): lane r is exactly the scalar
    fma32(float32(v[r]), s[r], acc[r]), so a GEMM with one row per lane matches the row kernel bit for bit."""
    def codegen(context, builder, sig, args):
        t = F32x8.llvm_type
        return _call(builder, "llvm.fma.v8f32", t, [builder.sitofp(args[1], t), args[2], args[0]])
    return F32x8(F32x8, I32x8, F32x8), codegen


@intrinsic
def ffma(typingctx, acc, a, b):
    """acc + a * b, lane-wise."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], builder.fmul(args[1], args[2], flags=_CONTRACT), flags=_CONTRACT)
    return F32x8(F32x8, F32x8, F32x8), codegen


@intrinsic
def fmul_s(typingctx, v, s):
    """v * s, lane-wise (each lane rounds as the scalar product does)."""
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], _splat(builder, args[1], F32x8.llvm_type))
    return F32x8(F32x8, types.float32), codegen


@intrinsic
def fadd(typingctx, a, b):
    """a + b, lane-wise."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return F32x8(F32x8, F32x8), codegen


@intrinsic
def load_f32x8(typingctx, arr, off):
    """8 float32 arr[off:off+8]."""
    _check_array(arr, (types.float32,))

    def codegen(context, builder, sig, args):
        return _load(context, builder, sig.args[0], args[0], args[1], F32x8.llvm_type)
    return F32x8(arr, types.intp), codegen


def _f16_bits_to_f32(builder, h32):
    """Exact IEEE half -> float on 8 lanes of zero-extended half bits (normals, subnormals, inf, nan)."""
    t = h32.type
    c = lambda v: ir.Constant(t, [v] * 8)  # noqa: E731
    sign = builder.shl(builder.and_(h32, c(0x8000)), c(16))
    em = builder.and_(h32, c(0x7FFF))
    exp = builder.and_(em, c(0x7C00))
    # normal/inf/nan: move exponent and mantissa into place and rebias (15 -> 127, or 31 -> 255)
    rebias = builder.select(builder.icmp_unsigned("==", exp, c(0x7C00)), c(224 << 23), c(112 << 23))
    normal = builder.add(builder.shl(em, c(13)), rebias)
    # subnormal: mantissa * 2^-24, computed as float (exact; no denormal inputs involved)
    ft = ir.VectorType(_F32, 8)
    sub = builder.fmul(builder.uitofp(em, ft), ir.Constant(ft, [2.0 ** -24] * 8))
    bits = builder.select(builder.icmp_unsigned("==", exp, c(0)), builder.bitcast(sub, t), normal)
    return builder.bitcast(builder.or_(bits, sign), ft)


@intrinsic
def load_f16x8(typingctx, arr, off):
    """8 IEEE halves stored as bytes at arr[off:off+16] -> 8 float32 (exact)."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        if USE_NATIVE_F16:
            h = _load(context, builder, sig.args[0], args[0], args[1], ir.VectorType(ir.HalfType(), 8))
            return builder.fpext(h, F32x8.llvm_type)
        h = _load(context, builder, sig.args[0], args[0], args[1], ir.VectorType(_I16, 8))
        return _f16_bits_to_f32(builder, builder.zext(h, ir.VectorType(_I32, 8)))
    return F32x8(arr, types.intp), codegen


@intrinsic
def load_bf16x8(typingctx, arr, off):
    """8 bfloat16 stored as bytes at arr[off:off+16] -> 8 float32 (exact)."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        v32 = ir.VectorType(_I32, 8)
        h = _load(context, builder, sig.args[0], args[0], args[1], ir.VectorType(_I16, 8))
        bits = builder.shl(builder.zext(h, v32), ir.Constant(v32, [16] * 8))
        return builder.bitcast(bits, F32x8.llvm_type)
    return F32x8(arr, types.intp), codegen


@intrinsic
def store_f32x8(typingctx, arr, off, v):
    """arr[off:off+8] = v (float32 array)."""
    _check_array(arr, (types.float32,))

    def codegen(context, builder, sig, args):
        builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], F32x8.llvm_type), align=4)
        return context.get_dummy_value()
    return types.none(arr, types.intp, F32x8), codegen


def _store_vector(vtype: VectorType, dtypes):
    def typer(typingctx, arr, off, v):
        _check_array(arr, dtypes)
        if v != vtype:
            raise TypingError(f"simd: expected a {vtype} value")

        def codegen(context, builder, sig, args):
            builder.store(args[2], _pointer(context, builder, sig.args[0], args[0], args[1], vtype.llvm_type),
                          align=1)
            return context.get_dummy_value()
        return types.none(arr, types.intp, vtype), codegen
    return typer


store_u8x32 = intrinsic(_store_vector(U8x32, _BYTES))           # arr[off:off+32] = v (bytes)
store_i16x16 = intrinsic(_store_vector(I16x16, (types.int16,)))  # arr[off:off+16] = v (int16)
store_i32x8 = intrinsic(_store_vector(I32x8, (types.int32,)))    # arr[off:off+8] = v (int32)


@intrinsic
def store_scaled(typingctx, y, off, q, d0, m0, d1, m1):
    """y[off+i] = d*float(q[i]) - m for the 32 signed bytes of q: (d0, m0) for i < 16, (d1, m1) after.

    A plain multiply then subtract (never fused), so values are bit-identical to the reference dequantizers.
    """
    _check_array(y, (types.float32,))

    def codegen(context, builder, sig, args):
        ft = ir.VectorType(_F32, 32)
        qf = builder.sitofp(builder.sext(args[2], ir.VectorType(_I32, 32)), ft)
        halves = lambda a, b: builder.shuffle_vector(  # noqa: E731
            _splat(builder, a, ir.VectorType(_F32, 16)), _splat(builder, b, ir.VectorType(_F32, 16)),
            _vec(_I32, range(32)))
        value = builder.fsub(builder.fmul(qf, halves(args[3], args[5])), halves(args[4], args[6]))
        builder.store(value, _pointer(context, builder, sig.args[0], args[0], args[1], ft), align=4)
        return context.get_dummy_value()
    f32 = types.float32
    return types.none(y, types.intp, U8x32, f32, f32, f32, f32), codegen


@intrinsic
def hsum(typingctx, v):
    """Sum of the 8 lanes."""
    def codegen(context, builder, sig, args):
        return _lane_sum(builder, builder.fadd, args[0])
    return types.float32(F32x8), codegen


# ------------------------------------------------------------------------------------------ scalar bits

@intrinsic
def f16_at(typingctx, arr, off):
    """The IEEE half stored little-endian at arr[off:off+2] as float32 (exact).

    On x86 a scalar half -> float (vcvtph2ps) first inserts the half into a vector register (vpinsrw),
    merging into whatever register LLVM picks; that can chain every block's scale to the previous
    block's accumulator (it halved Q4_1). So the half goes into a zeroed vector behind an empty inline-asm
    barrier LLVM cannot see through. Without F16C: integer operations.
    """
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        h = builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _I16), align=1)
        if USE_NATIVE_F16 and _X86:
            v8 = ir.VectorType(_I16, 8)
            fresh = builder.insert_element(ir.Constant(v8, None), h, ir.Constant(_I32, 0))
            opaque = builder.asm(ir.FunctionType(v8, [v8]), "", "=x,0", [fresh], False)
            four = builder.shuffle_vector(opaque, opaque, _vec(_I32, range(4)))
            f = builder.fpext(builder.bitcast(four, ir.VectorType(ir.HalfType(), 4)), ir.VectorType(_F32, 4))
            return builder.extract_element(f, ir.Constant(_I32, 0))
        if USE_NATIVE_F16:
            return builder.fpext(builder.bitcast(h, ir.HalfType()), _F32)
        h = builder.zext(h, _I32)
        c = lambda v: ir.Constant(_I32, v)  # noqa: E731
        sign = builder.shl(builder.and_(h, c(0x8000)), c(16))
        em = builder.and_(h, c(0x7FFF))
        exp = builder.and_(em, c(0x7C00))
        rebias = builder.select(builder.icmp_unsigned("==", exp, c(0x7C00)), c(224 << 23), c(112 << 23))
        normal = builder.add(builder.shl(em, c(13)), rebias)
        # subnormal m * 2^-24 = 2^-14 * (1 + m/1024) - 2^-14, exact (Sterbenz), no int->float conversion
        biased = builder.bitcast(builder.or_(builder.shl(em, c(13)), c(113 << 23)), _F32)
        sub = builder.bitcast(builder.fsub(biased, ir.Constant(_F32, 2.0 ** -14)), _I32)
        bits = builder.select(builder.icmp_unsigned("==", exp, c(0)), sub, normal)
        return builder.bitcast(builder.or_(bits, sign), _F32)
    return types.float32(arr, types.intp), codegen


@intrinsic
def f32_at(typingctx, arr, off):
    """The float32 stored at element offset off of any 1-D array (e.g. a float kept in two int16 slots)."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _F32), align=1)
    return types.float32(arr, types.intp), codegen


@intrinsic
def u32_at(typingctx, arr, off):
    """The little-endian uint32 at arr[off:off+4]."""
    _check_array(arr, _BYTES)

    def codegen(context, builder, sig, args):
        return builder.load(_pointer(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
    return types.uint32(arr, types.intp), codegen


@intrinsic
def fma32(typingctx, a, b, c):
    """a * b + c for float32 scalars, rounded once (llvm.fma): where the compiled reference contracts a
    multiply-add, this names it, so the result does not depend on what LLVM contracts in each caller."""
    def codegen(context, builder, sig, args):
        return builder.fma(*args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def f32_bits(typingctx, x):
    """The bits of a float32 as uint32."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _I32)
    return types.uint32(types.float32), codegen


@intrinsic
def f32_from_bits(typingctx, b):
    """The float32 whose bits are b (uint32)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], _F32)
    return types.float32(types.uint32), codegen
