using System.Text.Json;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>
/// EVA ViT-g against the seeds' own outputs (../shared/reference/seeds/{xraygpt, minigpt_med}/refs), loading their
/// eva_vit_g.pth as it is: XrayGPT at its native grid, MiniGPT-Med at twice the grid (positions interpolated).
/// </summary>
public sealed class EvaVisionTransformerTests
{
    private static string Seed(params string[] parts) => Path.Combine([SharedData.Root, "..", "reference", "seeds", .. parts]);

    /// <summary>A reference tensor: raw little-endian f32 with its shape from refs/manifest.json.</summary>
    private static Tensor Reference(string seed, string name) =>
        new ReferenceOutputs(Seed(seed, "refs")).Tensor(name);

    private static double RelativeError(Tensor actual, Tensor expected)
    {
        Assert.Equal(expected.shape, actual.shape);
        return ((actual - expected).norm() / expected.norm()).item<float>();
    }

    private static void AssertClose(Tensor actual, Tensor expected, double tolerance)
    {
        double error = RelativeError(actual, expected);
        Assert.True(error <= tolerance, $"relative error {error:E2} > {tolerance:E0}");
    }

    private static EvaVisionConfig Tiny(int imageSize) =>
        new() { ImageSize = imageSize, HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4 };

    private static EvaVisionTransformer Load(string seed, int imageSize)
    {
        var eva = new EvaVisionTransformer(Tiny(imageSize));
        var weights = eva.AdaptCheckpoint(TorchCheckpoint.LoadStateDict(Seed(seed, "eva_vit_g.pth")));
        try
        {
            ModuleWeights.LoadInto(eva, weights);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
        eva.eval();
        return eva;
    }

    [Fact]
    public void XrayGptTokensAndLnVisionFeaturesMatchTheSeed()
    {
        using var scope = torch.NewDisposeScope();
        using var eva = Load("xraygpt", imageSize: 56);
        using var noGrad = torch.no_grad();
        var tokens = eva.call(Reference("xraygpt", "pixels")); // (1, 17, 64)
        AssertClose(tokens, Reference("xraygpt", "eva_tokens"), 1e-4);

        // ln_vision (torch LayerNorm, eps 1e-5) comes from the BLIP-2 file.
        var blip = TorchCheckpoint.LoadStateDict(Seed("xraygpt", "blip2_pretrained_flant5xxl.pth"), key: "model");
        var features = nn.functional.layer_norm(tokens, [64], blip["ln_vision.weight"], blip["ln_vision.bias"], 1e-5);
        AssertClose(features, Reference("xraygpt", "eva_features"), 1e-4);
        foreach (var t in blip.Values) t.Dispose();
    }

    [Fact]
    public void MiniGptMedInterpolatesPositionsToTwiceTheGridAndMatches()
    {
        using var scope = torch.NewDisposeScope();
        using var eva = Load("minigpt_med", imageSize: 112);
        AssertClose(eva.state_dict()["pos_embed"], Reference("minigpt_med", "pos_embed_interpolated"), 1e-6);
        using var noGrad = torch.no_grad();
        var tokens = eva.call(Reference("minigpt_med", "pixels")); // (1, 65, 64)
        AssertClose(tokens, Reference("minigpt_med", "eva_tokens"), 1e-4);
        // MiniGPT-Med's ln_vision keeps its constructor init (weight 1, bias 0).
        var features = nn.functional.layer_norm(tokens, [64], eps: 1e-5);
        AssertClose(features, Reference("minigpt_med", "eva_features"), 1e-4);
    }

    [Fact]
    public void StateDictKeysAndShapesAreTheCheckpointsOwn()
    {
        using var keys = JsonDocument.Parse(File.ReadAllText(Seed("xraygpt", "checkpoint_keys.json")));
        var want = keys.RootElement.GetProperty("eva_vit_g.pth").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
        using var eva = new EvaVisionTransformer(Tiny(56));
        var have = eva.state_dict();
        Assert.Equal(want.Keys.Order(), have.Keys.Order());
        foreach (var (name, shape) in want) Assert.Equal(shape, have[name].shape);
    }

    [Fact]
    public void PublishedViTgSizes()
    {
        var config = new EvaVisionConfig();
        Assert.Equal(6144, config.IntermediateSize); // int(1408 · 4.3637)
        Assert.Equal(257, config.NumTokens);
        Assert.Equal(279, Tiny(56).IntermediateSize); // int(64 · 4.3637), the seeds' tiny width
        Assert.Throws<XrayVLException>(() => new EvaVisionConfig { ImageSize = 230 }.Validate());
    }
}
