using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// The composed chest X-ray model, in the shape XrayGPT, MiniGPT-Med and LLaVA share:
/// image → vision encoder (B, N, Dv) → projector (B, Nv, D) → spliced into the prompt's token embeddings at the
/// `&lt;image&gt;` positions → causal language model.
/// State-dict keys follow HF LLaVA: `vision_tower.*`, `multi_modal_projector.*`, `language_model.*`.
/// </summary>
/// <remarks>
/// The chat template writes one `&lt;image&gt;` token per image; <see cref="ExpandImagePlaceholders"/> repeats it to
/// the Nv positions the image fills, so a batch keeps rectangular shapes and splicing is one masked scatter.
/// </remarks>
public sealed class VisionLanguageModel : nn.Module
{
    private readonly VisionEncoder vision_tower;
    private readonly Projector multi_modal_projector;
    private readonly LanguageModel language_model;
    private readonly FindingHint? finding_hint;

    public VisionLanguageConfig Config { get; }

    /// <summary>Positions one image fills in the language model's sequence (Nv).</summary>
    public int TokensPerImage { get; }

    public VisionLanguageModel(VisionLanguageConfig config) : base(nameof(VisionLanguageModel))
    {
        Config = config.Validate();
        vision_tower = VisionEncoder.Create(config);
        multi_modal_projector = Projector.Create(config.ProjectorType, vision_tower.OutputDim, config.TextConfig.HiddenSize,
            activation: config.ProjectorHiddenAct);
        finding_hint = config.FindingHint ? new FindingHint(vision_tower.PooledDim, config.TextConfig.HiddenSize) : null;
        TokensPerImage = multi_modal_projector.OutputTokens(vision_tower.NumTokens) + (finding_hint is null ? 0 : 1);
        language_model = new LanguageModel(config.TextConfig);
        RegisterComponents();
    }

    /// <summary>
    /// Redraws every weight (vision tower, projector, language model) as the constructors do, from a seeded
    /// <paramref name="generator"/> when given: the same seed gives the same model whatever else uses the global generator.
    /// Call it before attaching LoRA adapters (the language model's reset covers them too).
    /// </summary>
    public void InitializeWeights(torch.Generator? generator = null)
    {
        vision_tower.InitializeWeights(generator);
        multi_modal_projector.InitializeWeights(generator);
        language_model.InitializeWeights(generator);
        finding_hint?.InitializeWeights(generator);   // last: a model without the hint draws the same weights as before it existed
    }

    public VisionEncoder VisionTower => vision_tower;
    public LanguageModel LanguageModel => language_model;
    public Projector Projector => multi_modal_projector;
    /// <summary>The classifier-decision position (config finding_hint), or null.</summary>
    public FindingHint? FindingHint => finding_hint;

    /// <summary>Vision features before the projector: (N, C, H, W) → (N, Ntok, Dv). Cached when the encoder is frozen.</summary>
    public Tensor EncodeVision(Tensor pixels) => vision_tower.call(pixels);

    /// <summary>Image embeddings in the language model's space: (N, C, H, W) → (N, Nv, D).</summary>
    public Tensor EncodeImages(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var typed = pixels.to(multi_modal_projector.parameters().First().dtype);   // a bf16 / int8 model runs its vision tower in bf16
        return ProjectFeatures(vision_tower.call(typed)).MoveToOuterDisposeScope();
    }

    /// <summary>Projects vision features (cached or fresh): (N, Ntok, Dv) → (N, Nv, D), the finding hint last when configured.</summary>
    public Tensor ProjectFeatures(Tensor visionFeatures)
    {
        if (finding_hint is null) return multi_modal_projector.call(visionFeatures);
        using var scope = NewDisposeScope();
        var projected = multi_modal_projector.call(visionFeatures);                           // (N, Nv - 1, D)
        var hint = finding_hint.call(visionFeatures).to(projected.dtype);                      // (N, 1, D)
        return torch.cat([projected, hint], 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Token embeddings with image embeddings spliced in: ids (B, T) holding Nv image tokens per image, imageEmbeds
    /// (Nimg, Nv, D) in reading order (row by row, left to right) → (B, T, D).
    /// </summary>
    public Tensor Embed(Tensor ids, Tensor? imageEmbeds)
    {
        using var scope = NewDisposeScope();
        using Scalar imageToken = Config.ImageTokenIndex;                 // held until eq returns (an implicit temporary can be finalized mid-call)
        var isImage = ids.eq(imageToken);                                  // (B, T)
        long imagePositions = isImage.sum().item<long>();
        long given = imageEmbeds is null ? 0 : imageEmbeds.shape[0] * imageEmbeds.shape[1];
        if (imagePositions != given)
            throw new XrayVLException(
                $"the prompt has {imagePositions} image positions ({imagePositions / Math.Max(1, TokensPerImage)} images) " +
                $"but {given / Math.Max(1, TokensPerImage)} images were given");
        var embeds = language_model.Embed(ids);                           // (B, T, D)
        if (imageEmbeds is null) return embeds.MoveToOuterDisposeScope();
        var mask = isImage.unsqueeze(-1).expand_as(embeds);               // (B, T, D)
        return embeds.masked_scatter(mask, imageEmbeds.to(embeds.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>Logits (B, T, V) for ids with spliced images; see <see cref="LanguageModel.Forward"/> for mask and cache.</summary>
    public Tensor Forward(Tensor ids, Tensor? imageEmbeds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        using var scope = NewDisposeScope();
        var embeds = Embed(ids, imageEmbeds);
        return language_model.Forward(embeds, attentionMask, cache).MoveToOuterDisposeScope();
    }

    /// <summary>Mean cross-entropy over answer tokens only (labels are <see cref="Constants.IgnoreIndex"/> elsewhere).</summary>
    public Tensor Loss(Tensor ids, Tensor labels, Tensor? imageEmbeds, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        var logits = Forward(ids, imageEmbeds, attentionMask);
        return LanguageModel.CausalLmLoss(logits, labels).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Repeats each image placeholder to <paramref name="tokensPerImage"/> positions (labels there are ignored):
    /// the chat template writes one `&lt;image&gt;` per image, the model needs one position per image embedding.
    /// </summary>
    public static (int[] Ids, int[] Labels) ExpandImagePlaceholders(IReadOnlyList<int> ids, IReadOnlyList<int> labels, int imageTokenId, int tokensPerImage)
    {
        if (ids.Count != labels.Count) throw new ArgumentException("ids and labels differ in length");
        var outIds = new List<int>(ids.Count);
        var outLabels = new List<int>(ids.Count);
        for (int i = 0; i < ids.Count; i++)
        {
            int repeat = ids[i] == imageTokenId ? tokensPerImage : 1;
            for (int r = 0; r < repeat; r++)
            {
                outIds.Add(ids[i]);
                outLabels.Add(ids[i] == imageTokenId ? Constants.IgnoreIndex : labels[i]);
            }
        }
        return (outIds.ToArray(), outLabels.ToArray());
    }
}
