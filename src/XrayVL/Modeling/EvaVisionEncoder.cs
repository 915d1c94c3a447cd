using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// The image side of the MiniGPT-4 family as a vision tower of the composed model: EVA ViT-g (`visual_encoder.*`), then
/// BLIP-2's `ln_vision` (torch LayerNorm, eps 1e-5), then — for `model_type` "eva_vit_g_qformer" (XrayGPT) — the BLIP-2
/// Q-Former reading those features through its learned `query_tokens`. The projector that follows is the seeds'
/// `llama_proj`: "linear" after the Q-Former (XrayGPT), "merge4" on the patch tokens (MiniGPT-v2 / MiniGPT-Med).
/// `vision_feature_select_strategy` picks which EVA tokens go on: "full" (CLS + patches; XrayGPT's Q-Former reads them
/// all) or "default" (patches only; MiniGPT-v2 drops CLS before grouping). Only the last block's output is used
/// (vision_feature_layer −1), as both seeds do.
/// Pixels (B, 3, S, S) → (B, Q, Dq) with the Q-Former, else (B, G² [+1], E).
/// </summary>
public sealed class EvaVisionEncoder : VisionEncoder
{
    private readonly EvaVisionTransformer visual_encoder;
    private readonly LayerNorm ln_vision;
    private readonly Parameter? query_tokens;
    private readonly QFormer? Qformer;

    public EvaVisionEncoder(VisionConfig config, int featureLayer = -1, string selectStrategy = "default", Device? device = null)
        : base(nameof(EvaVisionEncoder), config, featureLayer, selectStrategy, config.NumHiddenLayers + 1)
    {
        if (HiddenStateIndex != config.NumHiddenLayers)
            throw new XrayVLException($"{config.ModelType} feeds its last block's output on (vision_feature_layer -1), not layer {featureLayer}");
        Eva = ToEvaConfig(config);
        visual_encoder = new EvaVisionTransformer(Eva, device);
        ln_vision = nn.LayerNorm(config.HiddenSize, 1e-5, device: device);
        if (config.ModelType == "eva_vit_g_qformer")
        {
            var q = (config.QformerConfig ?? throw new XrayVLException("eva_vit_g_qformer needs qformer_config")).Validate();
            if (q.EncoderWidth != config.HiddenSize)
                throw new XrayVLException($"qformer_config encoder_width {q.EncoderWidth} must equal the EVA hidden_size {config.HiddenSize}");
            query_tokens = new Parameter(torch.zeros(1, q.NumQueryTokens, q.HiddenSize, device: device));
            Qformer = new QFormer(q, device);
        }
        RegisterComponents();
    }

    /// <summary>The EVA sizes a <see cref="VisionConfig"/> of model_type eva_vit_g / eva_vit_g_qformer names.</summary>
    public static EvaVisionConfig ToEvaConfig(VisionConfig config) => new()
    {
        ImageSize = config.ImageSize,
        PatchSize = config.PatchSize,
        NumChannels = config.NumChannels,
        HiddenSize = config.HiddenSize,
        NumHiddenLayers = config.NumHiddenLayers,
        NumAttentionHeads = config.NumAttentionHeads,
        MlpHiddenSize = config.IntermediateSize,
        LayerNormEps = config.LayerNormEps,
    };

    public EvaVisionConfig Eva { get; }
    public EvaVisionTransformer Transformer => visual_encoder;

    private int Patches => Eva.GridSize * Eva.GridSize;
    public override int OutputDim => Qformer?.Config.HiddenSize ?? Config.HiddenSize;
    public override int NumTokens => Qformer?.Config.NumQueryTokens ?? Patches + (SelectStrategy == "full" ? 1 : 0);
    public override int PooledDim => Config.HiddenSize;

    /// <summary>ln_vision(EVA(pixels)) with the selected tokens: (B, 3, S, S) → (B, G² [+1], E).</summary>
    public Tensor Features(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var features = ln_vision.call(visual_encoder.call(PreparePixels(pixels, ln_vision.weight!.dtype))); // (B, 1 + G², E)
        if (SelectStrategy == "default") features = features[.., 1..];                                    // (B, G², E)
        return features.MoveToOuterDisposeScope();
    }

    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var features = Features(pixels);
        if (Qformer is null) return features.MoveToOuterDisposeScope();
        var queries = query_tokens!.expand(features.shape[0], -1, -1);                                   // (B, Q, Dq)
        return Qformer.call(queries, features.to(query_tokens.dtype)).MoveToOuterDisposeScope();          // (B, Q, Dq)
    }

    /// <summary>The CLS token after ln_vision: (B, E).</summary>
    public override Tensor Pooled(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var tokens = ln_vision.call(visual_encoder.call(PreparePixels(pixels, ln_vision.weight!.dtype)));
        return tokens[.., 0].MoveToOuterDisposeScope();
    }

    public override void InitializeWeights(Generator? generator = null)
    {
        // ViT/BERT-style: truncated normal (std 0.02) for matrices, kernels, positions, CLS and query tokens; zero biases
        // (EVA's q_bias / v_bias included); LayerNorm weight 1.
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (p.dim() >= 2) Layers.TruncatedNormal_(p, std: 0.02, low: -0.04, high: 0.04, generator);
            else if (name.EndsWith("bias", StringComparison.Ordinal)) p.zero_();
            else p.fill_(1.0);
        }
    }
}
