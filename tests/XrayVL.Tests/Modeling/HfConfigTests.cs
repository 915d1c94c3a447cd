using System.Text.Json.Nodes;
using XrayVL.Modeling;

namespace XrayVL.Tests.Modeling;

/// <summary>Configs read as transformers reads them: missing keys are its defaults per model_type, unknown keys refused.</summary>
public class HfConfigTests
{
    private static JsonObject Parse(string json) => (JsonObject)JsonNode.Parse(json)!;

    [Fact]
    public void MissingNestedKeysTakeTransformersDefaultsOfTheirOwnModelType()
    {
        // A diff-saved LLaVA config: the CLIP vision config leaves out num_channels (3) and hidden_act (quick_gelu), the
        // llama text config tie_word_embeddings (false) and rope_theta (1e4) — never this project's compact defaults.
        var c = HfConfigs.ReadVisionLanguage(Parse("""
            {"model_type": "llava", "image_token_index": 259,
             "vision_config": {"hidden_size": 64, "image_size": 32, "intermediate_size": 128, "model_type": "clip_vision_model",
                               "num_attention_heads": 4, "num_hidden_layers": 3, "patch_size": 8},
             "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
                             "vocab_size": 300}}
            """));
        Assert.Equal((3, "quick_gelu", 1e-5), (c.VisionConfig.NumChannels, c.VisionConfig.HiddenAct, c.VisionConfig.LayerNormEps));
        Assert.Equal(("llama", false, 10000.0, 2048, 4), (c.TextConfig.ModelType, c.TextConfig.TieWordEmbeddings, c.TextConfig.RopeTheta,
            c.TextConfig.MaxPositionEmbeddings, c.TextConfig.NumKeyValueHeads));
        Assert.Equal((-2, "default", "gelu", "mlp2x_gelu"), (c.VisionFeatureLayer, c.VisionFeatureSelectStrategy, c.ProjectorHiddenAct, c.ProjectorType));

        // LLaVA-1.5-7B's config names little more than its vocabulary: the rest is LlamaConfig's and CLIPVisionConfig's.
        var llava15 = HfConfigs.ReadVisionLanguage(Parse("""
            {"model_type": "llava", "text_config": {"vocab_size": 32064},
             "vision_config": {"hidden_size": 1024, "image_size": 336, "patch_size": 14, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}}
            """));
        Assert.Equal((4096, 32, 11008, 32000), (llava15.TextConfig.HiddenSize, llava15.TextConfig.NumKeyValueHeads,
            llava15.TextConfig.IntermediateSize, llava15.ImageTokenIndex));
        var qwen = HfConfigs.ReadLanguageModel(Parse("""{"model_type": "qwen2"}"""));
        Assert.Equal((151936, 22016, 32768), (qwen.VocabSize, qwen.IntermediateSize, qwen.MaxPositionEmbeddings));
        var mistral = HfConfigs.ReadLanguageModel(Parse("""{"model_type": "mistral"}"""));
        // Mistral's sliding window (4096) would bind past 4096 positions: the context is limited to it.
        Assert.Equal((8, 4096), (mistral.NumKeyValueHeads, mistral.MaxPositionEmbeddings));
    }

    [Theory]
    [InlineData("""{"model_type": "llama", "quantization_config": {"quant_method": "gptq"}}""", "'quantization_config'")]
    [InlineData("""{"model_type": "llama", "partial_rotary_factor": 0.5}""", "'partial_rotary_factor'")]
    [InlineData("""{"model_type": "qwen2", "use_sliding_window": true}""", "'use_sliding_window' = true is not supported")]
    [InlineData("""{"model_type": "llama", "rope_scaling": {"type": "longrope", "factor": 2.0}}""", "rope_scaling type 'longrope' is not supported")]
    [InlineData("""{"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0, "mscale": 1.0}}""", "rope_scaling key 'mscale'")]
    [InlineData("""{"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}""", "needs 'low_freq_factor'")]
    [InlineData("""{"model_type": "llama", "pruned_heads": {"0": [1]}}""", "'pruned_heads'")]
    [InlineData("""{"model_type": "gpt_neox"}""", "model_type 'gpt_neox' is not supported")]
    public void KeysThatWouldChangeTheComputationAreRefusedByName(string json, string expected)
    {
        var e = Assert.Throws<XrayVLException>(() => HfConfigs.ReadLanguageModel(Parse(json)));
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("""{"model_type": "llava", "projector_type": "linear"}""", "'projector_type' = \"linear\"")]
    [InlineData("""{"model_type": "llava", "multimodal_projector_bias": false}""", "'multimodal_projector_bias'")]
    [InlineData("""{"model_type": "llava", "vision_config": {"model_type": "clip_vision_model", "use_rope": true}}""", "'use_rope'")]
    [InlineData("""{"model_type": "llava", "vision_config": {"model_type": "siglip_vision_model"}}""", "'siglip_vision_model'")]
    [InlineData("""{"model_type": "llava", "projector_hidden_act": "mish"}""", "projector_hidden_act 'mish'")]
    [InlineData("""{"model_type": "llava", "vision_feature_layer": [-2, -5]}""", "not a valid config")]
    public void ComposedConfigsRefuseWhatTheyCannotCompute(string json, string expected)
    {
        var e = Assert.Throws<XrayVLException>(() => HfConfigs.ReadVisionLanguage(Parse(json)));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void GenericPretrainedConfigKeysAndGenerationSettingsAreAccepted()
    {
        var c = HfConfigs.ReadLanguageModel(Parse("""
            {"model_type": "llama", "temperature": 0.6, "top_p": 0.9, "id2label": {"0": "LABEL_0"}, "return_dict": true,
             "pruned_heads": {}, "is_decoder": false, "pretraining_tp": 1, "eos_token_id": [128001, 128009], "transformers_version": "4.44.0"}
            """));
        Assert.Equal(128001, c.EosTokenId);
    }

    [Fact]
    public void OwnConfigsRoundTripWithRopeScaling()
    {
        var config = new LanguageModelConfig { RopeScaling = new RopeScaling { RopeType = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 128 } };
        string path = Path.Combine(Path.GetTempPath(), $"rope-{Guid.NewGuid():N}.json");
        ConfigFile.Write(path, config);
        var read = ConfigFile.Read<LanguageModelConfig>(path);
        File.Delete(path);
        Assert.Equal(config.RopeScaling, read.RopeScaling);
        Assert.Equal(config with { Architectures = null }, read with { Architectures = null });
    }

    // ---- rope_scaling: each type's frequencies against its defining property ----

    private static float[] Plain(int headSize = 64, double theta = 10000) =>
        RotaryEmbedding.InverseFrequencies(headSize, theta, null, 2048, 0).InverseFrequencies;

    [Fact]
    public void LinearScalingDividesEveryFrequencyByTheFactor()
    {
        var (scaled, attention) = RotaryEmbedding.InverseFrequencies(64, 10000, new RopeScaling { RopeType = "linear", Factor = 2 }, 2048, 0);
        Assert.Equal(1.0, attention);
        Assert.All(scaled.Zip(Plain()), p => Assert.Equal(p.Second / 2, p.First, 1e-9));
    }

    [Fact]
    public void DynamicNtkChangesNothingInsideTheContextAndRaisesTheBaseBeyondIt()
    {
        var scaling = new RopeScaling { RopeType = "dynamic", Factor = 2 };
        Assert.Equal(Plain(), RotaryEmbedding.InverseFrequencies(64, 10000, scaling, 2048, 2048).InverseFrequencies);
        // seq 4096 = 2× the context: base · (2·2 − 1)^(64/62)
        double raisedBase = 10000 * Math.Pow(3, 64 / 62.0);
        var beyond = RotaryEmbedding.InverseFrequencies(64, 10000, scaling, 2048, 4096).InverseFrequencies;
        Assert.Equal(Plain(64, raisedBase), beyond);
        Assert.Equal(1f, beyond[0]);                         // the fastest dimension is never stretched
        Assert.True(beyond[^1] < Plain()[^1]);
    }

    [Fact]
    public void Llama3KeepsShortWavelengthsDividesLongOnesAndBlendsBetween()
    {
        var scaling = new RopeScaling { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 };
        var scaled = RotaryEmbedding.InverseFrequencies(128, 500000, scaling, 131072, 0).InverseFrequencies;
        var plain = Plain(128, 500000);
        int kept = 0, divided = 0, blended = 0;
        for (int i = 0; i < plain.Length; i++)
        {
            double wavelength = 2 * Math.PI / plain[i];
            if (wavelength < 8192 / 4.0) { Assert.Equal(plain[i], scaled[i]); kept++; }
            else if (wavelength > 8192) { Assert.Equal(plain[i] / 8, scaled[i], plain[i] * 1e-6); divided++; }
            else { Assert.InRange(scaled[i], plain[i] / 8 * (1 - 1e-6), plain[i] * (1 + 1e-6)); blended++; }
        }
        Assert.True(kept > 0 && divided > 0 && blended > 0);
    }

    [Fact]
    public void YarnExtrapolatesFastDimensionsInterpolatesSlowOnesAndScalesAttention()
    {
        var scaling = new RopeScaling { RopeType = "yarn", Factor = 4, OriginalMaxPositionEmbeddings = 32768 };
        var (scaled, attention) = RotaryEmbedding.InverseFrequencies(128, 1e6, scaling, 131072, 0);
        var plain = Plain(128, 1e6);
        Assert.Equal(0.1 * Math.Log(4) + 1, attention, 12);
        Assert.Equal(plain[0], scaled[0]);                               // fast: unchanged
        Assert.Equal(plain[^1] / 4, scaled[^1], plain[^1] * 1e-6);      // slow: interpolated
        for (int i = 1; i < plain.Length; i++) Assert.True(scaled[i] / plain[i] <= scaled[i - 1] / plain[i - 1] + 1e-6);
        var given = RotaryEmbedding.InverseFrequencies(128, 1e6, scaling with { AttentionFactor = 1.5 }, 131072, 0);
        Assert.Equal(1.5, given.AttentionFactor);
    }
}
