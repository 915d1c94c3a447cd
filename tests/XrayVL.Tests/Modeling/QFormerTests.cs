using System.Text.Json;
using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>
/// XrayGPT's Q-Former, ln_vision and llama_proj against the seed's own outputs (../shared/reference/seeds/xraygpt/refs),
/// loading its three files as they are (eva_vit_g.pth, blip2_pretrained_flant5xxl.pth, xraygpt_stage_checkpoint.pth).
/// </summary>
public sealed class QFormerTests
{
    private static string Seed(params string[] parts) => Path.Combine([SharedData.Root, "..", "reference", "seeds", "xraygpt", .. parts]);

    /// <summary>A reference tensor: raw little-endian f32 with its shape from refs/manifest.json.</summary>
    private static Tensor Reference(string name) =>
        new ReferenceOutputs(Seed("refs")).Tensor(name);

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

    /// <summary>The fixture's shrunken sizes (README: EVA 64 wide, 2 blocks; Q-Former 64 wide, 2 layers, 4 heads, 4 queries).</summary>
    private static EvaVisionConfig TinyEva => new() { ImageSize = 56, HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4 };

    private static QFormerConfig TinyQFormer => new()
    {
        HiddenSize = 64, NumHiddenLayers = 2, NumAttentionHeads = 4, IntermediateSize = 128, EncoderWidth = 64, NumQueryTokens = 4,
    };

    private static XrayGptImageEncoder Load()
    {
        var encoder = new XrayGptImageEncoder(TinyEva, TinyQFormer, languageHiddenSize: 64);
        encoder.LoadSeedCheckpoints(Seed("eva_vit_g.pth"), Seed("blip2_pretrained_flant5xxl.pth"), Seed("xraygpt_stage_checkpoint.pth"));
        encoder.eval();
        return encoder;
    }

    [Fact]
    public void QFormerOutputAndImageEmbedsFromTheSeedsFeaturesMatch()
    {
        using var scope = torch.NewDisposeScope();
        using var encoder = Load();
        using var noGrad = torch.no_grad();
        var queries = encoder.QueryOutputs(Reference("eva_features")); // (1, 4, 64)
        AssertClose(queries, Reference("qformer_out"), 1e-4);
        AssertClose(encoder.ProjectQueries(queries), Reference("image_embeds"), 1e-4);
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
    public void CrossAttentionReallyReadsTheImage()
    {
        // Different features must give different query outputs (guards against a layer that ignores the image).
        using var scope = torch.NewDisposeScope();
        using var encoder = Load();
        using var noGrad = torch.no_grad();
        var features = Reference("eva_features");
        var shuffled = features.flip(2);
        Assert.True(RelativeError(encoder.QueryOutputs(shuffled), Reference("qformer_out")) > 1e-2);
        // Batched: each row is its own image.
        var both = encoder.QueryOutputs(torch.cat([features, shuffled], 0));
        AssertClose(both[0].unsqueeze(0), Reference("qformer_out"), 1e-4);
    }

    [Fact]
    public void StateDictKeysAndShapesAreTheSeedModelsOwn()
    {
        // The seed's loaded MiniGPT4 state dict, less the language model and the unused position_ids buffer.
        using var keys = JsonDocument.Parse(File.ReadAllText(Seed("checkpoint_keys.json")));
        var want = keys.RootElement.GetProperty("<MiniGPT4 model.state_dict() after loading, for reference>").EnumerateObject()
            .Where(p => !p.Name.StartsWith("llama_model.", StringComparison.Ordinal) && p.Name != "Qformer.bert.embeddings.position_ids")
            .ToDictionary(p => p.Name, p => p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
        using var encoder = new XrayGptImageEncoder(TinyEva, TinyQFormer, languageHiddenSize: 64);
        var have = encoder.state_dict();
        Assert.Equal(want.Keys.Order(), have.Keys.Order());
        foreach (var (name, shape) in want) Assert.Equal(shape, have[name].shape);
        Assert.Contains("Qformer.bert.encoder.layer.0.crossattention.self.key.weight", have.Keys);
        Assert.DoesNotContain("Qformer.bert.encoder.layer.1.crossattention.self.key.weight", have.Keys);
        Assert.DoesNotContain("Qformer.bert.encoder.layer.0.intermediate.dense.weight", have.Keys);
    }

    [Fact]
    public void PublishedSizesAndErrors()
    {
        var config = new QFormerConfig();
        Assert.Equal([0, 2, 4, 6, 8, 10], Enumerable.Range(0, config.NumHiddenLayers).Where(config.HasCrossAttention));
        using var qformer = new QFormer(config with { NumHiddenLayers = 3 }); // published widths, fewer layers to keep the test light
        var sd = qformer.state_dict();
        Assert.Equal([768, 1408], sd["bert.encoder.layer.2.crossattention.self.key.weight"].shape); // K/V read ViT-g's width
        Assert.DoesNotContain("bert.encoder.layer.1.crossattention.self.key.weight", sd.Keys);
        Assert.Equal([3072, 768], sd["bert.encoder.layer.1.intermediate_query.dense.weight"].shape);
        Assert.Throws<XrayVLException>(() => new QFormerConfig { HiddenAct = "relu" }.Validate());
        Assert.Throws<XrayVLException>(() => new XrayGptImageEncoder(TinyEva, new QFormerConfig(), 4096));
        using var tiny = new XrayGptImageEncoder(TinyEva, TinyQFormer, languageHiddenSize: 64);
        var error = Assert.Throws<XrayVLException>(() =>
            tiny.LoadSeedCheckpoints(Seed("eva_vit_g.pth"), Seed("xraygpt_stage_checkpoint.pth"), Seed("xraygpt_stage_checkpoint.pth")));
        Assert.Contains("missing", error.Message);
    }
}
