using System.Runtime.InteropServices;
using TorchSharp;
using XrayVL.Kernels;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Kernels;

/// <summary>
/// Q4_0: the kernels against the scalar reference and against plain double sums over levels unpacked here from the
/// documented layout; the quantizer against a scalar quantizer written here; a Q4_0 linear layer against libtorch.
/// </summary>
public class Q4KernelTests
{
    /// <summary>Level (−8..7) of element c of a row, unpacked from the documented layout by hand.</summary>
    private static int Level(byte[] packed, int rowStart, int c)
    {
        int group = c / 32, within = c % 32;
        byte b = packed[rowStart + group * 16 + within % 16];
        return (within < 16 ? b & 0xF : b >> 4) - 8;
    }

    [Theory]
    [MemberData(nameof(MatVecKernelTests.Isas), MemberType = typeof(MatVecKernelTests))]
    public void Q4_matches_the_scalar_reference_and_plain_sums(KernelIsa isa)
    {
        var random = new Random(11);
        foreach (int cols in new[] { 32, 96, 1024 + 64 })
        foreach (int rows in new[] { 1, 3, 130 })
        foreach (int batch in new[] { 1, 2, 5, 8 })
        foreach (int threads in new[] { 1, 2 })
        {
            int groups = cols / 32;
            var packed = new byte[rows * cols / 2];
            random.NextBytes(packed);
            var scales = Enumerable.Range(0, rows * groups).Select(_ => (float)((random.NextDouble() * 2 - 1) * 0.05)).ToArray();
            var x = Enumerable.Range(0, batch * cols).Select(_ => (float)((random.NextDouble() * 2 - 1) * 3)).ToArray();
            var expected = new float[batch * rows];
            var magnitude = new double[batch * rows];
            for (int b = 0; b < batch; b++)
            for (int r = 0; r < rows; r++)
            {
                double sum = 0, abs = 0;
                for (int c = 0; c < cols; c++)
                {
                    double p = (double)Level(packed, r * cols / 2, c) * scales[r * groups + c / 32] * x[b * cols + c];
                    sum += p;
                    abs += Math.Abs(p);
                }
                expected[b * rows + r] = (float)sum;
                magnitude[b * rows + r] = abs;
            }
            var reference = new float[batch * rows];
            MatVec.Q4(packed, scales, rows, cols, x, batch, reference, KernelIsa.Scalar, threads);
            AssertClose(expected, reference, magnitude, 1e-7);
            var actual = new float[batch * rows];
            MatVec.Q4(packed, scales, rows, cols, x, batch, actual, isa, threads);
            AssertClose(reference, actual, magnitude, 2e-6);
        }
    }

    private static void AssertClose(float[] expected, float[] actual, double[] magnitude, double relative)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * magnitude[i] + 1e-6,
                $"output {i}: expected {expected[i]}, got {actual[i]} (Σ|w·x| = {magnitude[i]})");
    }

    [Fact]
    public void Q4_refuses_shapes_it_does_not_take()
    {
        Assert.Throws<ArgumentException>(() => MatVec.Q4(new byte[2 * 20], new float[2], 2, 40, new float[40], 1, new float[2]));
        Assert.Throws<ArgumentException>(() => MatVec.Q4(new byte[2 * 16], new float[1], 2, 32, new float[32], 1, new float[2]));
        Assert.Throws<ArgumentException>(() => MatVec.Q4(new byte[2 * 16], new float[2], 2, 32, new float[32 * 9], 9, new float[18]));
    }

    [Fact]
    public void Q4_quantizer_matches_a_scalar_quantizer_and_bounds_the_error()
    {
        var random = new Random(12);
        int rows = 5, cols = 96;
        var w = Enumerable.Range(0, rows * cols).Select(_ => (float)((random.NextDouble() * 2 - 1) * 0.5)).ToArray();
        for (int c = 32; c < 64; c++) w[2 * cols + c] = 0;   // an all-zero group: scale 0, level 0
        using var weight = torch.tensor(w).view(rows, cols);
        var (pt, st) = DecodeLinear.QuantizeQ4(weight);
        using var _p = pt;
        using var _s = st;
        Assert.Equal([rows, cols / 2], pt.shape);
        Assert.Equal([rows, cols / 32], st.shape);
        var packed = pt.bytes.ToArray();
        var s = MemoryMarshal.Cast<byte, float>(st.bytes).ToArray();
        for (int r = 0; r < rows; r++)
        for (int g = 0; g < cols / 32; g++)
        {
            // The weight of largest magnitude, with its sign, is level −8 exactly.
            float extreme = 0;
            for (int c = 0; c < 32; c++)
                if (Math.Abs(w[r * cols + g * 32 + c]) > Math.Abs(extreme)) extreme = w[r * cols + g * 32 + c];
            float scale = extreme / -8;
            Assert.Equal(scale, s[r * (cols / 32) + g]);
            for (int c = 0; c < 32; c++)
            {
                int i = r * cols + g * 32 + c;
                float unclamped = scale == 0 ? 0 : MathF.Round(w[i] / scale);
                int expected = (int)Math.Clamp(unclamped, -8, 7);
                int level = Level(packed, r * cols / 2, g * 32 + c);
                Assert.Equal(expected, level);
                // Half a step, or a whole one where +8 steps (the extreme's opposite) is clamped to 7.
                double allowed = Math.Abs(scale) * (unclamped > 7 ? 1 : 0.5);
                Assert.True(Math.Abs(level * scale - w[i]) <= allowed * 1.0001 + 1e-12);
            }
        }
        using var back = DecodeLinear.DequantizeQ4(pt, st, ScalarType.Float32);
        Assert.True((back - weight).abs().max().item<float>() <= s.Max(Math.Abs) * 1.0001);
    }

    [Fact]
    public void A_Q4_linear_layer_takes_the_kernel_for_few_rows_and_agrees_with_libtorch_on_the_dequantized_weight()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var random = new torch.Generator(13);
        var linear = new AdaptableLinear(96, 40, hasBias: true);
        linear.ResetParameters(random);
        linear.QuantizeQ4();
        Assert.Equal(LinearQuantization.Q4, linear.Quantization);
        Assert.Equal(ScalarType.Byte, linear.Weight.dtype);
        Assert.Equal([40, 48], linear.Weight.shape);
        var dense = DecodeLinear.DequantizeQ4(linear.Weight, linear.WeightScale!, ScalarType.Float32);
        var x = torch.randn([12, 96], generator: random);
        var expected = nn.functional.linear(x, dense, linear.Bias);
        var many = linear.call(x);                       // 12 rows: libtorch on the widened weight
        var few = linear.call(x.narrow(0, 0, 4));        // 4 rows: the Q4_0 kernel
        Assert.True(torch.allclose(many, expected, rtol: 1e-5, atol: 1e-5));
        Assert.True(torch.allclose(few, expected.narrow(0, 0, 4), rtol: 1e-4, atol: 1e-4));
        var bf16 = linear.call(x.narrow(0, 0, 2).to(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Assert.Throws<XrayVLException>(() => linear.AttachLora(4, 1.0, 0));
    }
}
