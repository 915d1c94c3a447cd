using System.Reflection;
using Microsoft.ML.OnnxRuntime;
using DenseTensor = Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Cli;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.IO;

/// <summary>
/// The ImageNet ResNet-18 of NuGet's Microsoft.ML.DnnImageFeaturizer.ResNet18 (fetched by restore; its path is in this
/// assembly's metadata), converted to ResNetEncoder keys and run in TorchSharp, against ONNX Runtime running the ONNX file
/// itself on the same input: the 512 pooled features must agree to 1e-3 of their largest magnitude.
/// </summary>
public class ResNetOnnxTests
{
    static ResNetOnnxTests() => TestRuntime.Initialize();

    private static string OnnxPath =>
        typeof(ResNetOnnxTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "ResNet18Onnx").Value!;

    private static readonly Lazy<OnnxGraph> Graph = new(() => OnnxGraph.Read(OnnxPath));
    private static readonly float[] Means = [123f, 117f, 104f];

    /// <summary>ONNX Runtime's pooled output for N images (BGR, the graph's own order), one at a time (the graph's batch is 1): (N, 512).</summary>
    private static float[] RunOnnx(float[] bgr, int batch)
    {
        using var session = new InferenceSession(OnnxPath);
        string input = session.InputMetadata.Keys.Single();
        int size = 3 * 224 * 224;
        var pooled = new List<float>();
        for (int i = 0; i < batch; i++)
        {
            var tensor = new DenseTensor(bgr.AsMemory(i * size, size), [1, 3, 224, 224]);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor(input, tensor)]);
            pooled.AddRange(results.First().AsEnumerable<float>());
        }
        return [.. pooled];
    }

    private static float[] RunTorch(OnnxGraph graph, int channels, Tensor pixels)
    {
        using var converted = ResNetOnnx.Convert(graph, channels, Means);
        using var encoder = new ResNetEncoder(converted.Config);
        var state = new Dictionary<string, Tensor>(converted.Weights);
        foreach (var key in encoder.state_dict().Keys.Where(k => k.EndsWith(".num_batches_tracked")))
            state[key] = zeros(1, dtype: ScalarType.Int64).squeeze();
        ModuleWeights.LoadInto(encoder, state);
        encoder.eval();
        using var _ = no_grad();
        return encoder.Pooled(pixels).data<float>().ToArray();
    }

    private static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        float scale = expected.Max(Math.Abs);
        float worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(scale > 0.1f, $"reference features are all near zero (max {scale})");
        Assert.True(worst <= 1e-3f * scale, $"max abs difference {worst:G4} exceeds 1e-3 × {scale:G4}");
    }

    [Fact]
    public void GraphWalkFindsResNet18WithAFourth512Block()
    {
        var graph = Graph.Value;
        Assert.Equal("CNTK", graph.Producer);
        using var converted = ResNetOnnx.Convert(graph, 3, Means);
        Assert.Equal([2, 2, 2, 3], converted.Config.Layers);
        Assert.Equal(64, converted.Config.Width);
        Assert.Equal(new long[] { 64, 3, 7, 7 }, converted.Weights["conv1.weight"].shape);
        Assert.Equal(new long[] { 512, 256, 1, 1 }, converted.Weights["layer4.0.downsample.0.weight"].shape);
        Assert.True(converted.Weights.ContainsKey("layer4.2.conv2.weight"));
        // 15.9M values: every Conv and BN initializer of the graph is used once.
        long used = converted.Weights.Values.Sum(t => t.numel());
        long all = graph.Initializers.Values.Sum(t => (long)t.Data.Length);
        Assert.Equal(all, used);
    }

    [Fact]
    public void StagesCanBeCutToTheirFirstBlocks()
    {
        using var converted = ResNetOnnx.Convert(Graph.Value, 1, Means, keepLayers: [2, 2, 2, 1]);
        Assert.Equal([2, 2, 2, 1], converted.Config.Layers);
        Assert.DoesNotContain(converted.Weights.Keys, k => k.StartsWith("layer4.1.") || k.StartsWith("layer4.2."));
        using var encoder = new ResNetEncoder(converted.Config);
        var state = new Dictionary<string, Tensor>(converted.Weights);
        foreach (var key in encoder.state_dict().Keys.Where(k => k.EndsWith(".num_batches_tracked")))
            state[key] = zeros(1, dtype: ScalarType.Int64).squeeze();
        ModuleWeights.LoadInto(encoder, state);                           // every key of the shorter encoder, nothing else
        Assert.InRange(converted.Weights.Values.Sum(t => t.numel()), 6_400_000, 6_600_000);
        var e = Assert.Throws<XrayVLException>(() => ResNetOnnx.Convert(Graph.Value, 1, Means, keepLayers: [2, 2, 2, 4]));
        Assert.Contains("cannot be cut", e.Message);
    }

    [Fact]
    public void PooledFeaturesMatchOnnxRuntimeOnRgbInput()
    {
        var graph = Graph.Value;
        var gen = new TorchSharp.torch.Generator(7);
        // 0–255 pixels minus ImageNet-like means: the scale the graph was trained on. (2, 3, 224, 224), RGB.
        using var rgb = rand([2, 3, 224, 224], generator: gen) * 255f - 120f;
        float[] bgr = rgb.flip(1).contiguous().data<float>().ToArray();
        AssertClose(RunOnnx(bgr, 2), RunTorch(graph, 3, rgb));
    }

    [Fact]
    public void OneChannelStemMatchesOnnxRuntimeOnGrayRepeated()
    {
        var graph = Graph.Value;
        var gen = new TorchSharp.torch.Generator(11);
        using var gray = rand([1, 1, 224, 224], generator: gen) * 255f - 115f;
        float[] bgr = gray.expand(1, 3, 224, 224).contiguous().data<float>().ToArray();
        AssertClose(RunOnnx(bgr, 1), RunTorch(graph, 1, gray));
    }

    [Fact]
    public void CliWritesAVisionTowerFolderThatLoads()
    {
        string outDir = Path.Combine(TempDir.Create("xrayvl-resnet-onnx"), "resnet18");
        var r = CliRunner.Run("convert", "resnet18-onnx", "nuget", outDir, "--channels", "1");
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("[2,2,2,3]", r.Out);
        using var tower = Checkpoint.LoadVisionTower(outDir);
        Assert.Equal(1, tower.Config.NumChannels);
        var prep = ConfigFile.Read<XrayVL.Imaging.PreprocessConfig>(Path.Combine(outDir, Checkpoint.PreprocessorFileName));
        Assert.Single(prep.Mean);
        Assert.InRange(prep.Mean[0] * 255, 100, 125);    // the mean image's RGB average (about 114)
        Assert.Equal(1 / 255f, prep.Std[0], 1e-7f);
    }

    [Fact]
    public void NotAnOnnxFileIsAOneLineError()
    {
        string dir = TempDir.Create("xrayvl-resnet-onnx-bad");
        string bad = Path.Combine(dir, "bad.onnx");
        File.WriteAllBytes(bad, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x01]);
        var r = CliRunner.Run("convert", "resnet18-onnx", bad, Path.Combine(dir, "out"), "--preprocess", bad);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("bad.onnx", r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        var missing = CliRunner.Run("convert", "resnet18-onnx", Path.Combine(dir, "none.onnx"), Path.Combine(dir, "out"));
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("file not found", missing.Err);
    }
}
