using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace XrayVL.Kernels;

public static unsafe partial class MatVec
{
    /// <summary>
    /// y (1, N) for a Q8_0 weight with x first rounded to int8 per group of 32 (xs = max|x| / 127, x ≈ xq · xs, as llama.cpp
    /// rounds activations for its Q8_0 products): each group is 32 int8 × int8 products summed in fours to 8 int32 lanes by
    /// one vpdpbusd, converted to float32 and scaled by the weight's and x's group scales. vpdpbusd multiplies unsigned by
    /// signed bytes, so it gets |w| and x with w's sign (vpabsb, vpsignb): exact, since |w| ≤ 128 fits a byte and
    /// |x · sign(w)| ≤ 127. Against the int16 path (sign-extend the weights to int16, vpmaddwd on 512-bit registers) this
    /// is fewer and narrower instructions per weight byte: on this project's 2-core machine, with a training run sharing
    /// it, the kernel alone streamed 27–29 GB/s against that path's 17–18 in the same run (11008 × 4096 matrices, two
    /// threads). Rounding x to int8 adds an error of at most 2^-8 of the group's largest |x| per element; on the tiny
    /// reference models the decode logits' relative error to fp32 grew from 0.9–1.4e-2 to 1.3–1.7e-2.
    /// </summary>
    private static void Q8Int8Vnni(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x,
        Span<float> y, int threads)
    {
        int groups = cols / GroupSize;
        var xq = System.Buffers.ArrayPool<sbyte>.Shared.Rent(cols);
        var xs = System.Buffers.ArrayPool<float>.Shared.Rent(groups);
        try
        {
            QuantizeInt8(x, xq, xs, groups);
            fixed (sbyte* pq = q, pxq = xq)
            fixed (float* ps = scales, py = y, pxs = xs)
            {
                var (qp, sp, yp, xqp, xsp) = ((nint)pq, (nint)ps, (nint)py, (nint)pxq, (nint)pxs);
                ForRows(rows, threads, (first, end) =>
                {
                    sbyte* xx = (sbyte*)xqp;
                    float* xsc = (float*)xsp;
                    for (int r = first; r < end; r++)
                    {
                        sbyte* row = (sbyte*)qp + (long)r * cols;
                        float* rowScales = (float*)sp + (long)r * groups;
                        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero;
                        int g = 0;
                        for (; g + 2 <= groups; g += 2)
                        {
                            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(GroupDot(row + g * GroupSize, xx + g * GroupSize)),
                                Vector256.Create(rowScales[g] * xsc[g]), acc0);
                            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(GroupDot(row + (g + 1) * GroupSize, xx + (g + 1) * GroupSize)),
                                Vector256.Create(rowScales[g + 1] * xsc[g + 1]), acc1);
                        }
                        for (; g < groups; g++)
                            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(GroupDot(row + g * GroupSize, xx + g * GroupSize)),
                                Vector256.Create(rowScales[g] * xsc[g]), acc0);
                        ((float*)yp)[r] = Vector256.Sum(acc0 + acc1);
                    }
                });
            }
        }
        finally
        {
            System.Buffers.ArrayPool<sbyte>.Shared.Return(xq);
            System.Buffers.ArrayPool<float>.Shared.Return(xs);
        }
    }

    /// <summary>
    /// y (1, N) for a Q4_0 weight with x rounded to int8 per group as for Q8_0. A group's 16 bytes become its 32 nibbles
    /// in element order (low nibbles are elements 0..15, high nibbles 16..31: one and, one shift, one and, one insert) and
    /// vpdpbusd multiplies them, unsigned 0..15, by the signed x. The level is nibble − 8, so each group's sum lacks
    /// −8 · Σ xq, which depends on x alone: it is computed once per call and enters as the product's addend (first lane).
    /// Widening every nibble to float32 took a dozen 512-bit instructions per group; this takes eight 256-bit ones.
    /// </summary>
    private static void Q4Int8Vnni(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x,
        Span<float> y, int threads)
    {
        int groups = cols / GroupSize;
        var xq = System.Buffers.ArrayPool<sbyte>.Shared.Rent(cols);
        var xs = System.Buffers.ArrayPool<float>.Shared.Rent(groups);
        var offsets = System.Buffers.ArrayPool<int>.Shared.Rent(groups * 8);   // (groups, 8): lane 0 = −8 · Σ xq of the group
        try
        {
            QuantizeInt8(x, xq, xs, groups);
            for (int g = 0; g < groups; g++)
            {
                int sum = 0;
                for (int c = 0; c < GroupSize; c++) sum += xq[g * GroupSize + c];
                offsets.AsSpan(g * 8, 8).Clear();
                offsets[g * 8] = -8 * sum;
            }
            fixed (byte* pq = packed)
            fixed (sbyte* pxq = xq)
            fixed (float* ps = scales, py = y, pxs = xs)
            fixed (int* po = offsets)
            {
                var (qp, sp, yp, xqp, xsp, op) = ((nint)pq, (nint)ps, (nint)py, (nint)pxq, (nint)pxs, (nint)po);
                ForRows(rows, threads, (first, end) =>
                {
                    sbyte* xx = (sbyte*)xqp;
                    float* xsc = (float*)xsp;
                    int* off = (int*)op;
                    var nibble = Vector128.Create((byte)0xF);
                    for (int r = first; r < end; r++)
                    {
                        byte* row = (byte*)qp + (long)r * (cols / 2);
                        float* rowScales = (float*)sp + (long)r * groups;
                        Vector256<float> acc0 = Vector256<float>.Zero, acc1 = Vector256<float>.Zero;
                        int g = 0;
                        for (; g + 2 <= groups; g += 2)
                        {
                            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4GroupDot(row + g * Q4GroupBytes, xx + g * GroupSize, off + g * 8, nibble)),
                                Vector256.Create(rowScales[g] * xsc[g]), acc0);
                            acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4GroupDot(row + (g + 1) * Q4GroupBytes, xx + (g + 1) * GroupSize, off + (g + 1) * 8, nibble)),
                                Vector256.Create(rowScales[g + 1] * xsc[g + 1]), acc1);
                        }
                        for (; g < groups; g++)
                            acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4GroupDot(row + g * Q4GroupBytes, xx + g * GroupSize, off + g * 8, nibble)),
                                Vector256.Create(rowScales[g] * xsc[g]), acc0);
                        ((float*)yp)[r] = Vector256.Sum(acc0 + acc1);
                    }
                });
            }
        }
        finally
        {
            System.Buffers.ArrayPool<sbyte>.Shared.Return(xq);
            System.Buffers.ArrayPool<float>.Shared.Return(xs);
            System.Buffers.ArrayPool<int>.Shared.Return(offsets);
        }
    }

    /// <summary>One Q4_0 group (16 bytes) · 32 int8 activations as 8 int32 partial sums, the −8 · Σ x offset included.</summary>
    private static Vector256<int> Q4GroupDot(byte* group, sbyte* x, int* offset, Vector128<byte> nibble)
    {
        var bytes = Sse2.LoadVector128(group);
        var low = bytes & nibble;
        var high = Sse2.ShiftRightLogical(bytes.AsUInt16(), 4).AsByte() & nibble;
        return AvxVnni.MultiplyWideningAndAdd(Avx.LoadVector256(offset), Vector256.Create(low, high), Avx.LoadVector256(x));
    }

    /// <summary>32 int8 weights · 32 int8 activations as 8 int32 partial sums (each of 4 adjacent products).</summary>
    private static Vector256<int> GroupDot(sbyte* w, sbyte* x)
    {
        var wv = Avx.LoadVector256(w);
        return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Avx2.Abs(wv), Avx2.Sign(Avx.LoadVector256(x), wv));
    }
}
