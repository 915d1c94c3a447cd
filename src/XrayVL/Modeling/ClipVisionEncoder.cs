using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// A ViT whose state dict uses Hugging Face CLIPVisionModel's names, so a CLIP-like tower's weights load unchanged:
/// `vision_model.embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}`,
/// `vision_model.pre_layrnorm.*` (HF's spelling), `vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj,
/// layer_norm2, mlp.fc1, mlp.fc2}.*`, `vision_model.post_layernorm.*`. Pre-norm blocks; CLS token first, then the patch
/// grid row by row. post_layernorm only touches the pooled CLS (<see cref="Pooled"/>): the token features LLaVA uses are
/// raw hidden states.
/// </summary>
public sealed class ClipVisionEncoder : VisionEncoder
{
    private readonly ClipVisionTransformer vision_model;

    public ClipVisionEncoder(VisionConfig config, int featureLayer = -1, string selectStrategy = "default", Device? device = null)
        : base("ClipVisionEncoder", config, featureLayer, selectStrategy, config.NumHiddenLayers + 1)
    {
        vision_model = new ClipVisionTransformer(config, device);
        RegisterComponents();
        // A model whose every weight is about to be read from a file skips the random draw (minutes at 7B).
        if (!Layers.InitialisationSkipped) InitializeWeights();
    }

    public int GridSize => Config.ImageSize / Config.PatchSize;
    public override int OutputDim => Config.HiddenSize;
    public override int NumTokens => GridSize * GridSize + (SelectStrategy == "full" ? 1 : 0);
    public override int PooledDim => Config.HiddenSize;

    /// <summary>The encoder blocks in order (layer i here produces hidden_states[i + 1]).</summary>
    public IReadOnlyList<ClipEncoderLayer> EncoderLayers => vision_model.Layers;

    /// <summary>hidden_states[0]: patch + class embeddings plus positions, after pre_layrnorm. (B, 1 + G², D)</summary>
    public Tensor Embed(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var x = PreparePixels(pixels, vision_model.Dtype);
        return vision_model.pre_layrnorm.call(vision_model.embeddings.call(x)).MoveToOuterDisposeScope();
    }

    /// <summary>Selected hidden state, CLS dropped for "default". (B, N, D)</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var h = Embed(pixels); // (B, 1 + G², D)
        for (int i = 0; i < HiddenStateIndex; i++) h = vision_model.Layers[i].call(h);
        if (SelectStrategy == "default") h = h.narrow(1, 1, h.shape[1] - 1); // (B, G², D)
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>All L + 1 hidden states as HF's output_hidden_states=True returns them (runs every layer).</summary>
    public Tensor[] HiddenStates(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var states = new List<Tensor> { Embed(pixels) };
        foreach (var layer in vision_model.Layers) states.Add(layer.call(states[^1]));
        foreach (var s in states) s.MoveToOuterDisposeScope();
        return [.. states];
    }

    /// <summary>HF's pooler_output: post_layernorm of the last layer's CLS token. (B, D)</summary>
    public override Tensor Pooled(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var h = Embed(pixels);
        foreach (var layer in vision_model.Layers) h = layer.call(h);
        return vision_model.post_layernorm.call(h.select(1, 0)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Resizes a checkpoint's position table (1 + g², D) to another grid (1 + newGrid², D) by bicubic interpolation over
    /// the g×g grid (CLS row kept), for loading a tower trained at a different image size.
    /// </summary>
    public static Tensor InterpolatePositionEmbedding(Tensor weight, int newGrid)
    {
        using var scope = NewDisposeScope();
        long d = weight.shape[1];
        long g = (long)Math.Round(Math.Sqrt(weight.shape[0] - 1));
        if (weight.dim() != 2 || g * g + 1 != weight.shape[0])
            throw new XrayVLException($"position embedding of shape ({string.Join(", ", weight.shape)}) is not (1 + g², D)");
        if (newGrid <= 0) throw new XrayVLException($"position grid size must be positive, got {newGrid}");
        if (newGrid == g) return weight.clone().MoveToOuterDisposeScope();
        var cls = weight.narrow(0, 0, 1); // (1, D)
        // upcast: bicubic in bf16 loses precision and is not supported on every device.
        var grid = weight.narrow(0, 1, g * g).to(ScalarType.Float32).reshape(1, g, g, d).permute(0, 3, 1, 2); // (1, D, g, g)
        var resized = nn.functional.interpolate(grid, [newGrid, newGrid], mode: InterpolationMode.Bicubic, align_corners: false);
        var rows = resized.permute(0, 2, 3, 1).reshape(newGrid * newGrid, d).to(weight.dtype); // (newGrid², D)
        return torch.cat([cls, rows], 0).MoveToOuterDisposeScope();
    }

    public override void InitializeWeights(Generator? generator = null)
    {
        // ViT-style: truncated normal (std 0.02, cut at 2 std) for matrices, patch kernel, positions and the CLS vector;
        // zero biases; LayerNorm weight 1, bias 0.
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (p.dim() >= 2 || name.EndsWith("class_embedding")) Layers.TruncatedNormal_(p, std: 0.02, low: -0.04, high: 0.04, generator);
            else if (name.EndsWith(".bias")) p.zero_();
            else if (name.Contains("norm")) p.fill_(1.0);
        }
    }
}

/// <summary>HF's CLIPVisionTransformer: the `vision_model.*` level of the state dict.</summary>
public sealed class ClipVisionTransformer : nn.Module
{
    internal readonly ClipVisionEmbeddings embeddings;
    internal readonly LayerNorm pre_layrnorm;
    private readonly ClipEncoder encoder;
    internal readonly LayerNorm post_layernorm;

    public ClipVisionTransformer(VisionConfig config, Device? device) : base("ClipVisionTransformer")
    {
        embeddings = new ClipVisionEmbeddings(config, device);
        pre_layrnorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        encoder = new ClipEncoder(config, device);
        post_layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        RegisterComponents();
    }

    internal IReadOnlyList<ClipEncoderLayer> Layers => encoder.Layers;
    internal ScalarType Dtype => embeddings.Dtype;
}

/// <summary>Patch conv (no bias) + learned CLS vector + learned absolute positions.</summary>
public sealed class ClipVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d patch_embedding;
    private readonly Parameter class_embedding;
    private readonly Embedding position_embedding;

    public ClipVisionEmbeddings(VisionConfig config, Device? device) : base("ClipVisionEmbeddings")
    {
        int grid = config.ImageSize / config.PatchSize;
        patch_embedding = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize,
            bias: false, device: device);
        class_embedding = new Parameter(torch.empty(config.HiddenSize, device: device));
        position_embedding = nn.Embedding(grid * grid + 1, config.HiddenSize, device: device);
        RegisterComponents();
    }

    internal ScalarType Dtype => class_embedding.dtype;

    /// <summary>(B, C, S, S) → (B, 1 + G², D)</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        long b = pixels.shape[0];
        var patches = patch_embedding.call(pixels).flatten(2).transpose(1, 2); // (B, G², D), row-major over the grid
        var cls = class_embedding.expand(b, 1, class_embedding.shape[0]); // (B, 1, D)
        var x = torch.cat([cls, patches], 1) + position_embedding.weight!; // (B, 1 + G², D)
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>HF's CLIPEncoder: holds `layers`.</summary>
public sealed class ClipEncoder : nn.Module
{
    private readonly ModuleList<ClipEncoderLayer> layers;

    public ClipEncoder(VisionConfig config, Device? device) : base("ClipEncoder")
    {
        layers = new ModuleList<ClipEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new ClipEncoderLayer(config, device));
        Layers = new System.Collections.ObjectModel.ReadOnlyCollection<ClipEncoderLayer>(layers);
        RegisterComponents();
    }

    internal IReadOnlyList<ClipEncoderLayer> Layers { get; }
}

/// <summary>Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)). (B, T, D) → (B, T, D)</summary>
public sealed class ClipEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm layer_norm1;
    private readonly ClipAttention self_attn;
    private readonly LayerNorm layer_norm2;
    private readonly ClipMlp mlp;

    public ClipEncoderLayer(VisionConfig config, Device? device) : base("ClipEncoderLayer")
    {
        layer_norm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        self_attn = new ClipAttention(config, device);
        layer_norm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        mlp = new ClipMlp(config, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.call(layer_norm1.call(x));
        h = h + mlp.call(layer_norm2.call(h));
        return h.MoveToOuterDisposeScope();
    }
}

/// <summary>Bidirectional multi-head self-attention with biased q/k/v/out projections.</summary>
public sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> q_proj;
    private readonly nn.Module<Tensor, Tensor> k_proj;
    private readonly nn.Module<Tensor, Tensor> v_proj;
    private readonly nn.Module<Tensor, Tensor> out_proj;
    private readonly int numHeads;
    private readonly int headDim;

    public ClipAttention(VisionConfig config, Device? device) : base("ClipAttention")
    {
        int d = config.HiddenSize;
        q_proj = Layers.Linear(d, d, true, device);
        k_proj = Layers.Linear(d, d, true, device);
        v_proj = Layers.Linear(d, d, true, device);
        out_proj = Layers.Linear(d, d, true, device);
        numHeads = config.NumAttentionHeads;
        headDim = d / numHeads;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1];
        Tensor Heads(Tensor y) => y.view(b, t, numHeads, headDim).transpose(1, 2); // (B, H, T, hd)
        // softmax(q kᵀ / √hd) v; libtorch's CPU kernel accumulates bf16 inputs in fp32.
        var o = nn.functional.scaled_dot_product_attention(Heads(q_proj.call(x)), Heads(k_proj.call(x)), Heads(v_proj.call(x)));
        o = o.transpose(1, 2).reshape(b, t, numHeads * headDim); // (B, T, D)
        return out_proj.call(o).MoveToOuterDisposeScope();
    }
}

/// <summary>fc1 → activation ("quick_gelu": x·σ(1.702x), OpenAI CLIP; "gelu": exact erf GELU) → fc2.</summary>
public sealed class ClipMlp : nn.Module<Tensor, Tensor>
{
    // quick_gelu's factor, held for the process: an implicit Scalar temporary can be finalized while libtorch reads it.
    private static readonly Scalar QuickGeluScale = 1.702;
    private readonly nn.Module<Tensor, Tensor> fc1;
    private readonly nn.Module<Tensor, Tensor> fc2;
    private readonly string activation;

    public ClipMlp(VisionConfig config, Device? device) : base("ClipMlp")
    {
        fc1 = Layers.Linear(config.HiddenSize, config.IntermediateSize, true, device);
        fc2 = Layers.Linear(config.IntermediateSize, config.HiddenSize, true, device);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = fc1.call(x); // (B, T, I)
        h = activation switch
        {
            "quick_gelu" => h * torch.sigmoid(QuickGeluScale * h),
            "gelu" => nn.functional.gelu(h),
            _ => throw new XrayVLException($"hidden_act '{activation}' is not supported (gelu, quick_gelu)"),
        };
        return fc2.call(h).MoveToOuterDisposeScope();
    }
}
