using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace XrayVL.Kernels;

/// <summary>
/// Quantized weights widened back to bf16 or float32, for prefill: libtorch's GEMM takes the widened rows a block at a
/// time. One pass per weight (read the int8 or nibble, multiply by its group's scale in float32, round to bf16 to nearest
/// even when bf16 is asked), so the values equal <see cref="DecodeLinear.DequantizeQ8"/> and
/// <see cref="DecodeLinear.DequantizeQ4"/> bit for bit, without their float32 transients. Rows are split across threads.
/// </summary>
public static unsafe partial class MatVec
{
    /// <summary>Q8_0 rows q (N, K) int8 with scales (N, K / 32) → w (N, K) as bf16 bits.</summary>
    public static void WidenQ8(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, Span<ushort> bf16, int threads = 0) =>
        WidenQ8(q, scales, rows, cols, bf16.Length, threads, out16: bf16, out32: default);

    /// <summary>Q8_0 rows q (N, K) int8 with scales (N, K / 32) → w (N, K) float32.</summary>
    public static void WidenQ8(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, Span<float> f32, int threads = 0) =>
        WidenQ8(q, scales, rows, cols, f32.Length, threads, out16: default, out32: f32);

    /// <summary>Q4_0 rows packed (N, K / 2) with scales (N, K / 32) → w (N, K) as bf16 bits.</summary>
    public static void WidenQ4(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int cols, Span<ushort> bf16, int threads = 0) =>
        WidenQ4(packed, scales, rows, cols, bf16.Length, threads, out16: bf16, out32: default);

    /// <summary>Q4_0 rows packed (N, K / 2) with scales (N, K / 32) → w (N, K) float32.</summary>
    public static void WidenQ4(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int cols, Span<float> f32, int threads = 0) =>
        WidenQ4(packed, scales, rows, cols, f32.Length, threads, out16: default, out32: f32);

    private static void WidenQ8(ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, int rows, int cols, long outLength, int threads,
        Span<ushort> out16, Span<float> out32)
    {
        CheckWiden(q.Length, scales.Length, rows, cols, outLength, "Q8_0");
        fixed (sbyte* pq = q)
            WidenGroups((nint)pq, nibbles: false, scales, rows, cols, threads, out16, out32);
    }

    private static void WidenQ4(ReadOnlySpan<byte> packed, ReadOnlySpan<float> scales, int rows, int cols, long outLength, int threads,
        Span<ushort> out16, Span<float> out32)
    {
        CheckWiden(2L * packed.Length, scales.Length, rows, cols, outLength, "Q4_0");
        fixed (byte* pq = packed)
            WidenGroups((nint)pq, nibbles: true, scales, rows, cols, threads, out16, out32);
    }

    /// <summary>
    /// Every group of 32 weights of rows × cols, from Q8_0 bytes (32 a group) or Q4_0 nibbles (16 bytes a group), times
    /// its scale, into whichever of <paramref name="out16"/> (bf16 bits) and <paramref name="out32"/> is not empty.
    /// </summary>
    private static void WidenGroups(nint source, bool nibbles, ReadOnlySpan<float> scales, int rows, int cols, int threads,
        Span<ushort> out16, Span<float> out32)
    {
        bool avx512 = Avx512F.IsSupported && Avx512BW.IsSupported;
        fixed (float* ps = scales, p32 = out32)
        fixed (ushort* p16 = out16)
        {
            var (sp, o16, o32) = ((nint)ps, (nint)p16, (nint)p32);
            ForRows(rows, threads, (first, end) =>
            {
                int groups = cols / GroupSize;
                for (long g = (long)first * groups; g < (long)end * groups; g++)
                {
                    float s = ((float*)sp)[g];
                    if (!nibbles)
                    {
                        sbyte* src = (sbyte*)source + g * GroupSize;
                        if (avx512)
                        {
                            var scale = Vector512.Create(s);
                            var lo = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(src))) * scale;
                            var hi = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(src + 16))) * scale;
                            Store(lo, hi, g, o16, o32);
                        }
                        else
                        {
                            for (int c = 0; c < GroupSize; c++) StoreOne(src[c] * s, g * GroupSize + c, o16, o32);
                        }
                    }
                    else
                    {
                        byte* src = (byte*)source + g * Q4GroupBytes;
                        if (avx512)
                        {
                            // Byte j: element j in the low nibble, element j + 16 in the high one.
                            var bytes = Avx512F.ConvertToVector512Int32(Sse2.LoadVector128(src));          // 16 lanes, 0..255
                            var scale = Vector512.Create(s);
                            var eight = Vector512.Create(8);
                            var lo = Avx512F.ConvertToVector512Single((bytes & Vector512.Create(15)) - eight) * scale;
                            var hi = Avx512F.ConvertToVector512Single(Avx512F.ShiftRightLogical(bytes, 4) - eight) * scale;
                            Store(lo, hi, g, o16, o32);
                        }
                        else
                        {
                            var group = new ReadOnlySpan<byte>(src, Q4GroupBytes);
                            for (int c = 0; c < GroupSize; c++) StoreOne(Q4Level(group, c) * s, g * GroupSize + c, o16, o32);
                        }
                    }
                }
            });
        }
    }

    /// <summary>The 32 widened weights of group <paramref name="g"/> (elements 0..15, 16..31) into whichever output is set.</summary>
    private static void Store(Vector512<float> lo, Vector512<float> hi, long g, nint o16, nint o32)
    {
        if (o32 != 0)
        {
            float* dst = (float*)o32 + g * GroupSize;
            Avx512F.Store(dst, lo);
            Avx512F.Store(dst + 16, hi);
            return;
        }
        ushort* d16 = (ushort*)o16 + g * GroupSize;
        Avx.Store(d16, ToBf16(lo));
        Avx.Store(d16 + 16, ToBf16(hi));
    }

    private static void StoreOne(float value, long index, nint o16, nint o32)
    {
        if (o32 != 0) ((float*)o32)[index] = value;
        else ((ushort*)o16)[index] = FloatToBf16(value);
    }

    /// <summary>16 float32 → 16 bf16 bits, rounding to nearest even as <see cref="FloatToBf16"/> (the values are finite).</summary>
    private static Vector256<ushort> ToBf16(Vector512<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = bits + Vector512.Create(0x7FFFu) + (Avx512F.ShiftRightLogical(bits, 16) & Vector512.Create(1u));
        return Avx512F.ConvertToVector256UInt16(Avx512F.ShiftRightLogical(rounded, 16));
    }

    private static void CheckWiden(long weights, long scaleCount, int rows, int cols, long outLength, string format)
    {
        if (rows < 0 || cols < 0 || cols % GroupSize != 0)
            throw new ArgumentException($"{format} needs a row length divisible by {GroupSize}, got ({rows}, {cols})");
        if (weights != (long)rows * cols) throw new ArgumentException($"{format} weight holds {weights} values, expected {rows} × {cols}");
        if (scaleCount != (long)rows * (cols / GroupSize)) throw new ArgumentException($"{format} scales: expected {rows} × {cols / GroupSize}, got {scaleCount}");
        if (outLength != (long)rows * cols) throw new ArgumentException($"output holds {outLength} values, expected {rows} × {cols}");
    }
}
