using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class ProjectorTests
{
    private static List<string> KeyShapes(nn.Module module) =>
        module.state_dict().Select(kv => $"{kv.Key} ({string.Join(", ", kv.Value.shape)})").Order(StringComparer.Ordinal).ToList();

    private static void AssertClose(Tensor expected, Tensor actual, double tolerance)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected - actual).abs().max().item<float>();
        Assert.True(diff <= tolerance, $"max |diff| {diff:G3} > {tolerance:G3}");
    }

    private static Tensor Linear(Tensor x, Dictionary<string, Tensor> sd, string name) =>
        x.matmul(sd[name + ".weight"].t()) + sd[name + ".bias"];

    [Theory]
    [InlineData("linear", 8, 8, new[] { "linear_1.bias (6)", "linear_1.weight (6, 5)" })]
    [InlineData("mlp2x_gelu", 8, 8, new[] { "linear_1.bias (6)", "linear_1.weight (6, 5)", "linear_2.bias (6)", "linear_2.weight (6, 6)" })]
    [InlineData("merge4", 8, 2, new[] { "linear_1.bias (6)", "linear_1.weight (6, 20)" })]
    public void KeysShapesAndTokenCountsFollowHfLlavaNames(string type, int tokens, int outTokens, string[] keys)
    {
        using var projector = Projector.Create(type, visionDim: 5, textDim: 6);
        Assert.Equal(keys, KeyShapes(projector));
        Assert.Equal(outTokens, projector.OutputTokens(tokens));
        using var _ = no_grad();
        Assert.Equal(new long[] { 3, outTokens, 6 }, projector.call(randn(3, tokens, 5)).shape);
    }

    [Fact]
    public void LinearAndMlpMatchTheirFormulas()
    {
        manual_seed(1);
        var x = randn(2, 7, 5);
        using var _ = no_grad();
        using var linear = Projector.Create("linear", 5, 6);
        AssertClose(Linear(x, linear.state_dict(), "linear_1"), linear.call(x), 1e-6);

        using var mlp = Projector.Create("mlp2x_gelu", 5, 6);
        var sd = mlp.state_dict();
        var h = Linear(x, sd, "linear_1");
        h = 0.5 * h * (1 + (h / Math.Sqrt(2)).erf()); // exact GELU, as HF's "gelu"
        AssertClose(Linear(h, sd, "linear_2"), mlp.call(x), 1e-6);
    }

    [Fact]
    public void Merge4ConcatenatesTokens4iTo4iPlus3ThenProjects()
    {
        manual_seed(2);
        var x = randn(2, 12, 5); // (B, N, Dv)
        using var merge = Projector.Create("merge4", 5, 6);
        var sd = merge.state_dict();
        using var _ = no_grad();
        var rows = new List<Tensor>();
        for (int i = 0; i < 3; i++)
        {
            var parts = Enumerable.Range(4 * i, 4).Select(t => x.narrow(1, t, 1)).ToList(); // 4 × (B, 1, Dv)
            rows.Add(cat(parts, 2)); // (B, 1, 4·Dv): token 4i's features first
        }
        var expected = Linear(cat(rows, 1), sd, "linear_1"); // (B, 3, D)
        AssertClose(expected, merge.call(x), 1e-6);
    }

    [Fact]
    public void Merge4RefusesTokenCountsNotDivisibleByFour()
    {
        using var merge = Projector.Create("merge4", 5, 6);
        var e = Assert.Throws<XrayVLException>(() => merge.call(randn(1, 49, 5)));
        Assert.Contains("49", e.Message);
        Assert.Contains("not a multiple of 4", e.Message);
        Assert.Throws<XrayVLException>(() => merge.OutputTokens(197));
    }

    [Fact]
    public void MismatchedVisionWidthIsAUserError()
    {
        using var linear = Projector.Create("linear", 5, 6);
        var e = Assert.Throws<XrayVLException>(() => linear.call(randn(1, 4, 7)));
        Assert.Contains("(B, N, 5), got (1, 4, 7)", e.Message);
    }

    [Fact]
    public void UnknownProjectorTypeIsAUserError()
    {
        var e = Assert.Throws<XrayVLException>(() => Projector.Create("qformer", 5, 6));
        Assert.Contains("'qformer'", e.Message);
    }
}
