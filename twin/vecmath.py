"""Elementary functions that numba can vectorise.

A loop over units that calls ``math.exp`` is not vectorised: LLVM has no vector ``exp``
without Intel's SVML, which numba's pip wheels do not carry, and one library call per
element costs as much as the rest of a model's step.  :func:`exp` is branch-free
arithmetic (a power of two built from its bits, a polynomial), so a loop that calls it
compiles to SIMD instructions; its results are the same in a scalar and a vectorised loop
(no fused multiply-adds, no reassociation), within 1 ulp of ``math.exp`` over the range
the models use.

Importing this module also lets LLVM vectorise loops that read and write many arrays
(:data:`MEMORY_CHECKS`).
"""

from __future__ import annotations

import math

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numba
from numba.core import types
from numba.extending import intrinsic

#: how many run-time checks that two arrays do not overlap LLVM may emit to vectorise a
#: loop (its default, 128, keeps a pass over units that reads and writes a dozen columns,
#: the battery's hold, scalar; the checks cost a few comparisons per loop, not per unit).
#: Set for the whole process before anything is compiled, as numba sets its own options.
MEMORY_CHECKS = 1024
llvm.set_option("gridloop", f"-vectorize-memory-check-threshold={MEMORY_CHECKS}")

#: 1 / ln 2 and ln 2 in two parts (Cody and Waite): ``k ln2_hi`` is exact for |k| < 2^11
_INV_LN2 = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
#: the argument range of :func:`exp`: beyond it the result is clamped (0 and about 1e304)
EXP_MIN = -700.0
EXP_MAX = 700.0


@intrinsic
def _pow2(typingctx, k):
    """``2.0 ** k`` for an integer ``-1022 <= k <= 1023``: its exponent bits, no call."""
    if not isinstance(k, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        v = context.cast(builder, args[0], sig.args[0], types.int64)
        bits = builder.shl(builder.add(v, ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())

    return types.float64(k), codegen


@intrinsic
def sqrt(typingctx, z):
    """``math.sqrt`` of a float as LLVM's intrinsic: numba calls the C library's, which
    keeps a loop scalar; both are the correctly rounded IEEE square root (NaN below 0)."""
    if not isinstance(z, types.Float):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float64)
        fn = builder.module.declare_intrinsic("llvm.sqrt", [ir.DoubleType()])
        return builder.call(fn, [v])

    return types.float64(z), codegen


@numba.njit(cache=True, inline="always", error_model="numpy")
def exp(z):
    """``e ** z`` for ``EXP_MIN <= z <= EXP_MAX`` (clamped outside), branch-free.

    ``z = k ln 2 + r`` with ``|r| <= ln 2 / 2``; ``e ** r`` by its Taylor series to the
    13th power (truncation below 5e-18 relative).  NaN in, NaN out.
    """
    zc = min(max(z, EXP_MIN), EXP_MAX)
    kf = math.floor(zc * _INV_LN2 + 0.5)
    r = (zc - kf * _LN2_HI) - kf * _LN2_LO
    p = 1.0 / 6227020800.0
    p = 1.0 / 479001600.0 + r * p
    p = 1.0 / 39916800.0 + r * p
    p = 1.0 / 3628800.0 + r * p
    p = 1.0 / 362880.0 + r * p
    p = 1.0 / 40320.0 + r * p
    p = 1.0 / 5040.0 + r * p
    p = 1.0 / 720.0 + r * p
    p = 1.0 / 120.0 + r * p
    p = 1.0 / 24.0 + r * p
    p = 1.0 / 6.0 + r * p
    p = 0.5 + r * p
    p = 1.0 + r * p
    p = 1.0 + r * p
    e = p * _pow2(int(kf))
    return e if z == z else z


@numba.njit(cache=True, inline="always", error_model="numpy")
def copy(src, dst):
    """``dst[:] = src`` for 1-D arrays: numba's slice assignment goes through its
    broadcasting machinery and takes twice as long over 1,000 elements."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@numba.njit(cache=True, inline="always", error_model="numpy")
def fill(dst, value):
    """``dst[:] = value`` for a 1-D array, as :func:`copy`."""
    for i in range(dst.shape[0]):
        dst[i] = value


@numba.njit(cache=True, inline="always", error_model="numpy")
def gather(src, index, dst):
    """``dst[:] = src[index]`` for 1-D arrays, without numba's temporary: a pass of its own
    per destination vectorises (AVX-512 gathers) where a loop filling several does not."""
    for i in range(index.shape[0]):
        dst[i] = src[index[i]]
