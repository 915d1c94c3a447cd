using System.Text.Json;
using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>
/// MiniGPT-Med's (MiniGPT-v2's) image path against the seed's own outputs (../shared/reference/seeds/minigpt_med/refs):
/// EVA at twice its checkpoint's grid, ln_vision at its initial weights, 4 consecutive tokens grouped, llama_proj.
/// </summary>
public sealed class MiniGptV2ImageEncoderTests
{
    private static string Seed(params string[] parts) => Path.Combine([SharedData.Root, "..", "reference", "seeds", "minigpt_med", .. parts]);

    /// <summary>A reference tensor: raw little-endian f32 with its shape from refs/manifest.json.</summary>
    private static Tensor Reference(string name) =>
        new ReferenceOutputs(Seed("refs")).Tensor(name);

    private static void AssertClose(Tensor actual, Tensor expected, double tolerance)
    {
        Assert.Equal(expected.shape, actual.shape);
        double error = ((actual - expected).norm() / expected.norm()).item<float>();
        Assert.True(error <= tolerance, $"relative error {error:E2} > {tolerance:E0}");
    }

    private static EvaVisionConfig TinyEva => new() { ImageSize = 112, HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4 };

    private static MiniGptV2ImageEncoder Load()
    {
        var encoder = new MiniGptV2ImageEncoder(TinyEva, languageHiddenSize: 64);
        encoder.LoadSeedCheckpoints(Seed("eva_vit_g.pth"), Seed("checkpoint_stage3.pth"));
        encoder.eval();
        return encoder;
    }

    [Fact]
    public void GroupsAndImageEmbedsFromTheSeedsFeaturesMatch()
    {
        using var scope = torch.NewDisposeScope();
        using var encoder = Load();
        using var noGrad = torch.no_grad();
        var grouped = MiniGptV2ImageEncoder.Group(Reference("eva_features")); // (1, 16, 256)
        AssertClose(grouped, Reference("image_tokens_grouped"), 0);
        AssertClose(encoder.ProjectGroups(grouped), Reference("image_embeds"), 1e-4);
    }

    [Fact]
    public void ImageEmbedsFromPixelsMatchTheSeed()
    {
        using var scope = torch.NewDisposeScope();
        using var encoder = Load();
        using var noGrad = torch.no_grad();
        AssertClose(encoder.call(Reference("pixels")), Reference("image_embeds"), 1e-4);
    }

    [Fact]
    public void GroupsAreRunsOfFourInRasterOrderWithoutCls()
    {
        using var scope = torch.NewDisposeScope();
        var features = torch.arange(1 + 8, dtype: float32).reshape(1, 9, 1); // CLS 0, patches 1..8, width 1
        var grouped = MiniGptV2ImageEncoder.Group(features);
        Assert.Equal([1L, 2, 4], grouped.shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6, 7, 8], grouped.data<float>().ToArray());
        Assert.Throws<XrayVLException>(() => MiniGptV2ImageEncoder.Group(torch.zeros(1, 7, 2)));
    }

    [Fact]
    public void StateDictKeysAreTheSeedModelsOwnAndPublishedSizes()
    {
        using var keys = JsonDocument.Parse(File.ReadAllText(Seed("checkpoint_keys.json")));
        var want = keys.RootElement.GetProperty("<MiniGPTv2 model.state_dict() after loading, for reference>").EnumerateObject()
            .Where(p => !p.Name.StartsWith("llama_model.", StringComparison.Ordinal))
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
        using var encoder = new MiniGptV2ImageEncoder(TinyEva, languageHiddenSize: 64);
        var have = encoder.state_dict();
        Assert.Equal(want.Keys.Order(), have.Keys.Order());
        foreach (var (name, shape) in want) Assert.Equal(shape, have[name].shape);

        // ViT-g's width at 448 px (one block, a narrow language model, to keep the test light): llama_proj reads 4 · 1408.
        using var published = new MiniGptV2ImageEncoder(new EvaVisionConfig { ImageSize = 448, NumHiddenLayers = 1 }, 8);
        Assert.Equal([8L, 5632], published.state_dict()["llama_proj.weight"].shape);
        Assert.Equal([1L, 1025, 1408], published.state_dict()["visual_encoder.pos_embed"].shape); // 32×32 patches + CLS
    }
}
