using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>The fixture's SAT checkpoint folder loaded once, as it is, into a float32 VisualGlmModel (LoRA merged).</summary>
public sealed class VisualGlmFixture : IDisposable
{
    public SatCheckpoint Checkpoint { get; } = SatCheckpoint.Open(GlmFixture.Seed("checkpoint"));
    public VisualGlmModel Model { get; }
    public IReadOnlyList<string> MergedLora { get; }

    public VisualGlmFixture()
    {
        Model = Checkpoint.LoadVisualGlm(ScalarType.Float32, out var merged);
        MergedLora = merged;
    }

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// VisualGLM's image side and the whole model against XrayGLM's own outputs (../shared/reference/seeds/xrayglm/refs,
/// SAT 0.3.6, fp32 compute): EVA after ln_vision, Q-Former output, projected image embeddings, the spliced prompt
/// embeddings, and tokens generated from the fixture's ids and pixels.
/// </summary>
public sealed class VisualGlmTests(VisualGlmFixture fixture, ITestOutputHelper output) : IClassFixture<VisualGlmFixture>
{
    private const double Tolerance = 1e-4;

    private static Tensor Reference(string caseName, string name) => GlmFixture.Reference(caseName, name);

    private static long[] Ids(string caseName, string name) => Reference(caseName, name).data<long>().ToArray();

    private void AssertClose(string what, Tensor actual, Tensor expected)
    {
        double error = ReferenceOutputs.RelativeError(actual, expected);
        output.WriteLine($"{what}: max |diff| / max |ref| = {error:E2}");
        Assert.True(error <= Tolerance, $"{what}: relative error {error:E2} > {Tolerance:E0}");
    }

    [Fact]
    public void ModelConfigGivesTheVisionAndQFormerShapes()
    {
        var c = fixture.Model.Config;
        var v = c.VisionConfig;
        Assert.Equal((224, 14, 48, 2, 4, 80, 1e-6, 257), (v.ImageSize, v.PatchSize, v.HiddenSize, v.NumHiddenLayers, v.NumAttentionHeads, v.IntermediateSize, v.LayerNormEps, v.NumTokens));
        var q = c.QformerConfig;
        Assert.Equal((24, 2, 4, 96, 48, 2, 32, 1e-12), (q.HiddenSize, q.NumHiddenLayers, q.NumAttentionHeads, q.IntermediateSize, q.EncoderWidth, q.CrossAttentionFreq, q.NumQueryTokens, q.LayerNormEps));
        Assert.Equal(32, c.ImageLength);
        Assert.Equal(4, fixture.MergedLora.Count);
        // Every parameter of the model came from the file (StreamInto refuses gaps); the count is the file's 8,875,458
        // elements (checkpoint_keys.txt) less what is merged or dropped: the LoRA matrices (A 10×32, B 32×10; three pairs
        // for query_key_value, one for dense, in 2 layers), the unused GLM position table (2048 × 32), inv_freq (2) and the
        // EVA key bias (2 layers × 48).
        long counted = fixture.Model.parameters().Sum(p => p.numel());
        long loraElements = 2 * 4 * (10 * 32 + 32 * 10);
        Assert.Equal(8_875_458 - loraElements - 2048 * 32 - 2 - 2 * 48, counted);
    }

    [Fact]
    public void VisionOutputsMatchXrayGlm()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var encoder = fixture.Model.ImageEncoder;
        var features = encoder.VisionFeatures(Reference("vision", "pixels"));
        AssertClose("EVA after ln_vision", features, Reference("vision", "vit_out"));
        var queries = encoder.QueryOutputs(Reference("vision", "vit_out"));
        AssertClose("Q-Former output", queries, Reference("vision", "qformer_out"));
        AssertClose("glm_proj", encoder.Project(Reference("vision", "qformer_out")), Reference("vision", "image_embeds"));
        AssertClose("pixels → image embeddings", encoder.call(Reference("vision", "pixels")), Reference("vision", "image_embeds"));
    }

    [Fact]
    public void PixelsAreXrayGlmsBlipPreprocessing()
    {
        using var scope = torch.NewDisposeScope();
        var clip = XrayVL.Imaging.PreprocessConfig.Clip(224);
        var pixels = XrayVL.Imaging.PilBicubic.BlipEval(XrayVL.Imaging.ImageFile.Load(GlmFixture.Seed("2_1.png")), 224, clip.Mean, clip.Std);
        AssertClose("pixels (Pillow bicubic 512 → 224, CLIP normalisation)", pixels, Reference("vision", "pixels"));
        // Exactly Pillow's 8-bit result: every pixel lands on the same 8-bit level.
        Assert.True(ReferenceOutputs.RelativeError(pixels, Reference("vision", "pixels")) < 1e-6);
    }

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    public void SplicedPromptEmbeddingsAndLogitsMatch(string caseName)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        long[] ids = Ids(caseName, "input_ids");
        int preImage = (int)Ids(caseName, "pre_image")[0];
        var image = fixture.Model.ImageEncoder.call(Reference("vision", "pixels"));
        var embeds = fixture.Model.EmbedPrompt(ids, image, preImage);
        AssertClose($"{caseName} inputs_embeds", embeds, Reference(caseName, "inputs_embeds"));
        var glm = fixture.Model.LanguageModel;
        var (positions, mask) = glm.Inputs(ids);
        var hidden = glm.ForwardHidden(embeds, positions, mask);
        AssertClose($"{caseName} logits_last", glm.Logits(hidden.narrow(1, ids.Length - 1, 1)).view(1, -1), Reference(caseName, "logits_last"));
    }

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    public void TokensFromIdsAndPixelsMatchGreedyAndChat(string caseName)
    {
        using var scope = torch.NewDisposeScope();
        long[] ids = Ids(caseName, "input_ids");
        int preImage = (int)Ids(caseName, "pre_image")[0];
        var pixels = Reference("vision", "pixels");
        Assert.Equal(Ids(caseName, "greedy_ids"), fixture.Model.Generate(ids, pixels, preImage, maxNewTokens: 16));
        Assert.Equal(Ids(caseName, "chat_gen_ids"), fixture.Model.Generate(ids, pixels, preImage, maxNewTokens: 16, repetitionPenalty: 1.2));
    }

    [Fact]
    public void TextOnlyPromptKeepsThePadEmbeddings()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        long[] ids = Ids("textonly", "input_ids");
        var glm = fixture.Model.LanguageModel;
        var (positions, mask) = glm.Inputs(ids);
        var hidden = glm.ForwardHidden(fixture.Model.EmbedPrompt(ids, imageEmbeds: null, preImage: 0), positions, mask);
        AssertClose("textonly logits_last", glm.Logits(hidden.narrow(1, ids.Length - 1, 1)).view(1, -1), Reference("textonly", "logits_last"));
    }

    [Fact]
    public void PeftPairEqualsXrayGlmMerge()
    {
        using var scope = torch.NewDisposeScope();
        foreach (int layer in new[] { 0, 14 })
            foreach (var (part, partitions) in new[] { ("query_key_value", 3), ("dense", 1) })
            {
                string prefix = $"L{layer}_{part}_";
                var a = Enumerable.Range(0, partitions).Select(i => Reference("lora_merge", $"{prefix}matrix_A_{i}")).ToList();
                var b = Enumerable.Range(0, partitions).Select(i => Reference("lora_merge", $"{prefix}matrix_B_{i}")).ToList();
                var (peftA, peftB) = SatCheckpoint.PeftPair(a, b, scaling: 0.1, heads: 4, peftRank: 30);
                Assert.Equal([30L, 32L], peftA.shape);
                var rebuilt = Reference("lora_merge", $"{prefix}original_weight") + peftB.matmul(peftA);
                AssertClose($"L{layer} {part}: W + B·A (PEFT) vs XrayGLM merge", rebuilt, Reference("lora_merge", $"{prefix}merged_weight"));
            }
    }

    [Fact]
    public void UnknownSatKeysAreRefused()
    {
        using var scope = torch.NewDisposeScope();
        var config = fixture.Model.Config;
        (string, Tensor)[] module = [("mixins.eva.model.vit.transformer.layers.0.attention.rotary.weight", torch.zeros(2))];
        var error = Assert.Throws<XrayVLException>(() => SatCheckpoint.ToVisualGlm(module, config, SatLoraHandling.Merge).ToList());
        Assert.Contains("is not part of VisualGLM", error.Message);
        (string, Tensor)[] partial = [("transformer.layers.0.attention.dense.matrix_A.0", torch.zeros(10, 32))];
        Assert.Contains("incomplete", Assert.Throws<XrayVLException>(() => SatCheckpoint.ToVisualGlm(partial, config, SatLoraHandling.Merge).ToList()).Message);
    }
}
