using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// EVA ViT-g/14 as BLIP-2, MiniGPT-4 / XrayGPT and MiniGPT-v2 / MiniGPT-Med build it (their `eva_vit.py`), with its config.
/// Defaults are the published ViT-g at 224 px; the seeds' checkpoint `eva_vit_g.pth` holds only weights, so the sizes
/// come from here or from the importing model's config.
/// </summary>
public sealed record EvaVisionConfig
{
    public string ModelType { get; init; } = "eva_vit_g";
    /// <summary>BLIP-2 / XrayGPT run it at 224 px; MiniGPT-v2 at 448 (positions interpolated on load).</summary>
    public int ImageSize { get; init; } = 224;
    public int PatchSize { get; init; } = 14;
    public int NumChannels { get; init; } = 3;
    /// <summary>embed_dim of ViT-g.</summary>
    public int HiddenSize { get; init; } = 1408;
    /// <summary>ViT-g has 40 blocks; BLIP-2 builds 39 (the last one is dropped; its output is used without a final norm).</summary>
    public int NumHiddenLayers { get; init; } = 39;
    public int NumAttentionHeads { get; init; } = 16;
    /// <summary>MLP width = int(hidden · ratio), Python's truncation: 1408 · 4.3637 → 6144.</summary>
    public double MlpRatio { get; init; } = 4.3637;
    public double LayerNormEps { get; init; } = 1e-6;

    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    [JsonIgnore] public int NumTokens => GridSize * GridSize + 1;
    /// <summary>The MLP width when given outright (a composed config's intermediate_size); null: from <see cref="MlpRatio"/>.</summary>
    public int? MlpHiddenSize { get; init; }
    [JsonIgnore] public int IntermediateSize => MlpHiddenSize ?? (int)(HiddenSize * MlpRatio);

    public EvaVisionConfig Validate()
    {
        if (ModelType != "eva_vit_g") throw new XrayVLException($"EVA vision model_type '{ModelType}' is not supported (eva_vit_g)");
        if (ImageSize <= 0 || PatchSize <= 0 || ImageSize % PatchSize != 0)
            throw new XrayVLException($"EVA image_size {ImageSize} must be a positive multiple of patch_size {PatchSize}");
        if (HiddenSize <= 0 || NumHiddenLayers <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
            throw new XrayVLException($"EVA hidden_size {HiddenSize} must be a positive multiple of num_attention_heads {NumAttentionHeads}");
        if (!(MlpRatio > 0) || IntermediateSize <= 0) throw new XrayVLException($"EVA mlp_ratio {MlpRatio} must be positive");
        return this;
    }
}

/// <summary>
/// EVA ViT-g/14 with the checkpoint's own key names: `cls_token` (1, 1, D), `pos_embed` (1, 1 + G², D),
/// `patch_embed.proj.{weight,bias}`, `blocks.{i}.{norm1, attn.{q_bias, v_bias, qkv.weight, proj}, norm2, mlp.{fc1, fc2}}`.
/// Pre-norm blocks without layer scale or relative position bias; the output is the last block's, with no final norm
/// (BLIP-2 applies its own `ln_vision` after it). Pixels (B, 3, S, S) → tokens (B, 1 + G², D), CLS first.
/// </summary>
public sealed class EvaVisionTransformer : nn.Module<Tensor, Tensor>
{
    private readonly Parameter cls_token;
    private readonly Parameter pos_embed;
    private readonly EvaPatchEmbed patch_embed;
    private readonly ModuleList<EvaBlock> blocks;

    public EvaVisionTransformer(EvaVisionConfig config, Device? device = null) : base("EvaVisionTransformer")
    {
        Config = config.Validate();
        cls_token = new Parameter(torch.zeros(1, 1, config.HiddenSize, device: device));
        pos_embed = new Parameter(torch.zeros(1, config.NumTokens, config.HiddenSize, device: device));
        patch_embed = new EvaPatchEmbed(config, device);
        blocks = new ModuleList<EvaBlock>();
        for (int i = 0; i < config.NumHiddenLayers; i++) blocks.Add(new EvaBlock(config, device));
        RegisterComponents();
    }

    public EvaVisionConfig Config { get; }

    /// <summary>(B, 3, S, S) → (B, 1 + G², D): the last block's output.</summary>
    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        if (pixels.dim() != 4 || pixels.shape[2] != Config.ImageSize || pixels.shape[3] != Config.ImageSize)
            throw new XrayVLException($"EVA expects pixels (B, {Config.NumChannels}, {Config.ImageSize}, {Config.ImageSize}), got ({string.Join(", ", pixels.shape)})");
        var x = patch_embed.call(pixels.to(cls_token.dtype)); // (B, G², D), grid row by row
        var cls = cls_token.expand(x.shape[0], 1, x.shape[2]); // (B, 1, D)
        x = torch.cat([cls, x], 1) + pos_embed; // (B, 1 + G², D)
        foreach (var block in blocks) x = block.call(x);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Prepares an EVA checkpoint for this encoder: a `pos_embed` saved for another grid (e.g. 16×16 at 224 px loaded at
    /// 448 px) is resized bicubically (align_corners false) over the grid, the CLS row kept, as the seeds do at load time.
    /// Other keys pass through unchanged; the returned dictionary owns the resized tensor (the original is disposed).
    /// </summary>
    public Dictionary<string, Tensor> AdaptCheckpoint(Dictionary<string, Tensor> weights, string prefix = "")
    {
        string key = prefix + "pos_embed";
        if (weights.TryGetValue(key, out var saved) && saved.shape[1] != Config.NumTokens)
        {
            weights[key] = InterpolatePositionEmbedding(saved, Config.GridSize);
            saved.Dispose();
        }
        return weights;
    }

    /// <summary>(1, 1 + g², D) → (1, 1 + newGrid², D): bicubic over the g×g grid in fp32, CLS row kept.</summary>
    public static Tensor InterpolatePositionEmbedding(Tensor posEmbed, int newGrid)
    {
        using var scope = NewDisposeScope();
        if (posEmbed.dim() != 3 || posEmbed.shape[0] != 1)
            throw new XrayVLException($"EVA pos_embed of shape ({string.Join(", ", posEmbed.shape)}) is not (1, 1 + g², D)");
        return ClipVisionEncoder.InterpolatePositionEmbedding(posEmbed.squeeze(0), newGrid).unsqueeze(0).MoveToOuterDisposeScope();
    }
}

/// <summary>Conv2d(C, D, P, stride P) with bias, flattened to tokens. (B, C, S, S) → (B, G², D)</summary>
public sealed class EvaPatchEmbed : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d proj;

    public EvaPatchEmbed(EvaVisionConfig config, Device? device) : base("EvaPatchEmbed")
    {
        proj = nn.Conv2d(config.NumChannels, config.HiddenSize, config.PatchSize, stride: config.PatchSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        return proj.call(pixels).flatten(2).transpose(1, 2).MoveToOuterDisposeScope(); // (B, D, G, G) → (B, G², D)
    }
}

/// <summary>Pre-norm block, no layer scale: x + attn(norm1(x)), then x + mlp(norm2(x)). (B, T, D) → (B, T, D)</summary>
public sealed class EvaBlock : nn.Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly EvaAttention attn;
    private readonly LayerNorm norm2;
    private readonly EvaMlp mlp;

    public EvaBlock(EvaVisionConfig config, Device? device) : base("EvaBlock")
    {
        norm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        attn = new EvaAttention(config, device);
        norm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device);
        mlp = new EvaMlp(config, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + attn.call(norm1.call(x));
        h = h + mlp.call(norm2.call(h));
        return h.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Multi-head self-attention with one fused `qkv` matrix without bias and separate `q_bias` / `v_bias`: the qkv bias is
/// cat(q_bias, 0, v_bias) — keys get none. q is scaled by head_dim^-0.5 before q·kᵀ.
/// </summary>
public sealed class EvaAttention : nn.Module<Tensor, Tensor>
{
    private readonly Linear qkv;
    private readonly Parameter q_bias;
    private readonly Parameter v_bias;
    private readonly Linear proj;
    private readonly int heads;

    public EvaAttention(EvaVisionConfig config, Device? device) : base("EvaAttention")
    {
        heads = config.NumAttentionHeads;
        qkv = nn.Linear(config.HiddenSize, 3 * config.HiddenSize, hasBias: false, device: device);
        q_bias = new Parameter(torch.zeros(config.HiddenSize, device: device));
        v_bias = new Parameter(torch.zeros(config.HiddenSize, device: device));
        proj = nn.Linear(config.HiddenSize, config.HiddenSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], t = x.shape[1], d = x.shape[2], hd = d / heads;
        var bias = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias]); // (3D)
        var fused = nn.functional.linear(x, qkv.weight!, bias).reshape(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4); // (3, B, H, T, hd)
        using Scalar scale = Math.Pow(hd, -0.5);   // held until the multiply returns (an implicit temporary can be finalized mid-call)
        var q = fused[0] * scale;
        var k = fused[1];
        var v = fused[2];
        var weights = q.matmul(k.transpose(-2, -1)).softmax(-1); // (B, H, T, T)
        var o = weights.matmul(v).transpose(1, 2).reshape(b, t, d); // (B, T, D)
        return proj.call(o).MoveToOuterDisposeScope();
    }
}

/// <summary>fc1 → exact (erf) GELU → fc2, hidden width int(D · mlp_ratio).</summary>
public sealed class EvaMlp : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly Linear fc2;

    public EvaMlp(EvaVisionConfig config, Device? device) : base("EvaMlp")
    {
        fc1 = nn.Linear(config.HiddenSize, config.IntermediateSize, device: device);
        fc2 = nn.Linear(config.IntermediateSize, config.HiddenSize, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return fc2.call(nn.functional.gelu(fc1.call(x))).MoveToOuterDisposeScope();
    }
}
