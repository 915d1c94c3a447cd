using System.Text.Json;
using System.Text.Json.Serialization;
using XrayVL.IO;

namespace XrayVL.Modeling;

/// <summary>
/// The language model's config, 1:1 with a Hugging Face LLaMA / Qwen2 `config.json` (snake_case keys).
/// Defaults describe the project's compact CPU model; published models override them all from their files.
/// </summary>
public sealed record LanguageModelConfig
{
    /// <summary>"llama" or "qwen2": decides the attention biases (Qwen2 has q/k/v biases, LLaMA none unless attention_bias).</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>Byte-level BPE trained on the zh/en reports: 6k entries cover both languages compactly.</summary>
    public int VocabSize { get; init; } = 6000;
    /// <summary>Residual width: 256 keeps a 2-core CPU at interactive speed.</summary>
    public int HiddenSize { get; init; } = 256;
    /// <summary>SwiGLU width, about 8/3 of hidden as in LLaMA (rounded to a multiple of 64).</summary>
    public int IntermediateSize { get; init; } = 704;
    public int NumHiddenLayers { get; init; } = 4;
    public int NumAttentionHeads { get; init; } = 4;
    /// <summary>Grouped-query attention: fewer K/V heads shrink the KV cache.</summary>
    public int NumKeyValueHeads { get; init; } = 2;
    /// <summary>Explicit head size (HF `head_dim`); null means hidden_size / num_attention_heads.</summary>
    public int? HeadDim { get; init; }
    /// <summary>Longest sequence (image tokens + prompt + report) the rotary tables and KV cache are sized for.</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>HF `rope_scaling` (linear, dynamic, llama3, yarn) for checkpoints stretched past their trained context; null: plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>Standard deviation of the N(0, σ) init of weight matrices; 0.02 as HF LLaMA/Qwen2.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Tied input/output embeddings save vocab x hidden parameters, a large share in a compact model.</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>LLaMA's flag for biases on q/k/v/o projections; Qwen2 ignores it (its q/k/v always have biases).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>LLaMA's flag for biases on the SwiGLU projections.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Only "silu" (SwiGLU) is implemented; other values are rejected on load.</summary>
    public string HiddenAct { get; init; } = "silu";
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
    public int? PadTokenId { get; init; }
    public string[]? Architectures { get; init; }
    public string? TorchDtype { get; init; }

    [JsonIgnore] public int HeadSize => HeadDim ?? HiddenSize / NumAttentionHeads;

    /// <summary>Whether q/k/v and o projections carry biases, per model family (chosen by a switch, never by sniffing names).</summary>
    [JsonIgnore] public (bool Qkv, bool Output) ProjectionBiases => ModelType switch
    {
        "llama" or "mistral" => (AttentionBias, AttentionBias),
        "qwen2" => (true, false),
        _ => throw new XrayVLException($"language model type '{ModelType}' is not supported (llama, qwen2)"),
    };

    public LanguageModelConfig Validate()
    {
        _ = ProjectionBiases;
        Require(VocabSize > 0, "vocab_size must be positive");
        Require(HiddenSize > 0 && IntermediateSize > 0, "hidden_size and intermediate_size must be positive");
        Require(NumHiddenLayers > 0, "num_hidden_layers must be positive");
        Require(NumAttentionHeads > 0 && NumKeyValueHeads > 0, "attention head counts must be positive");
        Require(NumAttentionHeads % NumKeyValueHeads == 0,
            $"num_attention_heads ({NumAttentionHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads})");
        Require(HeadDim != null || HiddenSize % NumAttentionHeads == 0,
            $"hidden_size ({HiddenSize}) must be divisible by num_attention_heads ({NumAttentionHeads})");
        Require(HeadSize % 2 == 0, $"head size ({HeadSize}) must be even for rotary embeddings");
        Require(MaxPositionEmbeddings > 0, "max_position_embeddings must be positive");
        Require(HiddenAct == "silu", $"hidden_act '{HiddenAct}' is not supported (silu)");
        RopeScaling?.Validate();
        return this;
    }

    internal static void Require(bool ok, string message)
    {
        if (!ok) throw new XrayVLException("invalid config: " + message);
    }
}

/// <summary>
/// HF `rope_scaling`: how rotary frequencies are stretched for contexts beyond the trained one, as transformers'
/// `modeling_rope_utils` defines each type (see <see cref="RotaryEmbedding.InverseFrequencies"/>).
/// </summary>
public sealed record RopeScaling
{
    /// <summary>"default", "linear", "dynamic" (NTK), "llama3" or "yarn"; older files say "type".</summary>
    public string RopeType { get; init; } = "default";
    public double Factor { get; init; } = 1.0;
    /// <summary>llama3: wavelengths longer than original / low_freq_factor are divided by the factor.</summary>
    public double? LowFreqFactor { get; init; }
    /// <summary>llama3: wavelengths shorter than original / high_freq_factor are kept.</summary>
    public double? HighFreqFactor { get; init; }
    /// <summary>llama3 and yarn: the context the model was trained with.</summary>
    public int? OriginalMaxPositionEmbeddings { get; init; }
    /// <summary>yarn: scale of cos/sin; null means 0.1·ln(factor) + 1.</summary>
    public double? AttentionFactor { get; init; }
    /// <summary>yarn: rotation counts bounding the ramp between interpolated and extrapolated dimensions (32 and 1 when null).</summary>
    public double? BetaFast { get; init; }
    public double? BetaSlow { get; init; }

    public RopeScaling Validate()
    {
        LanguageModelConfig.Require(RopeType is "default" or "linear" or "dynamic" or "llama3" or "yarn",
            $"rope_scaling type '{RopeType}' is not supported (linear, dynamic, llama3, yarn)");
        LanguageModelConfig.Require(Factor > 0 && double.IsFinite(Factor), $"rope_scaling factor must be positive, got {Factor}");
        if (RopeType == "llama3")
            LanguageModelConfig.Require(LowFreqFactor is > 0 && HighFreqFactor > LowFreqFactor && OriginalMaxPositionEmbeddings is > 0,
                "rope_scaling llama3 needs low_freq_factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings > 0");
        return this;
    }
}

/// <summary>
/// The vision encoder's config. `model_type` picks the architecture:
/// "clip_vision_model" (a ViT with HF CLIP vision key names; the fields are HF CLIPVisionConfig's) or
/// "resnet" (torchvision ResNet key names; `layers` and `block` as torchvision's resnet18/34/50 builders).
/// </summary>
public sealed record VisionConfig
{
    public string ModelType { get; init; } = "clip_vision_model";
    /// <summary>224 px keeps thin lines (tubes, fracture edges) visible at CPU cost; the preprocessor resizes to it.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>Input channels: 1 for the project's grayscale models, 3 for CLIP/ImageNet checkpoints (gray is repeated).</summary>
    public int NumChannels { get; init; } = 1;

    // ViT (CLIP) fields
    public int PatchSize { get; init; } = 16;
    public int HiddenSize { get; init; } = 192;
    public int IntermediateSize { get; init; } = 768;
    public int NumHiddenLayers { get; init; } = 4;
    public int NumAttentionHeads { get; init; } = 3;
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>"quick_gelu" (OpenAI CLIP) or "gelu".</summary>
    public string HiddenAct { get; init; } = "gelu";

    // ResNet (torchvision) fields
    /// <summary>Blocks per stage: [2,2,2,2] is ResNet-18, [3,4,6,3] with bottleneck is ResNet-50.</summary>
    public int[] Layers { get; init; } = [2, 2, 2, 2];
    /// <summary>"basic" (ResNet-18/34) or "bottleneck" (ResNet-50+).</summary>
    public string Block { get; init; } = "basic";
    /// <summary>Stem width; torchvision uses 64. Smaller widths make CPU-sized encoders.</summary>
    public int Width { get; init; } = 64;

    // EVA (eva_vit_g, eva_vit_g_qformer) fields: the ViT fields above with EVA's meanings (intermediate_size is
    // int(hidden · 4.3637) in ViT-g), plus the BLIP-2 Q-Former of eva_vit_g_qformer.
    /// <summary>The Q-Former after EVA (model_type eva_vit_g_qformer, XrayGPT / MiniGPT-4); null otherwise.</summary>
    public QFormerConfig? QformerConfig { get; init; }

    [JsonIgnore] public bool IsVit => ModelType switch
    {
        "clip_vision_model" or "vit" or "eva_vit_g" or "eva_vit_g_qformer" => true,
        "resnet" => false,
        _ => throw new XrayVLException($"vision model type '{ModelType}' is not supported (clip_vision_model, resnet, eva_vit_g, eva_vit_g_qformer)"),
    };

    /// <summary>EVA ViT-g of the MiniGPT-4 family (<see cref="EvaVisionEncoder"/>).</summary>
    [JsonIgnore] public bool IsEva => ModelType is "eva_vit_g" or "eva_vit_g_qformer";

    public VisionConfig Validate()
    {
        static void Require(bool ok, string m) => LanguageModelConfig.Require(ok, "vision_config: " + m);
        Require(ImageSize > 0, "image_size must be positive");
        Require(NumChannels is 1 or 3, "num_channels must be 1 or 3");
        if (IsVit)
        {
            Require(PatchSize > 0 && ImageSize % PatchSize == 0, $"image_size ({ImageSize}) must be a multiple of patch_size ({PatchSize})");
            Require(NumAttentionHeads > 0 && HiddenSize % NumAttentionHeads == 0,
                $"hidden_size ({HiddenSize}) must be divisible by num_attention_heads ({NumAttentionHeads})");
            Require(NumHiddenLayers > 0, "num_hidden_layers must be positive");
            Require(HiddenAct is "gelu" or "quick_gelu", $"hidden_act '{HiddenAct}' is not supported (gelu, quick_gelu)");
            Require(!IsEva || HiddenAct == "gelu", "EVA's MLP uses exact gelu");
            Require((ModelType == "eva_vit_g_qformer") == (QformerConfig != null),
                ModelType == "eva_vit_g_qformer" ? "eva_vit_g_qformer needs qformer_config" : $"qformer_config belongs to eva_vit_g_qformer, not {ModelType}");
            QformerConfig?.Validate();
        }
        else
        {
            Require(Layers.Length == 4 && Layers.All(n => n > 0), "layers must list four positive block counts");
            Require(Block is "basic" or "bottleneck", $"block '{Block}' is not supported (basic, bottleneck)");
            Require(Width > 0, "width must be positive");
        }
        return this;
    }
}

/// <summary>
/// The composed model's `config.json`: a LLaVA-style layout (vision_config + text_config + projector fields), so a
/// checkpoint folder reads like a Hugging Face one.
/// </summary>
public sealed record VisionLanguageConfig
{
    public string ModelType { get; init; } = "xrayvl";
    public string[] Architectures { get; init; } = ["XrayVLForConditionalGeneration"];
    public VisionConfig VisionConfig { get; init; } = new();
    public LanguageModelConfig TextConfig { get; init; } = new();
    /// <summary>"linear" (XrayGPT), "mlp2x_gelu" (LLaVA-1.5) or "merge4" (MiniGPT-v2: 4 adjacent tokens concatenated, then linear).</summary>
    public string ProjectorType { get; init; } = "mlp2x_gelu";
    /// <summary>
    /// The activation between the two linears of "mlp2x_gelu" (LLaVA's `projector_hidden_act`): "gelu" (exact erf),
    /// "gelu_pytorch_tanh" / "gelu_new" (tanh approximation), "quick_gelu", "relu", "silu" or "linear" (identity).
    /// </summary>
    public string ProjectorHiddenAct { get; init; } = "gelu";
    /// <summary>Which encoder layer's output feeds the projector; -2 (the penultimate) as LLaVA, -1 the last.</summary>
    public int VisionFeatureLayer { get; init; } = -1;
    /// <summary>"default": patch tokens only (CLS dropped, as LLaVA); "full": CLS + patches.</summary>
    public string VisionFeatureSelectStrategy { get; init; } = "default";
    /// <summary>Id of the `&lt;image&gt;` placeholder token in the tokenizer; each occurrence becomes one image's tokens.</summary>
    public int ImageTokenIndex { get; init; }
    /// <summary>Whether the vision encoder is trained (false: frozen, features may be cached).</summary>
    public bool FreezeVision { get; init; }
    /// <summary>
    /// One more position per image carrying the vision stage's classifier decisions (<see cref="Modeling.FindingHint"/>).
    /// Needs a ResNet encoder read at its last stage, whose token mean is the pooled vector the classifier was trained on.
    /// </summary>
    public bool FindingHint { get; init; }

    public VisionLanguageConfig Validate()
    {
        VisionConfig.Validate();
        TextConfig.Validate();
        LanguageModelConfig.Require(ProjectorType is "linear" or "mlp2x_gelu" or "merge4",
            $"projector_type '{ProjectorType}' is not supported (linear, mlp2x_gelu, merge4)");
        LanguageModelConfig.Require(Projector.IsSupportedActivation(ProjectorHiddenAct),
            $"projector_hidden_act '{ProjectorHiddenAct}' is not supported (gelu, gelu_pytorch_tanh, gelu_new, quick_gelu, relu, silu, linear)");
        LanguageModelConfig.Require(VisionFeatureSelectStrategy is "default" or "full",
            $"vision_feature_select_strategy '{VisionFeatureSelectStrategy}' is not supported (default, full)");
        LanguageModelConfig.Require(ImageTokenIndex >= 0 && ImageTokenIndex < TextConfig.VocabSize,
            $"image_token_index ({ImageTokenIndex}) is outside the vocabulary (0..{TextConfig.VocabSize - 1})");
        LanguageModelConfig.Require(!FindingHint || (VisionConfig.ModelType == "resnet" && VisionFeatureLayer is -1 or 4),
            "finding_hint needs a resnet vision encoder read at its last stage (vision_feature_layer -1): the classifier " +
            "reads the mean of those tokens");
        return this;
    }
}

/// <summary>Reads and writes configs as HF-style JSON files, validating on load.</summary>
public static class ConfigFile
{
    /// <summary>
    /// Reads a config file. Model configs (language, vision, composed) are read as Hugging Face transformers reads them:
    /// missing keys take transformers' defaults for their model_type, and unknown keys are refused (<see cref="HfConfigs"/>).
    /// </summary>
    public static T Read<T>(string path) where T : class
    {
        if (typeof(T) == typeof(LanguageModelConfig) || typeof(T) == typeof(VisionConfig) || typeof(T) == typeof(VisionLanguageConfig))
        {
            var node = HfConfigs.ParseFile(path);
            try
            {
                object model = typeof(T) == typeof(LanguageModelConfig) ? HfConfigs.ReadLanguageModel(node)
                    : typeof(T) == typeof(VisionConfig) ? HfConfigs.ReadVision(node)
                    : HfConfigs.ReadVisionLanguage(node);
                return (T)model;
            }
            catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}"); }
        }
        var config = Json.Read<T>(path, "config");
        try
        {
            return config switch
            {
                LanguageModelConfig c => (c.Validate() as T)!,
                VisionConfig c => (c.Validate() as T)!,
                VisionLanguageConfig c => (c.Validate() as T)!,
                _ => config,
            };
        }
        catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}"); }
    }

    public static void Write<T>(string path, T config) =>
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(config, Json.Options) + "\n");
}
