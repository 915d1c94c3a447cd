using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace XrayVL.Kernels;

/// <summary>
/// The Q4_0 product of <see cref="MatVec"/>: 4-bit weights in groups of 32 along K with one float32 scale per group.
/// Layout of one row (K / 2 bytes): group g is the 16 bytes [16·g, 16·g + 16); byte j of a group holds element j of the
/// group in its low nibble and element j + 16 in its high nibble; a nibble n stands for the weight (n − 8) · scale, so
/// the 16 levels are −8..7 times the scale. This is llama.cpp's Q4_0 block with a float32 scale instead of fp16.
/// </summary>
public static unsafe partial class MatVec
{
    /// <summary>Bytes of one Q4_0 group: 32 nibbles.</summary>
    public const int Q4GroupBytes = GroupSize / 2;

    /// <summary>
    /// y (B, N) = x (B, K) · Wᵀ with W (N, K) in Q4_0: <paramref name="packed"/> (N, K / 2) bytes as laid out above and
    /// <paramref name="scales"/> (N, K / 32) float32. K must be a multiple of 32.
    /// </summary>
    public static void Q4(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x, int batch,
        Span<float> y, KernelIsa? isa = null, int threads = 0)
    {
        if (cols % GroupSize != 0) throw new ArgumentException($"Q4_0 needs a row length divisible by {GroupSize}, got {cols}");
        CheckShapes(2L * packed.Length, rows, cols, x.Length, batch, y.Length);
        if (scales.Length != (long)rows * (cols / GroupSize))
            throw new ArgumentException($"Q4_0 scales: expected {rows} × {cols / GroupSize}, got {scales.Length}");
        var chosen = Usable(isa ?? Best);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        fixed (byte* pq = packed)
        fixed (float* ps = scales, px = x, py = y)
        {
            var (qp, sp, xp, yp) = ((nint)pq, (nint)ps, (nint)px, (nint)py);
            ForRows(rows, threads, (first, end) =>
            {
                byte* qq = (byte*)qp;
                float* ss = (float*)sp, xx = (float*)xp, yy = (float*)yp;
                int groups = cols / GroupSize;
                for (int r = first; r < end; r++)
                {
                    byte* row = qq + (long)r * (cols / 2);
                    float* rowScales = ss + (long)r * groups;
                    switch (chosen)
                    {
                        case KernelIsa.Avx512: Q4RowAvx512(row, rowScales, groups, cols, xx, batch, yy, rows, r); break;
                        case KernelIsa.Avx2: Q4RowAvx2(row, rowScales, groups, cols, xx, batch, yy, rows, r); break;
                        default: Q4RowScalar(row, rowScales, groups, cols, xx, batch, yy, rows, r); break;
                    }
                }
            });
        }
        Account(start, packed.Length + 4L * scales.Length);
    }

    /// <summary>The signed level (−8..7) of element <paramref name="c"/> (0..31) of the Q4_0 group at <paramref name="group"/>.</summary>
    public static int Q4Level(ReadOnlySpan<byte> group, int c) =>
        (c < Q4GroupBytes ? group[c] & 0xF : group[c - Q4GroupBytes] >> 4) - 8;

    private static void Q4RowScalar(byte* q, float* scales, int groups, int cols, float* x, int batch, float* y, int rows, int r)
    {
        var row = new ReadOnlySpan<byte>(q, cols / 2);
        for (int b = 0; b < batch; b++)
        {
            float* xb = x + (long)b * cols;
            double sum = 0;   // double: the reference should not carry float rounding of its own
            for (int g = 0; g < groups; g++)
            {
                var group = row.Slice(g * Q4GroupBytes, Q4GroupBytes);
                for (int c = 0; c < GroupSize; c++) sum += (double)Q4Level(group, c) * scales[g] * xb[g * GroupSize + c];
            }
            y[(long)b * rows + r] = (float)sum;
        }
    }

    /// <summary>A group's 16 bytes → its 32 levels as float32: elements 0..15 (low nibbles) and 16..31 (high nibbles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float> Low, Vector512<float> High) WidenQ4(byte* p)
    {
        var bytes = Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(p));   // zero-extended
        var eight = Vector512.Create(8);
        var low = Avx512F.ConvertToVector512Single((bytes & Vector512.Create(0xF)) - eight);
        var high = Avx512F.ConvertToVector512Single(Avx512F.ShiftRightLogical(bytes, 4) - eight);
        return (low, high);
    }

    private static void Q4RowAvx512(byte* q, float* scales, int groups, int cols, float* x, int batch, float* y, int rows, int r)
    {
        if (batch == 1)
        {
            // Per group: 32 products summed unscaled, then added times the group's scale; two accumulators.
            Vector512<float> acc0 = Vector512<float>.Zero, acc1 = Vector512<float>.Zero;
            int g = 0;
            for (; g + 2 <= groups; g += 2)
            {
                var (l0, h0) = WidenQ4(q + g * Q4GroupBytes);
                var (l1, h1) = WidenQ4(q + (g + 1) * Q4GroupBytes);
                float* xg = x + g * GroupSize;
                var d0 = Avx512F.FusedMultiplyAdd(h0, Avx512F.LoadVector512(xg + 16), l0 * Avx512F.LoadVector512(xg));
                var d1 = Avx512F.FusedMultiplyAdd(h1, Avx512F.LoadVector512(xg + 48), l1 * Avx512F.LoadVector512(xg + 32));
                acc0 = Avx512F.FusedMultiplyAdd(d0, Vector512.Create(scales[g]), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(d1, Vector512.Create(scales[g + 1]), acc1);
            }
            for (; g < groups; g++)
            {
                var (l, h) = WidenQ4(q + g * Q4GroupBytes);
                float* xg = x + g * GroupSize;
                var d = Avx512F.FusedMultiplyAdd(h, Avx512F.LoadVector512(xg + 16), l * Avx512F.LoadVector512(xg));
                acc0 = Avx512F.FusedMultiplyAdd(d, Vector512.Create(scales[g]), acc0);
            }
            y[r] = Vector512.Sum(acc0 + acc1);
            return;
        }
        var acc = stackalloc Vector512<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector512<float>.Zero;
        for (int g = 0; g < groups; g++)
        {
            // Scale folded into the widened weights once per group, then reused by all B rows.
            var (l, h) = WidenQ4(q + g * Q4GroupBytes);
            var s = Vector512.Create(scales[g]);
            var w0 = l * s;
            var w1 = h * s;
            for (int b = 0; b < batch; b++)
            {
                float* xg = x + (long)b * cols + g * GroupSize;
                acc[b] = Avx512F.FusedMultiplyAdd(w1, Avx512F.LoadVector512(xg + 16), Avx512F.FusedMultiplyAdd(w0, Avx512F.LoadVector512(xg), acc[b]));
            }
        }
        for (int b = 0; b < batch; b++) y[(long)b * rows + r] = Vector512.Sum(acc[b]);
    }

    private static void Q4RowAvx2(byte* q, float* scales, int groups, int cols, float* x, int batch, float* y, int rows, int r)
    {
        var acc = stackalloc Vector256<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector256<float>.Zero;
        var mask = Vector256.Create(0xF);
        var eight = Vector256.Create(8);
        for (int g = 0; g < groups; g++)
        {
            byte* p = q + g * Q4GroupBytes;
            var v0 = Avx2.ConvertToVector256Int32(p);       // bytes 0..7, zero-extended: elements 0..7 and 16..23
            var v1 = Avx2.ConvertToVector256Int32(p + 8);   // bytes 8..15: elements 8..15 and 24..31
            var s = Vector256.Create(scales[g]);
            var w0 = Avx.ConvertToVector256Single((v0 & mask) - eight) * s;
            var w1 = Avx.ConvertToVector256Single((v1 & mask) - eight) * s;
            var w2 = Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(v0, 4) - eight) * s;
            var w3 = Avx.ConvertToVector256Single(Avx2.ShiftRightLogical(v1, 4) - eight) * s;
            for (int b = 0; b < batch; b++)
            {
                float* xg = x + (long)b * cols + g * GroupSize;
                var a = Fma.MultiplyAdd(w0, Avx.LoadVector256(xg), acc[b]);
                a = Fma.MultiplyAdd(w1, Avx.LoadVector256(xg + 8), a);
                a = Fma.MultiplyAdd(w2, Avx.LoadVector256(xg + 16), a);
                acc[b] = Fma.MultiplyAdd(w3, Avx.LoadVector256(xg + 24), a);
            }
        }
        for (int b = 0; b < batch; b++) y[(long)b * rows + r] = Vector256.Sum(acc[b]);
    }
}
