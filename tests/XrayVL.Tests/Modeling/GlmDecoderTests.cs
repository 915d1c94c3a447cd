using System.Text.Json;
using TorchSharp;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

/// <summary>The fixture's SAT checkpoint folder loaded once, as it is, into a GlmDecoder (LoRA merged).</summary>
public sealed class GlmFixture : IDisposable
{
    public static string Seed(params string[] parts) => Path.Combine([SharedData.Root, "..", "reference", "seeds", "xrayglm", .. parts]);

    public SatCheckpoint Checkpoint { get; }
    public GlmDecoder Decoder { get; }
    public IReadOnlyList<string> MergedLora { get; }

    public GlmFixture()
    {
        Checkpoint = SatCheckpoint.Open(Seed("checkpoint"));
        Decoder = Checkpoint.LoadGlmDecoder(out var merged);
        MergedLora = merged;
    }

    /// <summary>A reference tensor of refs/<paramref name="caseName"/>: raw little-endian f32 or i64 with shape and dtype from its manifest.json.</summary>
    public static Tensor Reference(string caseName, string name) =>
        new ReferenceOutputs(Seed("refs", caseName)).Tensor(name);

    public void Dispose() => Decoder.Dispose();
}

/// <summary>
/// ChatGLM's decoder against XrayGLM's own outputs (../shared/reference/seeds/xrayglm/refs: SAT 0.3.6, fp32 compute), fed
/// the fixture's spliced input embeddings, 2D position ids and mask; the image side is the fixture's.
/// </summary>
public sealed class GlmDecoderTests(GlmFixture fixture, ITestOutputHelper output) : IClassFixture<GlmFixture>
{
    private const double Tolerance = 1e-4;

    private static Tensor Reference(string caseName, string name) => GlmFixture.Reference(caseName, name);

    private static double RelativeError(Tensor actual, Tensor expected)
    {
        Assert.Equal(expected.shape, actual.shape);
        return ((actual - expected).norm() / expected.norm()).item<float>();
    }

    private void AssertClose(string what, Tensor actual, Tensor expected, double tolerance = Tolerance)
    {
        double error = RelativeError(actual, expected);
        output.WriteLine($"{what}: relative error {error:E2}");
        Assert.True(error <= tolerance, $"{what}: relative error {error:E2} > {tolerance:E0}");
    }

    private static long[] Ids(string caseName, string name) => Reference(caseName, name).data<long>().ToArray();

    [Fact]
    public void SatFolderGivesConfigAndMergesXrayGlmLoraInLayers0And14()
    {
        var c = fixture.Decoder.Config;
        Assert.Equal((28, 32, 4, 130528, 128), (c.NumLayers, c.HiddenSize, c.NumAttentionHeads, c.VocabSize, c.MlpSize));
        Assert.Equal((130004L, 130000L, 130001L), (c.BosTokenId, c.MaskTokenId, c.GmaskTokenId));
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal("1", fixture.Checkpoint.Iteration);
        Assert.Equal(
            ["transformer.layers.0.attention.dense", "transformer.layers.0.attention.query_key_value",
             "transformer.layers.14.attention.dense", "transformer.layers.14.attention.query_key_value"],
            fixture.MergedLora.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void ParameterCountFormulaMatchesTheModelAndGivesChatGlm6B()
    {
        long counted = fixture.Decoder.parameters().Sum(p => p.numel());
        Assert.Equal(8_709_568, counted);
        Assert.Equal(counted, GlmDecoder.CountParameters(fixture.Decoder.Config));
        // ChatGLM-6B's own shape (the GlmConfig defaults): 28 layers of 4096, vocabulary 130,528, untied LM head.
        Assert.Equal(6_707_929_088, GlmDecoder.CountParameters(new GlmConfig()));
    }

    [Fact]
    public void LoraMergeMatchesXrayGlmMergedWeights()
    {
        using var scope = torch.NewDisposeScope();
        var module = fixture.Checkpoint.ReadModule();
        try
        {
            foreach (int layer in new[] { 0, 14 })
                foreach (var (part, partitions) in new[] { ("query_key_value", 3), ("dense", 1) })
                {
                    string key = $"transformer.layers.{layer}.attention.{part}";
                    var a = Enumerable.Range(0, partitions).Select(i => module[$"{key}.matrix_A.{i}"]).ToArray();
                    var b = Enumerable.Range(0, partitions).Select(i => module[$"{key}.matrix_B.{i}"]).ToArray();
                    for (int i = 0; i < partitions; i++)
                    {
                        Assert.Equal(Reference("lora_merge", $"L{layer}_{part}_matrix_A_{i}").data<float>().ToArray(), a[i].data<float>().ToArray());
                        Assert.Equal(Reference("lora_merge", $"L{layer}_{part}_matrix_B_{i}").data<float>().ToArray(), b[i].data<float>().ToArray());
                    }
                    var merged = XrayGlmLora.Merge(module[$"{key}.original.weight"], a, b, scaling: 0.1, heads: 4);
                    AssertClose($"L{layer} {part} merged weight", merged, Reference("lora_merge", $"L{layer}_{part}_merged_weight"), 1e-6);
                    if (partitions == 3)
                    {
                        // The partitions go in per head; concatenated whole (q | k | v) they would not match.
                        var contiguous = XrayGlmLora.Merge(module[$"{key}.original.weight"], a, b, scaling: 0.1, heads: 0);
                        Assert.True(RelativeError(contiguous, Reference("lora_merge", $"L{layer}_{part}_merged_weight")) > 1e-3);
                    }
                }
        }
        finally
        {
            foreach (var t in module.Values) t.Dispose();
        }
    }

    [Fact]
    public void MergedLogitsMatchXrayGlmMergedModel()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var hidden = Prefill("chat_1turn");
        AssertClose("lora_merge logits_last", fixture.Decoder.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1)).view(1, -1), Reference("lora_merge", "logits_last_merged"));
        var columns = Reference("lora_merge", "logits_cols");
        AssertClose("lora_merge logits_sel", fixture.Decoder.Logits(hidden).index_select(2, columns), Reference("lora_merge", "logits_sel_merged"));
    }

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    public void PositionIdsAndMaskFromIdsMatchTheFixture(string caseName)
    {
        using var scope = torch.NewDisposeScope();
        var (positions, mask) = fixture.Decoder.Inputs(Ids(caseName, "input_ids"));
        Assert.Equal(Reference(caseName, "position_ids").data<long>().ToArray(), positions.data<long>().ToArray());
        Assert.Equal(Reference(caseName, "attention_mask").data<float>().ToArray(), mask.data<float>().ToArray());
        Assert.Throws<XrayVLException>(() => fixture.Decoder.Inputs([5, 6, 7]));
    }

    private Tensor Prefill(string caseName, List<Tensor>? layers = null) =>
        fixture.Decoder.ForwardHidden(Reference(caseName, "inputs_embeds"), Reference(caseName, "position_ids"), Reference(caseName, "attention_mask"), layerOutputs: layers);

    [Fact]
    public void Chat1TurnMatchesLayerByLayer()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var layers = new List<Tensor>();
        Prefill("chat_1turn", layers);
        var expected = Reference("chat_1turn", "layer_hidden_states");                                  // (1, 28, T, D)
        Assert.Equal(28, layers.Count);
        for (int i = 0; i < layers.Count; i++) AssertClose($"layer {i}", layers[i], expected.select(1, i));
    }

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    public void ChatLogitsMatch(string caseName)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var hidden = Prefill(caseName);
        AssertClose($"{caseName} logits_last", fixture.Decoder.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1)).view(1, -1), Reference(caseName, "logits_last"));
        AssertClose($"{caseName} logits_sel", fixture.Decoder.Logits(hidden).index_select(2, Reference(caseName, "logits_cols")), Reference(caseName, "logits_sel"));
    }

    [Theory]
    [InlineData("chat_1turn", true)]
    [InlineData("chat_1turn", false)]
    [InlineData("chat_2turn", true)]
    [InlineData("chat_2turn", false)]
    public void GreedyTokensMatchWithAndWithoutKvCache(string caseName, bool useCache)
    {
        using var scope = torch.NewDisposeScope();
        var ids = fixture.Decoder.Generate(Reference(caseName, "inputs_embeds"), Reference(caseName, "position_ids"),
            Reference(caseName, "attention_mask"), maxNewTokens: 16, useCache: useCache);
        Assert.Equal(Ids(caseName, "greedy_ids"), ids);
    }

    [Theory]
    [InlineData("chat_1turn")]
    [InlineData("chat_2turn")]
    public void ChatTokensMatchXrayGlmRepetitionPenalty(string caseName)
    {
        using var scope = torch.NewDisposeScope();
        var ids = fixture.Decoder.Generate(Reference(caseName, "inputs_embeds"), Reference(caseName, "position_ids"),
            Reference(caseName, "attention_mask"), maxNewTokens: 16, repetitionPenalty: 1.2);
        Assert.Equal(Ids(caseName, "chat_gen_ids"), ids);
        Assert.NotEqual(Ids(caseName, "greedy_ids"), ids);   // the penalty changes the output here, so it is checked
    }

    [Fact]
    public void TextOnlyPromptFromIdsMatches()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        long[] ids = Ids("textonly", "input_ids");
        var (positions, mask) = fixture.Decoder.Inputs(ids);
        var hidden = fixture.Decoder.ForwardHidden(fixture.Decoder.Embed(torch.tensor(ids).view(1, -1)), positions, mask);
        AssertClose("textonly logits_last", fixture.Decoder.Logits(hidden.narrow(1, ids.Length - 1, 1)).view(1, -1), Reference("textonly", "logits_last"));
    }

    [Fact]
    public void SatFolderErrorsAreUserActionable()
    {
        using var dir = new TempDir();
        Assert.Contains("latest", Assert.Throws<XrayVLException>(() => SatCheckpoint.Open(dir.Path)).Message);
        File.WriteAllText(Path.Combine(dir.Path, "latest"), "7\n");
        File.Copy(GlmFixture.Seed("checkpoint", "model_config.json"), Path.Combine(dir.Path, "model_config.json"));
        Assert.Contains("mp_rank_00_model_states.pt", Assert.Throws<XrayVLException>(() => SatCheckpoint.Open(dir.Path)).Message);
    }
}
