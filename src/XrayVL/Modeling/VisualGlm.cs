using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

// VisualGLM-6B, the model XrayGLM fine-tunes, read top to bottom:
//   VisualGlmConfig → VisualGlmImageEncoder (EVA ViT → ln_vision → Q-Former over 32 learned queries → glm_proj)
//   → VisualGlmModel (the image embeddings replace the 32 placeholder positions of the prompt, then ChatGLM decodes).
// The EVA and Q-Former are the same modules XrayGPT uses (BLIP-2's architecture); SAT stores them under other names and
// in other groupings, which IO/SatVisualGlm.cs maps by one key table. Shapes: B batch, N = 1 + G² EVA tokens, E EVA
// width, Q queries (32), Dq Q-Former width, D GLM width, T prompt length.

/// <summary>
/// VisualGLM's parts (the XrayVL model folder's config.json, snake_case): ChatGLM, the EVA ViT, the Q-Former and the
/// number of image positions. Defaults are the published visualglm-6b.
/// </summary>
public sealed record VisualGlmConfig
{
    /// <summary>"visualglm": VisualGLM-6B and the models fine-tuned from it (XrayGLM).</summary>
    public string ModelType { get; init; } = "visualglm";
    public GlmConfig TextConfig { get; init; } = new();
    /// <summary>VisualGLM's EVA-CLIP ViT-g has 39 blocks of width 1408 at 224 px, as BLIP-2's.</summary>
    public EvaVisionConfig VisionConfig { get; init; } = new();
    /// <summary>BLIP-2's Q-Former: 12 layers of width 768 that cross-attend to the image on every other layer.</summary>
    public QFormerConfig QformerConfig { get; init; } = new();
    /// <summary>Prompt positions the image takes: one per Q-Former query (SAT's image_length).</summary>
    public int ImageLength { get; init; } = 32;
    /// <summary>How conversations become text: "xrayglm" is XrayGLM's "&lt;img&gt;&lt;/img&gt;问：…\n答：" (its questions are Chinese).</summary>
    public string PromptFormat { get; init; } = "xrayglm";

    public VisualGlmConfig Validate()
    {
        if (ModelType != "visualglm") throw new XrayVLException($"model_type '{ModelType}' is not VisualGLM ('visualglm')");
        if (PromptFormat != "xrayglm") throw new XrayVLException($"prompt_format '{PromptFormat}' is not supported for VisualGLM (xrayglm)");
        TextConfig.Validate();
        VisionConfig.Validate();
        QformerConfig.Validate();
        if (QformerConfig.EncoderWidth != VisionConfig.HiddenSize)
            throw new XrayVLException($"Q-Former encoder_width {QformerConfig.EncoderWidth} must equal the EVA width {VisionConfig.HiddenSize}");
        if (ImageLength != QformerConfig.NumQueryTokens)
            throw new XrayVLException($"image_length {ImageLength} must equal the Q-Former's {QformerConfig.NumQueryTokens} query tokens");
        return this;
    }
}

/// <summary>
/// VisualGLM's image path: pixels (B, 3, S, S) → EVA (B, N, E) → ln_vision (torch LayerNorm, eps 1e-5) → Q-Former with
/// the learned `query_tokens` (1, Q, Dq) as queries and every EVA token (CLS included) as keys/values → glm_proj
/// (B, Q, D). Keys: `visual_encoder.*`, `ln_vision.*`, `query_tokens`, `Qformer.bert.*`, `glm_proj.*`.
/// </summary>
public sealed class VisualGlmImageEncoder : nn.Module<Tensor, Tensor>
{
    private readonly EvaVisionTransformer visual_encoder;
    private readonly LayerNorm ln_vision;
    private readonly Parameter query_tokens;
    private readonly QFormer Qformer;
    private readonly nn.Module<Tensor, Tensor> glm_proj;

    public VisualGlmImageEncoder(VisualGlmConfig config) : base(nameof(VisualGlmImageEncoder))
    {
        visual_encoder = new EvaVisionTransformer(config.VisionConfig);
        ln_vision = nn.LayerNorm(config.VisionConfig.HiddenSize, 1e-5);
        query_tokens = new Parameter(torch.zeros(1, config.QformerConfig.NumQueryTokens, config.QformerConfig.HiddenSize));
        Qformer = new QFormer(config.QformerConfig);
        glm_proj = Layers.Linear(config.QformerConfig.HiddenSize, config.TextConfig.HiddenSize);
        RegisterComponents();
    }

    /// <summary>(B, 3, S, S) → (B, Q, D).</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        return Project(QueryOutputs(VisionFeatures(pixels))).MoveToOuterDisposeScope();
    }

    /// <summary>EVA's output after ln_vision: (B, 3, S, S) → (B, N, E).</summary>
    public Tensor VisionFeatures(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        return ln_vision.call(visual_encoder.call(pixels.to(query_tokens.dtype))).MoveToOuterDisposeScope();
    }

    /// <summary>The Q-Former's last hidden state over the learned queries: (B, N, E) → (B, Q, Dq).</summary>
    public Tensor QueryOutputs(Tensor features)
    {
        using var scope = NewDisposeScope();
        var queries = query_tokens.expand(features.shape[0], -1, -1);                                  // (B, Q, Dq)
        return Qformer.call(queries, features).MoveToOuterDisposeScope();
    }

    /// <summary>(B, Q, Dq) → (B, Q, D).</summary>
    public Tensor Project(Tensor queryOutputs) => glm_proj.call(queryOutputs);
}

/// <summary>
/// VisualGLM-6B / XrayGLM: `image_encoder.*` (<see cref="VisualGlmImageEncoder"/>) and `language_model.*`
/// (<see cref="GlmDecoder"/>). A prompt carries ImageLength placeholder tokens right after the tokens of "&lt;img&gt;";
/// with an image their embeddings are replaced by the image's (VisualGLM's word_embedding_forward), without one they
/// stay ordinary token embeddings (XrayGLM's text-only chat).
/// </summary>
public sealed class VisualGlmModel : nn.Module
{
    private readonly VisualGlmImageEncoder image_encoder;
    private readonly GlmDecoder language_model;

    public VisualGlmConfig Config { get; }

    public VisualGlmModel(VisualGlmConfig config) : base(nameof(VisualGlmModel))
    {
        Config = config.Validate();
        image_encoder = new VisualGlmImageEncoder(config);
        language_model = new GlmDecoder(config.TextConfig);
        RegisterComponents();
    }

    public VisualGlmImageEncoder ImageEncoder => image_encoder;
    public GlmDecoder LanguageModel => language_model;

    /// <summary>
    /// A VisualGLM model in <paramref name="dtype"/> whose weights the caller fills next. The GLM's linears (6.2 G of the
    /// 7.8 G parameters) are left uninitialised, so their float32 buffers are never written: converting them to bf16
    /// reads untouched pages (which the OS does not back with memory) and only the bf16 copies take memory. The process's
    /// default dtype is not changed: it is global, and other threads may be creating tensors meanwhile.
    /// </summary>
    public static VisualGlmModel Create(VisualGlmConfig config, ScalarType dtype = ScalarType.Float32)
    {
        VisualGlmModel model;
        using (Layers.SkipInitialisation()) model = new VisualGlmModel(config);
        try
        {
            if (dtype != ScalarType.Float32) model.to(dtype);
            foreach (var p in model.parameters()) p.requires_grad = false;
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The prompt's input embeddings (1, T, D): token embeddings, with positions [preImage, preImage + ImageLength)
    /// replaced by <paramref name="imageEmbeds"/> (1, ImageLength, D) when given.
    /// </summary>
    public Tensor EmbedPrompt(long[] ids, Tensor? imageEmbeds, int preImage)
    {
        using var scope = NewDisposeScope();
        var tokens = language_model.Embed(torch.tensor(ids).view(1, -1));                               // (1, T, D)
        if (imageEmbeds is null) return tokens.MoveToOuterDisposeScope();
        int length = Config.ImageLength;
        if (preImage < 0 || preImage + length > ids.Length)
            throw new XrayVLException($"the image's {length} positions from {preImage} do not fit a prompt of {ids.Length} tokens");
        if (imageEmbeds.dim() != 3 || imageEmbeds.shape[0] != 1 || imageEmbeds.shape[1] != length || imageEmbeds.shape[2] != Config.TextConfig.HiddenSize)
            throw new XrayVLException($"image embeddings must be (1, {length}, {Config.TextConfig.HiddenSize}), got ({string.Join(", ", imageEmbeds.shape)})");
        var spliced = torch.cat([tokens.narrow(1, 0, preImage), imageEmbeds.to(tokens.dtype),
                                 tokens.narrow(1, preImage + length, ids.Length - preImage - length)], dim: 1);
        return spliced.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Answers one prompt: its ids end in `[gMASK] &lt;sop&gt;`; with <paramref name="pixels"/> (1, 3, S, S) the image
    /// goes at <paramref name="preImage"/>. Greedy with XrayGLM's repetition penalty (see <see cref="GlmDecoder.Generate"/>).
    /// </summary>
    public long[] Generate(long[] ids, Tensor? pixels, int preImage, int maxNewTokens, double repetitionPenalty = 1.0)
    {
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        var image = pixels is null ? null : image_encoder.call(pixels);
        var embeds = EmbedPrompt(ids, image, preImage);
        var (positions, mask) = language_model.Inputs(ids);
        return language_model.Generate(embeds, positions, mask, maxNewTokens, repetitionPenalty);
    }
}
