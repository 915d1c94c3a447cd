using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// The BLIP-2 Q-Former (a BERT with cross-attention) as XrayGPT / MiniGPT-4 build it in `blip2.py`: bert-base-uncased
/// sizes plus `encoder_width`, `cross_attention_freq` and the number of learned query tokens. Defaults are the published
/// model (768 wide, 12 layers, 32 queries over ViT-g's 1408-wide features).
/// </summary>
public sealed record QFormerConfig
{
    public int HiddenSize { get; init; } = 768;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 12;
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>BERT's LayerNorm eps (every LayerNorm of the Q-Former, including the embeddings').</summary>
    public double LayerNormEps { get; init; } = 1e-12;
    /// <summary>Only BERT's exact (erf) "gelu" is supported; it is what bert-base-uncased names.</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary>Width of the vision features the cross-attention keys/values read (ViT-g: 1408).</summary>
    public int EncoderWidth { get; init; } = 1408;
    /// <summary>Layers i with i % freq == 0 cross-attend to the image (0, 2, .., 10 in the real model).</summary>
    public int CrossAttentionFreq { get; init; } = 2;
    public int NumQueryTokens { get; init; } = 32;

    [JsonIgnore] public int HeadDim => HiddenSize / NumAttentionHeads;

    public bool HasCrossAttention(int layer) => layer % CrossAttentionFreq == 0;

    public QFormerConfig Validate()
    {
        if (HiddenSize <= 0 || NumHiddenLayers <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
            throw new XrayVLException($"Q-Former hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");
        if (IntermediateSize <= 0 || EncoderWidth <= 0 || NumQueryTokens <= 0)
            throw new XrayVLException($"Q-Former intermediate_size {IntermediateSize}, encoder_width {EncoderWidth} and num_query_token {NumQueryTokens} must be positive");
        if (CrossAttentionFreq <= 0) throw new XrayVLException($"Q-Former cross_attention_freq {CrossAttentionFreq} must be positive");
        if (HiddenAct != "gelu") throw new XrayVLException($"Q-Former hidden_act '{HiddenAct}' is not supported (gelu)");
        return this;
    }
}

/// <summary>
/// The Q-Former with XrayGPT's key names under `Qformer.`: `bert.embeddings.LayerNorm`, `bert.encoder.layer.{i}.{attention,
/// crossattention (cross layers only), intermediate_query, output_query}`. Only the query path exists: XrayGPT runs it
/// with query embeddings and no text, so BERT's word/position embeddings and the text FFN (`intermediate`, `output`)
/// are never used (the seed sets them to None) and are not built here.
/// (query_embeds (B, Q, D), image features (B, N, E)) → last hidden state (B, Q, D). No attention masks: every query
/// and every image token is visible (the seed's all-ones masks add 0).
/// </summary>
public sealed class QFormer : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly QFormerBert bert;

    public QFormer(QFormerConfig config, Device? device = null) : base("QFormer")
    {
        Config = config.Validate();
        bert = new QFormerBert(config, device);
        RegisterComponents();
    }

    public QFormerConfig Config { get; }

    public override Tensor forward(Tensor queryEmbeds, Tensor imageFeatures)
    {
        using var scope = NewDisposeScope();
        if (queryEmbeds.dim() != 3 || queryEmbeds.shape[2] != Config.HiddenSize)
            throw new XrayVLException($"Q-Former expects query embeddings (B, Q, {Config.HiddenSize}), got ({string.Join(", ", queryEmbeds.shape)})");
        if (imageFeatures.dim() != 3 || imageFeatures.shape[0] != queryEmbeds.shape[0] || imageFeatures.shape[2] != Config.EncoderWidth)
            throw new XrayVLException($"Q-Former expects image features ({queryEmbeds.shape[0]}, N, {Config.EncoderWidth}), got ({string.Join(", ", imageFeatures.shape)})");
        return bert.call(queryEmbeds, imageFeatures).MoveToOuterDisposeScope();
    }
}

/// <summary>`bert`: embeddings (a LayerNorm over the query embeddings) then the layers; no pooler, no final norm.</summary>
public sealed class QFormerBert : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly QFormerEmbeddings embeddings;
    private readonly QFormerEncoder encoder;

    public QFormerBert(QFormerConfig config, Device? device) : base("QFormerBert")
    {
        embeddings = new QFormerEmbeddings(config, device);
        encoder = new QFormerEncoder(config, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor queryEmbeds, Tensor imageFeatures)
    {
        using var scope = NewDisposeScope();
        return encoder.call(embeddings.call(queryEmbeds), imageFeatures).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// With query embeddings only, BERT's embeddings are LayerNorm(query_embeds): no word and no position embeddings are
/// added (queries are unordered). (B, Q, D) → (B, Q, D)
/// </summary>
public sealed class QFormerEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm LayerNorm;

    public QFormerEmbeddings(QFormerConfig config, Device? device) : base("QFormerEmbeddings")
    {
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor queryEmbeds) => LayerNorm.call(queryEmbeds);
}

/// <summary>`encoder.layer.{i}`, run in order. (B, Q, D), (B, N, E) → (B, Q, D)</summary>
public sealed class QFormerEncoder : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly ModuleList<QFormerLayer> layer;

    public QFormerEncoder(QFormerConfig config, Device? device) : base("QFormerEncoder")
    {
        layer = new ModuleList<QFormerLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layer.Add(new QFormerLayer(config, config.HasCrossAttention(i), device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor imageFeatures)
    {
        using var scope = NewDisposeScope();
        foreach (var l in layer) hidden = l.call(hidden, imageFeatures);
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// One post-LN BERT layer on the query positions: self-attention over the queries, then (cross layers only)
/// cross-attention from the queries to the image features, then the query FFN `intermediate_query` → `output_query`.
/// Each sub-block is LayerNorm(x + sublayer(x)). (B, Q, D), (B, N, E) → (B, Q, D)
/// </summary>
public sealed class QFormerLayer : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly QFormerAttention attention;
    private readonly QFormerAttention? crossattention; // null on layers without cross-attention: nothing registered, no keys
    private readonly QFormerIntermediate intermediate_query;
    private readonly QFormerOutput output_query;

    public QFormerLayer(QFormerConfig config, bool crossAttention, Device? device) : base("QFormerLayer")
    {
        attention = new QFormerAttention(config, config.HiddenSize, device);
        if (crossAttention) crossattention = new QFormerAttention(config, config.EncoderWidth, device);
        intermediate_query = new QFormerIntermediate(config, device);
        output_query = new QFormerOutput(config, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor imageFeatures)
    {
        using var scope = NewDisposeScope();
        var h = attention.call(hidden, hidden); // (B, Q, D)
        if (crossattention is not null) h = crossattention.call(h, imageFeatures); // keys/values from (B, N, E)
        return output_query.call(intermediate_query.call(h), h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// BERT attention block `{self, output}`: multi-head attention of the hidden states over <c>context</c> (themselves for
/// self-attention, the image features for cross-attention, whose width sets key/value's input), then
/// LayerNorm(hidden + dense(attention)). (B, Q, D), (B, N, W) → (B, Q, D)
/// </summary>
public sealed class QFormerAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly QFormerSelfAttention self;
    private readonly QFormerOutput output;

    public QFormerAttention(QFormerConfig config, int contextWidth, Device? device) : base("QFormerAttention")
    {
        self = new QFormerSelfAttention(config, contextWidth, device);
        output = new QFormerOutput(config, device, inputSize: config.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor context)
    {
        using var scope = NewDisposeScope();
        return output.call(self.call(hidden, context), hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// `query`, `key`, `value` Linears with bias; scores q·kᵀ / sqrt(head_dim), softmax over the keys, heads concatenated.
/// (B, Q, D), (B, N, W) → (B, Q, D)
/// </summary>
public sealed class QFormerSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear query;
    private readonly Linear key;
    private readonly Linear value;
    private readonly int heads;

    public QFormerSelfAttention(QFormerConfig config, int contextWidth, Device? device) : base("QFormerSelfAttention")
    {
        heads = config.NumAttentionHeads;
        query = nn.Linear(config.HiddenSize, config.HiddenSize, device: device);
        key = nn.Linear(contextWidth, config.HiddenSize, device: device);
        value = nn.Linear(contextWidth, config.HiddenSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor context)
    {
        using var scope = NewDisposeScope();
        long b = hidden.shape[0], q = hidden.shape[1], n = context.shape[1], d = query.weight!.shape[0], hd = d / heads;
        var qh = query.call(hidden).view(b, q, heads, hd).transpose(1, 2); // (B, H, Q, hd)
        var kh = key.call(context).view(b, n, heads, hd).transpose(1, 2); // (B, H, N, hd)
        var vh = value.call(context).view(b, n, heads, hd).transpose(1, 2);
        using Scalar divisor = Math.Sqrt(hd);   // held until the divide returns (an implicit temporary can be finalized mid-call)
        var weights = (qh.matmul(kh.transpose(-2, -1)) / divisor).softmax(-1); // (B, H, Q, N)
        return weights.matmul(vh).transpose(1, 2).reshape(b, q, d).MoveToOuterDisposeScope(); // (B, Q, D)
    }
}

/// <summary>`dense` with the layer's activation (exact GELU): (B, Q, D) → (B, Q, I).</summary>
public sealed class QFormerIntermediate : nn.Module<Tensor, Tensor>
{
    private readonly Linear dense;

    public QFormerIntermediate(QFormerConfig config, Device? device) : base("QFormerIntermediate")
    {
        dense = nn.Linear(config.HiddenSize, config.IntermediateSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return nn.functional.gelu(dense.call(x)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// BERT's post-LN residual: LayerNorm(residual + dense(x)). Used after attention (input D) and after the FFN (input I).
/// (B, Q, in), (B, Q, D) → (B, Q, D)
/// </summary>
public sealed class QFormerOutput : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Linear dense;
    private readonly LayerNorm LayerNorm;

    public QFormerOutput(QFormerConfig config, Device? device, int? inputSize = null) : base("QFormerOutput")
    {
        dense = nn.Linear(inputSize ?? config.IntermediateSize, config.HiddenSize, device: device);
        LayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return LayerNorm.call(dense.call(x) + residual).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// XrayGPT's (MiniGPT-4's) image path, `encode_img`, with the seed model's own state-dict keys: `visual_encoder.*` (EVA),
/// `ln_vision.*` (torch LayerNorm, eps 1e-5), `query_tokens` (1, Q, D), `Qformer.bert.*`, `llama_proj.*` (D → LLM width).
/// Pixels (B, 3, S, S) → image embeddings (B, Q, L): llama_proj(Qformer(query_tokens, ln_vision(EVA(pixels)))).
/// All EVA tokens (CLS included) are the cross-attention's keys/values.
/// </summary>
public sealed class XrayGptImageEncoder : nn.Module<Tensor, Tensor>
{
    private readonly EvaVisionTransformer visual_encoder;
    private readonly LayerNorm ln_vision;
    private readonly Parameter query_tokens;
    private readonly QFormer Qformer;
    private readonly Linear llama_proj;

    public XrayGptImageEncoder(EvaVisionConfig vision, QFormerConfig qformer, int languageHiddenSize, Device? device = null)
        : base("XrayGptImageEncoder")
    {
        vision.Validate();
        qformer.Validate();
        if (qformer.EncoderWidth != vision.HiddenSize)
            throw new XrayVLException($"Q-Former encoder_width {qformer.EncoderWidth} must equal the EVA width {vision.HiddenSize}");
        if (languageHiddenSize <= 0) throw new XrayVLException($"language model hidden size {languageHiddenSize} must be positive");
        visual_encoder = new EvaVisionTransformer(vision, device);
        ln_vision = nn.LayerNorm(vision.HiddenSize, 1e-5, device: device);
        query_tokens = new Parameter(torch.zeros(1, qformer.NumQueryTokens, qformer.HiddenSize, device: device));
        Qformer = new QFormer(qformer, device);
        llama_proj = nn.Linear(qformer.HiddenSize, languageHiddenSize, device: device);
        RegisterComponents();
    }

    public EvaVisionConfig VisionConfig => visual_encoder.Config;
    public QFormerConfig QFormerConfig => Qformer.Config;

    /// <summary>(B, 3, S, S) → (B, Q, L).</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var features = ln_vision.call(visual_encoder.call(pixels)); // (B, 1 + G², E)
        return ProjectQueries(QueryOutputs(features)).MoveToOuterDisposeScope();
    }

    /// <summary>ln_vision-ed EVA features (B, N, E) → Q-Former last hidden state (B, Q, D).</summary>
    public Tensor QueryOutputs(Tensor features)
    {
        using var scope = NewDisposeScope();
        var queries = query_tokens.expand(features.shape[0], -1, -1); // (B, Q, D)
        return Qformer.call(queries, features.to(query_tokens.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>(B, Q, D) → (B, Q, L).</summary>
    public Tensor ProjectQueries(Tensor queryOutputs) => llama_proj.call(queryOutputs);

    /// <summary>
    /// Loads the three files XrayGPT composes, as they are: EVA's plain state dict (`eva_vit_g.pth`; positions resized
    /// when saved for another grid), BLIP-2's `{"model": ...}` for `query_tokens`, `ln_vision.*`, `Qformer.bert.*`, and the
    /// stage checkpoint's `{"model": ...}` for `llama_proj.*`. Keys the seed drops or never reads (BERT's word/position
    /// embeddings and `position_ids`, the text FFN `intermediate`/`output`, `Qformer.cls.*`, the optimizer, the language
    /// model's buffers) are ignored; a key this model needs that a file lacks, or a shape that differs, is an error
    /// (the seed would silently keep its initial weights).
    /// </summary>
    public void LoadSeedCheckpoints(string evaPath, string blip2Path, string stagePath)
    {
        Using(TorchCheckpoint.LoadStateDict(evaPath), eva =>
            LoadPart(visual_encoder, visual_encoder.AdaptCheckpoint(eva), "", evaPath, strict: true));
        Using(TorchCheckpoint.LoadStateDict(blip2Path, key: "model"), blip2 =>
        {
            LoadPart(ln_vision, blip2, "ln_vision", blip2Path, strict: false);
            LoadPart(Qformer, blip2, "Qformer", blip2Path, strict: false);
            if (!blip2.TryGetValue("query_tokens", out var queries) || !queries.shape.SequenceEqual(query_tokens.shape))
                throw new XrayVLException($"{blip2Path}: needs query_tokens of shape ({string.Join(", ", query_tokens.shape)})"
                    + (queries is null ? "; it has none" : $", it has ({string.Join(", ", queries.shape)})"));
            using (torch.no_grad()) query_tokens.copy_(queries);
        });
        Using(TorchCheckpoint.LoadStateDict(stagePath, key: "model"), stage =>
            LoadPart(llama_proj, stage, "llama_proj", stagePath, strict: false));
    }

    /// <summary>Runs <paramref name="use"/> on a loaded state dict, then disposes its tensors.</summary>
    private static void Using(Dictionary<string, Tensor> weights, Action<Dictionary<string, Tensor>> use)
    {
        try
        {
            use(weights);
        }
        finally
        {
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    /// <summary>Copies the part's keys (under <paramref name="prefix"/>); keys of other parts and ones the seed ignores are skipped.</summary>
    private static void LoadPart(nn.Module part, Dictionary<string, Tensor> weights, string prefix, string path, bool strict)
    {
        var report = ModuleWeights.LoadInto(part, weights, prefix, strict: strict);
        if (report.Missing.Count > 0 || report.ShapeMismatches.Count > 0)
            throw new XrayVLException($"{path} does not fit XrayGPT's {(prefix.Length > 0 ? prefix : "visual_encoder")}: "
                + ModuleWeights.Describe(report with { Unexpected = [] }));
    }
}
