using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// An image encoder that turns pixels (B, C, H, W) into a sequence of feature tokens (B, N, Dv) for the projector.
/// Two families: <see cref="ClipVisionEncoder"/> (a ViT with Hugging Face CLIPVisionModel key names) and
/// <see cref="ResNetEncoder"/> (torchvision ResNet key names, without `fc`).
///
/// Which layer feeds the projector follows LLaVA's `vision_feature_layer`, an index into the encoder's list of hidden
/// states as Hugging Face returns it with `output_hidden_states=True` (Python indexing, negative counts from the end):
/// for the ViT, hidden_states[0] is the embeddings after `pre_layrnorm` and hidden_states[i] is the output of encoder
/// layer i (1-based), so -1 is the last layer's output and -2 the penultimate's; for the ResNet, hidden_states[0] is the
/// stem (conv1, bn1, relu, maxpool) and hidden_states[k] the output of `layer{k}`, so -1 is layer4 and -2 layer3.
/// Only the layers up to the selected one are computed.
/// </summary>
public abstract class VisionEncoder : nn.Module<Tensor, Tensor>
{
    protected VisionEncoder(string name, VisionConfig config, int featureLayer, string selectStrategy, int hiddenStateCount)
        : base(name)
    {
        Config = config;
        FeatureLayer = featureLayer;
        SelectStrategy = selectStrategy is "default" or "full"
            ? selectStrategy
            : throw new XrayVLException($"vision_feature_select_strategy '{selectStrategy}' is not supported (default, full)");
        int index = featureLayer < 0 ? hiddenStateCount + featureLayer : featureLayer;
        if (index < 0 || index >= hiddenStateCount)
            throw new XrayVLException(
                $"vision_feature_layer {featureLayer} is out of range for {config.ModelType} with {hiddenStateCount} hidden states " +
                $"(valid: {-hiddenStateCount}..{hiddenStateCount - 1})");
        HiddenStateIndex = index;
    }

    public VisionConfig Config { get; }
    /// <summary>The configured `vision_feature_layer` as given (may be negative).</summary>
    public int FeatureLayer { get; }
    /// <summary>The same layer as a non-negative index into the hidden-state list (0 = embeddings / stem).</summary>
    public int HiddenStateIndex { get; }
    /// <summary>"default" or "full" (see <see cref="VisionLanguageConfig.VisionFeatureSelectStrategy"/>).</summary>
    public string SelectStrategy { get; }

    /// <summary>Feature width Dv of the tokens `forward` returns.</summary>
    public abstract int OutputDim { get; }
    /// <summary>Token count N for an image of the configured size under the configured layer and strategy.</summary>
    public abstract int NumTokens { get; }
    /// <summary>Width of <see cref="Pooled"/>'s output.</summary>
    public abstract int PooledDim { get; }

    /// <summary>One global vector per image (B, PooledDim) from the last layer, for retrieval-style baselines.</summary>
    public abstract Tensor Pooled(Tensor pixels);

    /// <summary>
    /// Redraws every weight as the constructor does; a seeded <paramref name="generator"/> makes the weights reproducible
    /// whatever else draws from the global generator (a trainer's seed, tests running in parallel).
    /// </summary>
    public abstract void InitializeWeights(Generator? generator = null);

    /// <summary>Builds the encoder named by `model_type`; `device` null is CPU, `torch.META` allocates nothing.</summary>
    public static VisionEncoder Create(VisionConfig config, int featureLayer = -1, string selectStrategy = "default", Device? device = null)
    {
        config.Validate();
        return config.ModelType switch
        {
            "clip_vision_model" or "vit" => new ClipVisionEncoder(config, featureLayer, selectStrategy, device),
            "resnet" => new ResNetEncoder(config, featureLayer, selectStrategy, device),
            "eva_vit_g" or "eva_vit_g_qformer" => new EvaVisionEncoder(config, featureLayer, selectStrategy, device),
            _ => throw new XrayVLException($"vision model type '{config.ModelType}' is not supported (clip_vision_model, resnet, eva_vit_g, eva_vit_g_qformer)"),
        };
    }

    /// <summary>The encoder a composed config asks for.</summary>
    public static VisionEncoder Create(VisionLanguageConfig config, Device? device = null) =>
        Create(config.VisionConfig, config.VisionFeatureLayer, config.VisionFeatureSelectStrategy, device);

    /// <summary>
    /// Checks pixels are (B, C, S, S) at the configured size and returns them in the weights' dtype; a 1-channel batch
    /// for a 3-channel model is repeated over channels (grayscale X-rays into an RGB checkpoint).
    /// </summary>
    protected Tensor PreparePixels(Tensor pixels, ScalarType dtype)
    {
        long s = Config.ImageSize;
        if (pixels.dim() != 4 || pixels.shape[2] != s || pixels.shape[3] != s ||
            (pixels.shape[1] != Config.NumChannels && !(pixels.shape[1] == 1 && Config.NumChannels == 3)))
            throw new XrayVLException(
                $"vision encoder expects pixels (B, {Config.NumChannels}, {s}, {s}), got ({string.Join(", ", pixels.shape)})");
        if (pixels.shape[1] != Config.NumChannels)
            pixels = pixels.expand(pixels.shape[0], Config.NumChannels, s, s);
        return pixels.to(dtype);
    }
}
