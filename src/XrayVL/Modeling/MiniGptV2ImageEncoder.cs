using TorchSharp;
using TorchSharp.Modules;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// MiniGPT-v2's (MiniGPT-Med's) image path, `encode_img`, with the seed model's own state-dict keys: `visual_encoder.*`
/// (EVA, run at 448 px in the real model), `ln_vision.*` (torch LayerNorm, eps 1e-5), `llama_proj.*` (4·E → LLM width).
/// No Q-Former: the CLS token is dropped and every <see cref="GroupSize"/> consecutive patch tokens, in raster order,
/// are concatenated into one token (with a 32-wide grid a group is a run of 4 in one row, not a 2×2 block).
/// Pixels (B, 3, S, S) → image embeddings (B, G²/4, L).
/// </summary>
public sealed class MiniGptV2ImageEncoder : nn.Module<Tensor, Tensor>
{
    /// <summary>Patch tokens concatenated into one language-model token.</summary>
    public const int GroupSize = 4;

    private readonly EvaVisionTransformer visual_encoder;
    private readonly LayerNorm ln_vision;
    private readonly Linear llama_proj;

    public MiniGptV2ImageEncoder(EvaVisionConfig vision, int languageHiddenSize, Device? device = null) : base("MiniGptV2ImageEncoder")
    {
        vision.Validate();
        if ((vision.GridSize * vision.GridSize) % GroupSize != 0)
            throw new XrayVLException($"MiniGPT-v2 groups {GroupSize} patch tokens; the {vision.GridSize}×{vision.GridSize} grid of image_size {vision.ImageSize} does not divide");
        if (languageHiddenSize <= 0) throw new XrayVLException($"language model hidden size {languageHiddenSize} must be positive");
        visual_encoder = new EvaVisionTransformer(vision, device);
        // Frozen and never saved by MiniGPT-v2: it keeps its initial weight 1, bias 0.
        ln_vision = nn.LayerNorm(vision.HiddenSize, 1e-5, device: device);
        llama_proj = nn.Linear(GroupSize * vision.HiddenSize, languageHiddenSize, device: device);
        RegisterComponents();
    }

    public EvaVisionConfig VisionConfig => visual_encoder.Config;

    /// <summary>(B, 3, S, S) → (B, G²/4, L).</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var features = ln_vision.call(visual_encoder.call(pixels)); // (B, 1 + G², E)
        return llama_proj.call(Group(features)).MoveToOuterDisposeScope();
    }

    /// <summary>ln_vision-ed features (B, 1 + G², E) → (B, G²/4, 4·E): CLS dropped, 4 consecutive tokens concatenated.</summary>
    public static Tensor Group(Tensor features)
    {
        using var scope = NewDisposeScope();
        long b = features.shape[0], n = features.shape[1] - 1, e = features.shape[2];
        if (n <= 0 || n % GroupSize != 0)
            throw new XrayVLException($"MiniGPT-v2 needs 1 + a multiple of {GroupSize} vision tokens, got {features.shape[1]}");
        return features[.., 1..].reshape(b, n / GroupSize, GroupSize * e).MoveToOuterDisposeScope();
    }

    /// <summary>(B, G²/4, 4·E) → (B, G²/4, L).</summary>
    public Tensor ProjectGroups(Tensor grouped) => llama_proj.call(grouped);

    /// <summary>
    /// Loads EVA's plain state dict (`eva_vit_g.pth`, positions resized to this image size) and `llama_proj.*` from the
    /// stage checkpoint's `{"model": ...}`; its LoRA weights and optimizer are ignored here. A missing key or a shape that
    /// differs is an error.
    /// </summary>
    public void LoadSeedCheckpoints(string evaPath, string stagePath)
    {
        var eva = TorchCheckpoint.LoadStateDict(evaPath);
        try
        {
            ModuleWeights.LoadInto(visual_encoder, visual_encoder.AdaptCheckpoint(eva));
        }
        finally
        {
            foreach (var t in eva.Values) t.Dispose();
        }
        var stage = TorchCheckpoint.LoadStateDict(stagePath, key: "model");
        try
        {
            var report = ModuleWeights.LoadInto(llama_proj, stage, "llama_proj", strict: false);
            if (report.Missing.Count > 0 || report.ShapeMismatches.Count > 0)
                throw new XrayVLException($"{stagePath} does not fit MiniGPT-v2's llama_proj: " + ModuleWeights.Describe(report with { Unexpected = [] }));
        }
        finally
        {
            foreach (var t in stage.Values) t.Dispose();
        }
    }
}
