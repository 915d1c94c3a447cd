using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace XrayVL.Kernels;

/// <summary>Kernel wall time (Stopwatch ticks) and weight bytes read, summed over calls.</summary>
public readonly record struct KernelTotals(long Ticks, long Bytes)
{
    public static KernelTotals operator -(KernelTotals a, KernelTotals b) => new(a.Ticks - b.Ticks, a.Bytes - b.Bytes);
    public double Seconds => (double)Ticks / System.Diagnostics.Stopwatch.Frequency;
}

/// <summary>Instruction sets the decode kernels can run on; <see cref="MatVec.Detected"/> is the widest this CPU has.</summary>
public enum KernelIsa { Scalar, Avx2, Avx512 }

/// <summary>
/// The matrix-vector products of token-by-token decoding: y (B, N) = x (B, K) · Wᵀ for a weight W (N, K) stored as
/// bf16 or as Q8_0 (int8 in groups of 32 along K, one float32 scale per group: w = q · scale), with B = 1..8 activation
/// rows in float32. Decoding reads every weight once per token and does 2·B flops per weight, so these products are
/// bound by memory bandwidth: the kernels stream each weight row once, widen it to float32 in registers and multiply
/// it with all B rows of x (which stay in cache). Rows of W are split across threads.
/// Each instruction-set path is compared against the scalar reference (<see cref="KernelIsa.Scalar"/>) by the tests.
/// </summary>
public static unsafe partial class MatVec
{
    /// <summary>Largest activation batch the kernels take: beyond it the product is compute-bound and libtorch's GEMM wins.</summary>
    public const int MaxBatch = 8;

    /// <summary>Q8_0 group size: 32 consecutive weights of a row share one scale.</summary>
    public const int GroupSize = 32;

    /// <summary>Rows handed to a thread at a time: small enough to balance two threads, large enough to amortise the hand-off.</summary>
    private const int RowsPerTask = 64;

    /// <summary>
    /// Wall time and weight bytes (weights and scales) of every kernel call so far, all threads together: the bench reads
    /// them before and after decoding to split a token's time into the kernels and everything else.
    /// </summary>
    public static KernelTotals Totals => new(Interlocked.Read(ref totalTicks), Interlocked.Read(ref totalBytes));

    private static long totalTicks, totalBytes;

    private static void Account(long startTimestamp, long weightBytes)
    {
        Interlocked.Add(ref totalTicks, System.Diagnostics.Stopwatch.GetTimestamp() - startTimestamp);
        Interlocked.Add(ref totalBytes, weightBytes);
    }

    /// <summary>Environment variable that caps <see cref="Best"/> (scalar, avx2, avx512): to compare kernels in one build.</summary>
    public const string IsaVariable = "XRAYVL_KERNEL_ISA";

    public static KernelIsa Detected { get; } =
        Avx512F.IsSupported && Avx512BW.IsSupported ? KernelIsa.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? KernelIsa.Avx2
        : KernelIsa.Scalar;

    /// <summary>The kernels used when a caller names none: <see cref="Detected"/>, or less where <see cref="IsaVariable"/> asks.</summary>
    public static KernelIsa Best { get; } = FromEnvironment(Environment.GetEnvironmentVariable(IsaVariable), Detected);

    /// <summary>The ISA a value of <see cref="IsaVariable"/> names, never above <paramref name="detected"/>; unset: detected.</summary>
    public static KernelIsa FromEnvironment(string? value, KernelIsa detected)
    {
        if (string.IsNullOrWhiteSpace(value)) return detected;
        if (!Enum.TryParse<KernelIsa>(value.Trim(), ignoreCase: true, out var asked) || !Enum.IsDefined(asked))
            throw new XrayVLException($"{IsaVariable}={value}: expected one of {string.Join(", ", Enum.GetNames<KernelIsa>().Select(n => n.ToLowerInvariant()))}");
        if (asked > detected)
            throw new XrayVLException($"{IsaVariable}={value}: this CPU's kernels go up to {detected.ToString().ToLowerInvariant()}");
        return asked;
    }

    /// <summary>
    /// y (B, N) = x (B, K) · Wᵀ with W (N, K) in bf16 (the upper 16 bits of a float32, stored as ushort).
    /// </summary>
    public static void Bf16(ReadOnlySpan<ushort> w, int rows, int cols, ReadOnlySpan<float> x, int batch, Span<float> y,
        KernelIsa? isa = null, int threads = 0)
    {
        CheckShapes(w.Length, rows, cols, x.Length, batch, y.Length);
        var chosen = Usable(isa ?? Best);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        fixed (ushort* pw = w)
        fixed (float* px = x, py = y)
        {
            var (wp, xp, yp) = ((nint)pw, (nint)px, (nint)py);
            ForRows(rows, threads, (first, end) =>
            {
                ushort* ww = (ushort*)wp;
                float* xx = (float*)xp, yy = (float*)yp;
                for (int r = first; r < end; r++)
                {
                    ushort* row = ww + (long)r * cols;
                    switch (chosen)
                    {
                        case KernelIsa.Avx512: Bf16RowAvx512(row, cols, xx, batch, yy, rows, r); break;
                        case KernelIsa.Avx2: Bf16RowAvx2(row, cols, xx, batch, yy, rows, r); break;
                        default: Bf16RowScalar(row, cols, xx, batch, yy, rows, r); break;
                    }
                }
            });
        }
        Account(start, 2L * w.Length);
    }

    /// <summary>
    /// y (B, N) = x (B, K) · Wᵀ with W (N, K) in Q8_0: q (N, K) int8 and scales (N, K / 32) float32, w = q · scale.
    /// K must be a multiple of 32.
    /// </summary>
    public static void Q8(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x, int batch,
        Span<float> y, KernelIsa? isa = null, int threads = 0)
    {
        CheckShapes(q.Length, rows, cols, x.Length, batch, y.Length);
        if (cols % GroupSize != 0) throw new ArgumentException($"Q8_0 needs a row length divisible by {GroupSize}, got {cols}");
        if (scales.Length != (long)rows * (cols / GroupSize))
            throw new ArgumentException($"Q8_0 scales: expected {rows} × {cols / GroupSize}, got {scales.Length}");
        var chosen = Usable(isa ?? Best);
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        if (chosen == KernelIsa.Avx512 && batch == 1)
            Q8Int16Avx512(q, scales, rows, cols, x, y, threads);
        else
            Q8Rows(q, scales, rows, cols, x, batch, y, chosen, threads);
        Account(start, q.Length + 4L * scales.Length);
    }

    private static void Q8Rows(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x, int batch,
        Span<float> y, KernelIsa chosen, int threads)
    {
        fixed (sbyte* pq = q)
        fixed (float* ps = scales, px = x, py = y)
        {
            var (qp, sp, xp, yp) = ((nint)pq, (nint)ps, (nint)px, (nint)py);
            ForRows(rows, threads, (first, end) =>
            {
                sbyte* qq = (sbyte*)qp;
                float* ss = (float*)sp, xx = (float*)xp, yy = (float*)yp;
                int groups = cols / GroupSize;
                for (int r = first; r < end; r++)
                {
                    sbyte* row = qq + (long)r * cols;
                    float* rowScales = ss + (long)r * groups;
                    switch (chosen)
                    {
                        case KernelIsa.Avx512: Q8RowAvx512(row, rowScales, cols, xx, batch, yy, rows, r); break;
                        case KernelIsa.Avx2: Q8RowAvx2(row, rowScales, cols, xx, batch, yy, rows, r); break;
                        default: Q8RowScalar(row, rowScales, cols, xx, batch, yy, rows, r); break;
                    }
                }
            });
        }
    }

    /// <summary>bf16 bits → float32: the bf16 is the float's upper half.</summary>
    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>float32 → bf16 bits, rounding to nearest even (NaN kept quiet), as libtorch converts.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    // ---------------------------------------------------------------- scheduling

    private static KernelIsa Usable(KernelIsa isa) => isa switch
    {
        KernelIsa.Avx512 when !(Avx512F.IsSupported && Avx512BW.IsSupported) => throw new PlatformNotSupportedException("AVX-512 is not available on this CPU"),
        KernelIsa.Avx2 when !(Avx2.IsSupported && Fma.IsSupported) => throw new PlatformNotSupportedException("AVX2/FMA is not available on this CPU"),
        _ => isa,
    };

    private static void CheckShapes(long weights, int rows, int cols, long xLength, int batch, long yLength)
    {
        if (rows < 0 || cols < 0) throw new ArgumentException($"negative shape ({rows}, {cols})");
        if (batch < 1 || batch > MaxBatch) throw new ArgumentException($"batch must be 1..{MaxBatch}, got {batch}");
        if (weights != (long)rows * cols) throw new ArgumentException($"weight holds {weights} values, expected {rows} × {cols}");
        if (xLength != (long)batch * cols) throw new ArgumentException($"x holds {xLength} values, expected {batch} × {cols}");
        if (yLength != (long)batch * rows) throw new ArgumentException($"y holds {yLength} values, expected {batch} × {rows}");
    }

    /// <summary>Runs body(first, end) over [0, rows) in chunks, on up to <paramref name="threads"/> threads (0: one per core).</summary>
    private static void ForRows(int rows, int threads, Action<int, int> body)
    {
        if (threads <= 0) threads = Environment.ProcessorCount;
        int tasks = (rows + RowsPerTask - 1) / RowsPerTask;
        if (threads == 1 || tasks <= 1)
        {
            body(0, rows);
            return;
        }
        Parallel.For(0, tasks, new ParallelOptions { MaxDegreeOfParallelism = threads },
            t => body(t * RowsPerTask, Math.Min(rows, (t + 1) * RowsPerTask)));
    }

    // ---------------------------------------------------------------- bf16 rows

    private static void Bf16RowScalar(ushort* w, int cols, float* x, int batch, float* y, int rows, int r)
    {
        for (int b = 0; b < batch; b++)
        {
            float* xb = x + (long)b * cols;
            double sum = 0;   // double: the reference should not carry float rounding of its own
            for (int c = 0; c < cols; c++) sum += (double)Bf16ToFloat(w[c]) * xb[c];
            y[(long)b * rows + r] = (float)sum;
        }
    }

    /// <summary>16 bf16 → 16 float32: zero-extend each 16-bit value to 32 bits and shift it into the upper half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> WidenBf16(ushort* p) =>
        Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Avx.LoadVector256(p)), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenBf16x8(ushort* p) =>
        Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(Sse2.LoadVector128(p)), 16).AsSingle();

    private static void Bf16RowAvx512(ushort* w, int cols, float* x, int batch, float* y, int rows, int r)
    {
        int c = 0;
        if (batch == 1)
        {
            // Two accumulators hide the FMA latency; the loop is bound by the 64 bytes of weights it streams per step.
            Vector512<float> acc0 = Vector512<float>.Zero, acc1 = Vector512<float>.Zero;
            for (; c + 32 <= cols; c += 32)
            {
                acc0 = Avx512F.FusedMultiplyAdd(WidenBf16(w + c), Avx512F.LoadVector512(x + c), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(WidenBf16(w + c + 16), Avx512F.LoadVector512(x + c + 16), acc1);
            }
            for (; c + 16 <= cols; c += 16)
                acc0 = Avx512F.FusedMultiplyAdd(WidenBf16(w + c), Avx512F.LoadVector512(x + c), acc0);
            float sum = Vector512.Sum(acc0 + acc1);
            for (; c < cols; c++) sum += Bf16ToFloat(w[c]) * x[c];
            y[r] = sum;
            return;
        }
        // B rows: each widened weight vector is used B times; accumulators (B, 16) live on the stack (L1).
        var acc = stackalloc Vector512<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector512<float>.Zero;
        for (; c + 16 <= cols; c += 16)
        {
            var wv = WidenBf16(w + c);
            for (int b = 0; b < batch; b++)
                acc[b] = Avx512F.FusedMultiplyAdd(wv, Avx512F.LoadVector512(x + (long)b * cols + c), acc[b]);
        }
        for (int b = 0; b < batch; b++)
        {
            float* xb = x + (long)b * cols;
            float sum = Vector512.Sum(acc[b]);
            for (int t = c; t < cols; t++) sum += Bf16ToFloat(w[t]) * xb[t];
            y[(long)b * rows + r] = sum;
        }
    }

    private static void Bf16RowAvx2(ushort* w, int cols, float* x, int batch, float* y, int rows, int r)
    {
        var acc = stackalloc Vector256<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector256<float>.Zero;
        int c = 0;
        for (; c + 8 <= cols; c += 8)
        {
            var wv = WidenBf16x8(w + c);
            for (int b = 0; b < batch; b++)
                acc[b] = Fma.MultiplyAdd(wv, Avx.LoadVector256(x + (long)b * cols + c), acc[b]);
        }
        for (int b = 0; b < batch; b++)
        {
            float* xb = x + (long)b * cols;
            float sum = Vector256.Sum(acc[b]);
            for (int t = c; t < cols; t++) sum += Bf16ToFloat(w[t]) * xb[t];
            y[(long)b * rows + r] = sum;
        }
    }

    // ---------------------------------------------------------------- Q8_0 rows

    private static void Q8RowScalar(sbyte* q, float* scales, int cols, float* x, int batch, float* y, int rows, int r)
    {
        for (int b = 0; b < batch; b++)
        {
            float* xb = x + (long)b * cols;
            double sum = 0;
            for (int c = 0; c < cols; c++) sum += (double)q[c] * scales[c / GroupSize] * xb[c];
            y[(long)b * rows + r] = (float)sum;
        }
    }

    /// <summary>16 int8 → 16 float32 (sign-extended).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> WidenQ8(sbyte* p) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(p)));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> WidenQ8x8(sbyte* p) =>
        Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(p));

    /// <summary>B ≥ 2 rows of x (one row goes through <see cref="Q8Int16Avx512"/>).</summary>
    private static void Q8RowAvx512(sbyte* q, float* scales, int cols, float* x, int batch, float* y, int rows, int r)
    {
        int groups = cols / GroupSize;
        var acc = stackalloc Vector512<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector512<float>.Zero;
        for (int g = 0; g < groups; g++)
        {
            sbyte* p = q + g * GroupSize;
            // Scale folded into the widened weights once per group, then reused by all B rows.
            var s = Vector512.Create(scales[g]);
            var w0 = WidenQ8(p) * s;
            var w1 = WidenQ8(p + 16) * s;
            for (int b = 0; b < batch; b++)
            {
                float* xg = x + (long)b * cols + g * GroupSize;
                acc[b] = Avx512F.FusedMultiplyAdd(w1, Avx512F.LoadVector512(xg + 16), Avx512F.FusedMultiplyAdd(w0, Avx512F.LoadVector512(xg), acc[b]));
            }
        }
        for (int b = 0; b < batch; b++) y[(long)b * rows + r] = Vector512.Sum(acc[b]);
    }

    private static void Q8RowAvx2(sbyte* q, float* scales, int cols, float* x, int batch, float* y, int rows, int r)
    {
        int groups = cols / GroupSize;
        var acc = stackalloc Vector256<float>[batch];
        for (int b = 0; b < batch; b++) acc[b] = Vector256<float>.Zero;
        for (int g = 0; g < groups; g++)
        {
            sbyte* p = q + g * GroupSize;
            var s = Vector256.Create(scales[g]);
            var w0 = WidenQ8x8(p) * s;
            var w1 = WidenQ8x8(p + 8) * s;
            var w2 = WidenQ8x8(p + 16) * s;
            var w3 = WidenQ8x8(p + 24) * s;
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

    // ---------------------------------------------------------------- Q8_0 × int16 activations (one row of x)

    /// <summary>
    /// y (1, N) for a Q8_0 weight with x first rounded to int16 per group of 32 (xs = max|x| / 32767, x ≈ xq · xs): each
    /// group is then 32 int8 × int16 products summed in pairs to 16 int32 lanes by one instruction (vpmaddwd), converted to
    /// float32 once and scaled by the weight's and x's group scales: half the instructions of widening every weight to
    /// float32, which took LLaMA-7B int8 decoding from 3.14 to 4.38 tokens/s on 2 cores. Rounding x to int16 adds an
    /// error of at most 2^-16 of the group's largest |x| per element, far below the bf16 rounding the activations of a
    /// bf16 or int8 model already carry (2^-9).
    /// </summary>
    private static void Q8Int16Avx512(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, ReadOnlySpan<float> x,
        Span<float> y, int threads)
    {
        int groups = cols / GroupSize;
        var xq = System.Buffers.ArrayPool<short>.Shared.Rent(cols);
        var xs = System.Buffers.ArrayPool<float>.Shared.Rent(groups);
        try
        {
            QuantizeInt16(x, xq, xs, groups);
            fixed (sbyte* pq = q)
            fixed (float* ps = scales, py = y, pxs = xs)
            fixed (short* pxq = xq)
            {
                var (qp, sp, yp, xqp, xsp) = ((nint)pq, (nint)ps, (nint)py, (nint)pxq, (nint)pxs);
                ForRows(rows, threads, (first, end) =>
                {
                    short* xx = (short*)xqp;
                    float* xsc = (float*)xsp;
                    for (int r = first; r < end; r++)
                    {
                        sbyte* row = (sbyte*)qp + (long)r * cols;
                        float* rowScales = (float*)sp + (long)r * groups;
                        Vector512<float> acc0 = Vector512<float>.Zero, acc1 = Vector512<float>.Zero;
                        int g = 0;
                        for (; g + 2 <= groups; g += 2)
                        {
                            var d0 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(row + g * GroupSize)),
                                Avx512BW.LoadVector512(xx + g * GroupSize));
                            var d1 = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(row + (g + 1) * GroupSize)),
                                Avx512BW.LoadVector512(xx + (g + 1) * GroupSize));
                            acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d0), Vector512.Create(rowScales[g] * xsc[g]), acc0);
                            acc1 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d1), Vector512.Create(rowScales[g + 1] * xsc[g + 1]), acc1);
                        }
                        for (; g < groups; g++)
                        {
                            var d = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Avx.LoadVector256(row + g * GroupSize)),
                                Avx512BW.LoadVector512(xx + g * GroupSize));
                            acc0 = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(d), Vector512.Create(rowScales[g] * xsc[g]), acc0);
                        }
                        ((float*)yp)[r] = Vector512.Sum(acc0 + acc1);
                    }
                });
            }
        }
        finally
        {
            System.Buffers.ArrayPool<short>.Shared.Return(xq);
            System.Buffers.ArrayPool<float>.Shared.Return(xs);
        }
    }

    /// <summary>
    /// x (K) → xq (K) int16 and xs (K / 32): per group xs = max|x| / 32767 and xq = round(x / xs) (an all-zero group: 0, 0).
    /// Public for the tests, which hold the int16 path to the same rounding.
    /// </summary>
    public static void QuantizeInt16(ReadOnlySpan<float> x, Span<short> xq, Span<float> xs, int groups)
    {
        if (groups < 0 || x.Length < groups * GroupSize || xq.Length < groups * GroupSize || xs.Length < groups)
            throw new ArgumentException($"{groups} groups need {groups * GroupSize} values of x and xq and {groups} scales");
        if (Avx512F.IsSupported)
        {
            // The same arithmetic 16 lanes at a time (IEEE division and round-half-even, as below): a decode step
            // quantizes every linear layer's input, and the scalar loop was a measurable share of a small model's step.
            fixed (float* px = x)
            fixed (short* pq = xq)
                for (int g = 0; g < groups; g++)
                {
                    var v0 = Avx512F.LoadVector512(px + g * GroupSize);
                    var v1 = Avx512F.LoadVector512(px + g * GroupSize + 16);
                    var m = Vector512.Max(Vector512.Abs(v0), Vector512.Abs(v1));
                    var m8 = Vector256.Max(m.GetLower(), m.GetUpper());
                    var m4 = Vector128.Max(m8.GetLower(), m8.GetUpper());
                    float max = Math.Max(Math.Max(m4[0], m4[1]), Math.Max(m4[2], m4[3]));
                    float scale = max / 32767;
                    xs[g] = scale;
                    if (scale == 0)
                    {
                        xq.Slice(g * GroupSize, GroupSize).Clear();
                        continue;
                    }
                    var divisor = Vector512.Create(scale);
                    Avx.Store(pq + g * GroupSize, Avx512F.ConvertToVector256Int16WithSaturation(Avx512F.ConvertToVector512Int32(Vector512.Round(v0 / divisor))));
                    Avx.Store(pq + g * GroupSize + 16, Avx512F.ConvertToVector256Int16WithSaturation(Avx512F.ConvertToVector512Int32(Vector512.Round(v1 / divisor))));
                }
            return;
        }
        for (int g = 0; g < groups; g++)
        {
            var group = x.Slice(g * GroupSize, GroupSize);
            float max = 0;
            foreach (float v in group) max = Math.Max(max, Math.Abs(v));
            float scale = max / 32767;
            xs[g] = scale;
            for (int c = 0; c < GroupSize; c++)
                xq[g * GroupSize + c] = scale == 0 ? (short)0 : (short)Math.Clamp(MathF.Round(group[c] / scale), -32767, 32767);
        }
    }
}
