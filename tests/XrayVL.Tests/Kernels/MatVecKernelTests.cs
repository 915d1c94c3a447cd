using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using XrayVL.Kernels;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Kernels;

/// <summary>
/// The decode kernels against their scalar reference (and the reference against plain double sums written here), for
/// every instruction set this CPU has, batches 1..8, odd lengths, and one or two threads.
/// </summary>
public class MatVecKernelTests
{
    public static TheoryData<KernelIsa> Isas()
    {
        var data = new TheoryData<KernelIsa> { KernelIsa.Scalar };
        if (Avx2.IsSupported && Fma.IsSupported) data.Add(KernelIsa.Avx2);
        if (Avx512F.IsSupported && Avx512BW.IsSupported) data.Add(KernelIsa.Avx512);
        return data;
    }

    private static float[] RandomFloats(Random random, int count, double scale = 1.0) =>
        Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2 - 1) * scale)).ToArray();

    /// <summary>|a − b| within a tolerance relative to Σ|w·x| of that output (the sum's own rounding scale).</summary>
    private static void AssertClose(float[] expected, float[] actual, double[] magnitude, double relative)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * magnitude[i] + 1e-6,
                $"output {i}: expected {expected[i]}, got {actual[i]} (Σ|w·x| = {magnitude[i]})");
    }

    [Theory]
    [MemberData(nameof(Isas))]
    public void Bf16_matches_the_scalar_reference_and_plain_sums(KernelIsa isa)
    {
        var random = new Random(1);
        foreach (int cols in new[] { 1, 7, 16, 37, 100, 512 + 7 })
        foreach (int rows in new[] { 1, 3, 130 })
        foreach (int batch in new[] { 1, 2, 5, 8 })
        foreach (int threads in new[] { 1, 2 })
        {
            var w = RandomFloats(random, rows * cols).Select(MatVec.FloatToBf16).ToArray();
            var x = RandomFloats(random, batch * cols, 3);
            var expected = new float[batch * rows];
            var magnitude = new double[batch * rows];
            for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
            {
                double sum = 0, abs = 0;
                for (int c = 0; c < cols; c++)
                {
                    double p = (double)MatVec.Bf16ToFloat(w[r * cols + c]) * x[b * cols + c];
                    sum += p;
                    abs += Math.Abs(p);
                }
                expected[b * rows + r] = (float)sum;
                magnitude[b * rows + r] = abs;
            }
            var reference = new float[batch * rows];
            MatVec.Bf16(w, rows, cols, x, batch, reference, KernelIsa.Scalar, threads);
            AssertClose(expected, reference, magnitude, 1e-7);
            var actual = new float[batch * rows];
            MatVec.Bf16(w, rows, cols, x, batch, actual, isa, threads);
            AssertClose(reference, actual, magnitude, 2e-6);
        }
    }

    [Theory]
    [MemberData(nameof(Isas))]
    public void Q8_matches_the_scalar_reference_and_plain_sums(KernelIsa isa)
    {
        var random = new Random(2);
        foreach (int cols in new[] { 32, 96, 1024 + 64 })
        foreach (int rows in new[] { 1, 3, 130 })
        foreach (int batch in new[] { 1, 2, 5, 8 })
        foreach (int threads in new[] { 1, 2 })
        {
            int groups = cols / MatVec.GroupSize;
            var q = Enumerable.Range(0, rows * cols).Select(_ => (sbyte)random.Next(-127, 128)).ToArray();
            var scales = RandomFloats(random, rows * groups, 0.01);
            var x = RandomFloats(random, batch * cols, 3);
            var expected = new float[batch * rows];
            var magnitude = new double[batch * rows];
            for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
            {
                double sum = 0, abs = 0;
                for (int c = 0; c < cols; c++)
                {
                    double p = (double)q[r * cols + c] * scales[r * groups + c / 32] * x[b * cols + c];
                    sum += p;
                    abs += Math.Abs(p);
                }
                expected[b * rows + r] = (float)sum;
                magnitude[b * rows + r] = abs;
            }
            var reference = new float[batch * rows];
            MatVec.Q8(q, scales, rows, cols, x, batch, reference, KernelIsa.Scalar, threads);
            AssertClose(expected, reference, magnitude, 1e-7);
            var actual = new float[batch * rows];
            MatVec.Q8(q, scales, rows, cols, x, batch, actual, isa, threads);
            if (batch == 1 && isa == KernelIsa.Avx512)
            {
                // One row of x goes through int16 activations: exact against x rounded the same way (integer sums; only
                // the float scaling rounds), and within 2^-16 of each group's largest |x| per element of the float reference.
                var (rounded, roundedMagnitude) = Products(rows, cols, (r, c) => (double)q[r * cols + c] * scales[r * groups + c / 32], RoundedX(x));
                AssertClose(rounded, actual, roundedMagnitude, 2e-6);
                AssertClose(reference, actual, magnitude, 1e-4);
                Assert.NotEqual(reference, actual);   // the int16 path did run: its rounding shows somewhere
            }
            else AssertClose(reference, actual, magnitude, 2e-6);
        }
    }

    /// <summary>
    /// One row of x as the one-row int16 path rounds it, the vectorized rounding checked against its definition
    /// (xs = max|x| / 32767, xq = round(x / xs)): the values xq · xs.
    /// </summary>
    private static double[] RoundedX(float[] x)
    {
        int groups = x.Length / MatVec.GroupSize;
        var xs = new float[groups];
        var xq = new short[x.Length];
        MatVec.QuantizeInt16(x, xq, xs, groups);
        for (int g = 0; g < groups; g++)
        {
            float max = 0;
            for (int c = 0; c < 32; c++) max = Math.Max(max, Math.Abs(x[g * 32 + c]));
            Assert.Equal(max / 32767, xs[g]);
            for (int c = 0; c < 32; c++) Assert.Equal((short)MathF.Round(x[g * 32 + c] / xs[g]), xq[g * 32 + c]);
        }
        return xq.Select((v, c) => (double)v * xs[c / 32]).ToArray();
    }

    /// <summary>y[r] = Σ_c weight(r, c) · x[c] in double, and Σ_c |weight(r, c) · x[c]| (the tolerance's scale).</summary>
    private static (float[] Sums, double[] Magnitude) Products(int rows, int cols, Func<int, int, double> weight, double[] x)
    {
        var (sums, magnitude) = (new float[rows], new double[rows]);
        for (int r = 0; r < rows; r++)
        {
            double sum = 0, abs = 0;
            for (int c = 0; c < cols; c++)
            {
                double p = weight(r, c) * x[c];
                sum += p;
                abs += Math.Abs(p);
            }
            (sums[r], magnitude[r]) = ((float)sum, abs);
        }
        return (sums, magnitude);
    }

    [Fact]
    public void The_isa_variable_caps_the_kernels_and_names_bad_values()
    {
        Assert.Equal(KernelIsa.Avx512, MatVec.FromEnvironment(null, KernelIsa.Avx512));
        Assert.Equal(KernelIsa.Avx512, MatVec.FromEnvironment(" ", KernelIsa.Avx512));
        Assert.Equal(KernelIsa.Avx2, MatVec.FromEnvironment("AVX2", KernelIsa.Avx512));
        Assert.Equal(KernelIsa.Scalar, MatVec.FromEnvironment("scalar", KernelIsa.Avx2));
        var unknown = Assert.Throws<XrayVLException>(() => MatVec.FromEnvironment("avx10", KernelIsa.Avx512));
        Assert.Contains(MatVec.IsaVariable, unknown.Message);
        Assert.Contains("scalar, avx2, avx512", unknown.Message);
        Assert.Throws<XrayVLException>(() => MatVec.FromEnvironment("7", KernelIsa.Avx512));   // a number Enum.TryParse takes
        var above = Assert.Throws<XrayVLException>(() => MatVec.FromEnvironment("avx512", KernelIsa.Avx2));
        Assert.Contains("avx2", above.Message);
    }

    [Fact]
    public void Kernels_refuse_shapes_they_do_not_take()
    {
        var y = new float[9 * 2];
        Assert.Throws<ArgumentException>(() => MatVec.Bf16(new ushort[2 * 4], 2, 4, new float[9 * 4], 9, y));
        Assert.Throws<ArgumentException>(() => MatVec.Bf16(new ushort[2 * 4], 2, 4, new float[3], 1, new float[2]));
        Assert.Throws<ArgumentException>(() => MatVec.Q8(new sbyte[2 * 40], new float[2], 2, 40, new float[40], 1, new float[2]));
        Assert.Throws<ArgumentException>(() => MatVec.Q8(new sbyte[2 * 32], new float[1], 2, 32, new float[32], 1, new float[2]));
    }

    [Fact]
    public void Bf16_conversion_rounds_as_libtorch()
    {
        var values = RandomFloats(new Random(3), 4096, 100).Concat([0f, -0f, 1e-40f, float.MaxValue, float.PositiveInfinity]).ToArray();
        using var t = torch.tensor(values).to(ScalarType.BFloat16);
        var bits = MemoryMarshal.Cast<byte, ushort>(t.bytes).ToArray();
        for (int i = 0; i < values.Length; i++) Assert.Equal(bits[i], MatVec.FloatToBf16(values[i]));
        Assert.True(float.IsNaN(MatVec.Bf16ToFloat(MatVec.FloatToBf16(float.NaN))));
    }

    [Fact]
    public void Q8_quantizer_matches_a_scalar_quantizer_and_bounds_the_error()
    {
        var random = new Random(4);
        int rows = 5, cols = 96;
        var w = RandomFloats(random, rows * cols, 0.5);
        for (int c = 32; c < 64; c++) w[2 * cols + c] = 0;   // an all-zero group: scale 0, q 0
        using var weight = torch.tensor(w).view(rows, cols);
        var (qt, st) = DecodeLinear.QuantizeQ8(weight);
        using var _q = qt;
        using var _s = st;
        Assert.Equal([rows, cols / 32], st.shape);
        var q = MemoryMarshal.Cast<byte, sbyte>(qt.bytes).ToArray();
        var s = MemoryMarshal.Cast<byte, float>(st.bytes).ToArray();
        for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols / 32; g++)
        {
            float max = 0;
            for (int c = 0; c < 32; c++) max = Math.Max(max, Math.Abs(w[r * cols + g * 32 + c]));
            float scale = max / 127;
            Assert.Equal(scale, s[r * (cols / 32) + g]);
            for (int c = 0; c < 32; c++)
            {
                int i = r * cols + g * 32 + c;
                int expected = scale == 0 ? 0 : (int)Math.Clamp(MathF.Round(w[i] / scale), -127, 127);
                Assert.Equal(expected, q[i]);
                Assert.True(Math.Abs(q[i] * scale - w[i]) <= scale / 2 * 1.0001 + 1e-12);
            }
        }
        using var back = DecodeLinear.DequantizeQ8(qt, st, ScalarType.Float32);
        Assert.True((back - weight).abs().max().item<float>() <= s.Max() / 2 * 1.0001);
    }

    [Fact]
    public void Linear_layers_take_the_kernels_for_few_rows_and_agree_with_libtorch()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var random = new torch.Generator(5);
        var linear = new AdaptableLinear(96, 40, hasBias: true);
        linear.ResetParameters(random);
        linear.to(ScalarType.BFloat16);
        var x = torch.randn([3, 2, 96], generator: random).to(ScalarType.BFloat16);   // 6 rows: the kernel
        var expected = nn.functional.linear(x.to(ScalarType.Float32), linear.Weight.to(ScalarType.Float32), linear.Bias!.to(ScalarType.Float32));
        var viaKernel = linear.call(x);
        Assert.Equal(ScalarType.BFloat16, viaKernel.dtype);
        Assert.Equal([3, 2, 40], viaKernel.shape);
        // Only the final rounding to bf16 differs: ≤ 2^-8 relative, plus slack for values near 0.
        Assert.True((viaKernel.to(ScalarType.Float32) - expected).abs().le(expected.abs() * 0.0079 + 1e-3).all().item<bool>());

        linear.QuantizeQ8();
        Assert.True(linear.IsQuantized);
        Assert.Equal(ScalarType.Int8, linear.Weight.dtype);
        Assert.Contains(linear.state_dict().Keys, k => k == "weight_scale");
        var x32 = torch.randn([12, 96], generator: random);
        var many = linear.call(x32);                      // 12 rows: libtorch on the widened weight
        var few = linear.call(x32.narrow(0, 0, 4));       // 4 rows: the Q8_0 kernel
        Assert.True(torch.allclose(many.narrow(0, 0, 4), few, rtol: 1e-4, atol: 1e-4));
        Assert.Throws<XrayVLException>(() => linear.AttachLora(4, 1.0, 0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Widening_equals_the_torch_dequantizers_bit_for_bit(int threads)
    {
        var random = new Random(6);
        int rows = 131, cols = 96;                       // 131 rows: three blocks of rows on two threads, the last one short
        using var weight = torch.tensor(RandomFloats(random, rows * cols, 0.7)).view(rows, cols);
        var (q8, s8) = DecodeLinear.QuantizeQ8(weight);
        var (q4, s4) = DecodeLinear.QuantizeQ4(weight);
        using var _ = torch.NewDisposeScope();
        var q8b = MemoryMarshal.Cast<byte, sbyte>(q8.bytes);
        var q4b = q4.bytes;
        var s8f = MemoryMarshal.Cast<byte, float>(s8.bytes);
        var s4f = MemoryMarshal.Cast<byte, float>(s4.bytes);

        var bf16 = new ushort[rows * cols];
        var f32 = new float[rows * cols];
        MatVec.WidenQ8(q8b, s8f, rows, cols, bf16, threads);
        MatVec.WidenQ8(q8b, s8f, rows, cols, f32, threads);
        Assert.Equal(MemoryMarshal.Cast<byte, ushort>(DecodeLinear.DequantizeQ8(q8, s8, ScalarType.BFloat16).bytes).ToArray(), bf16);
        Assert.Equal(MemoryMarshal.Cast<byte, float>(DecodeLinear.DequantizeQ8(q8, s8, ScalarType.Float32).bytes).ToArray(), f32);
        MatVec.WidenQ4(q4b, s4f, rows, cols, bf16, threads);
        MatVec.WidenQ4(q4b, s4f, rows, cols, f32, threads);
        Assert.Equal(MemoryMarshal.Cast<byte, ushort>(DecodeLinear.DequantizeQ4(q4, s4, ScalarType.BFloat16).bytes).ToArray(), bf16);
        Assert.Equal(MemoryMarshal.Cast<byte, float>(DecodeLinear.DequantizeQ4(q4, s4, ScalarType.Float32).bytes).ToArray(), f32);
        var (qa, sa) = (q8b.ToArray(), s8f.ToArray());
        Assert.Throws<ArgumentException>(() => MatVec.WidenQ8(qa, sa, rows, cols, new float[rows * cols - 1], threads));
    }

    [Theory]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    public void Quantized_prefill_equals_linear_on_the_dequantized_weight(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        using var random = new torch.Generator(7);
        // 3000 × 1024: three blocks of 2048 float32 rows' bytes, so the reused block is narrowed for the last one.
        var weight = torch.randn([3000, 1024], generator: random).mul_(0.05);
        var bias = torch.randn([3000], generator: random);
        var x = torch.randn([2, 9, 1024], generator: random).to(dtype);
        var (q8, s8) = DecodeLinear.QuantizeQ8(weight);
        var (q4, s4) = DecodeLinear.QuantizeQ4(weight);
        var expected8 = nn.functional.linear(x, DecodeLinear.DequantizeQ8(q8, s8, dtype), bias.to(dtype));
        var expected4 = nn.functional.linear(x, DecodeLinear.DequantizeQ4(q4, s4, dtype), bias.to(dtype));
        // The widened weights are exact (the test above); the products differ only by where the bias is added and by
        // GEMM blocking: within x's dtype's rounding.
        double tolerance = dtype == ScalarType.Float32 ? 1e-5 : 1e-2;
        Assert.True(torch.allclose(expected8, DecodeLinear.Q8Prefill(x, q8, s8, bias), rtol: tolerance, atol: tolerance));
        Assert.True(torch.allclose(expected4, DecodeLinear.Q4Prefill(x, q4, s4, bias), rtol: tolerance, atol: tolerance));
        Assert.Equal(dtype, DecodeLinear.Q8Prefill(x, q8, s8, bias).dtype);
    }
}
