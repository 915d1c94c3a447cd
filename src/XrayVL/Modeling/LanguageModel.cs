using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

// The LLaMA-style decoder, read top to bottom:
//   RmsNorm → RotaryEmbedding → Attention (grouped-query, KV cache) → SwiGluMlp → DecoderLayer → DecoderStack → LanguageModel.
// Field names are the Hugging Face LlamaForCausalLM / Qwen2ForCausalLM state-dict keys
// (`model.layers.0.self_attn.q_proj.weight`, ...), so published checkpoints map 1:1.
// Shapes: B batch, T new positions, S = past + T positions attended to, D hidden, H query heads, Hkv key/value heads,
// G = H / Hkv queries per key/value head, hd head size, V vocabulary.

/// <summary>y = x / sqrt(mean(x²) + eps) * weight, as LLaMA's RMSNorm.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    // eps and add's alpha as Scalars the module holds. `tensor + double` (and pow(2)) make temporary native Scalars that
    // only the finalizer frees, and one that is collected while libtorch reads it gives a garbage value (seen once in the
    // tests as libtorch's "toFloat" overflow check failing here); fields stay reachable for the whole call.
    private readonly Scalar eps;
    private readonly Scalar one = 1.0;

    public RmsNorm(long size, double eps) : base(nameof(RmsNorm))
    {
        weight = new Parameter(torch.ones(size));
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // upcast: the mean of squares in bf16 loses precision (8-bit mantissa); normalise in float32, then cast back.
        var x32 = x.to(ScalarType.Float32);
        var variance = x32.square().mean([-1], keepdim: true);        // (..., 1); square, not pow(2): no temporary Scalar
        var normed = (x32 * torch.rsqrt(variance.add(eps, one))).to(x.dtype);
        return (weight * normed).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Rotary position embeddings, Hugging Face "rotate_half" convention: the head is split into halves (x1, x2), and the
/// pair (x1[i], x2[i]) is rotated by the angle position · invFreq[i], invFreq[i] = theta^(−2i/hd) unless `rope_scaling`
/// stretches it. Nothing is stored: the tables are computed per forward from the positions (cheap), so they never enter
/// the state dict and never lose precision in a bf16 copy.
/// </summary>
public static class RotaryEmbedding
{
    /// <summary>cos and sin tables (B, 1, T, hd) in <paramref name="dtype"/> for positions (B, T), plain RoPE.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int headSize, double theta, ScalarType dtype) =>
        CosSin(positions, headSize, theta, null, 0, dtype);

    /// <summary>cos and sin tables (B, 1, T, hd) for positions (B, T) under the config's RoPE settings.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, LanguageModelConfig config, ScalarType dtype) =>
        CosSin(positions, config.HeadSize, config.RopeTheta, config.RopeScaling, config.MaxPositionEmbeddings, dtype);

    private static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int headSize, double theta, RopeScaling? scaling,
        int maxPositionEmbeddings, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        // Dynamic NTK rescales by the longest sequence of this forward (HF: max position + 1).
        long sequenceLength = scaling?.RopeType == "dynamic" && positions.numel() > 0 ? positions.max().item<long>() + 1 : 0;
        var (inverseFrequencies, attentionFactor) = InverseFrequencies(headSize, theta, scaling, maxPositionEmbeddings, sequenceLength);
        var invFreq = torch.tensor(inverseFrequencies, device: positions.device);          // (hd/2)
        // angles in float32 as HF does: exact enough for positions far beyond any context used here.
        var angles = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;             // (B, T, hd/2)
        var doubled = torch.cat([angles, angles], dim: -1).unsqueeze(1);                   // (B, 1, T, hd)
        var cos = doubled.cos();
        var sin = doubled.sin();
        if (attentionFactor != 1.0)
        {
            using Scalar factor = attentionFactor;   // held until the calls return: a temporary is freed by its finalizer
            (cos, sin) = (cos * factor, sin * factor);
        }
        return (cos.to(dtype).MoveToOuterDisposeScope(), sin.to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The hd/2 inverse frequencies and the factor cos/sin are scaled by, per transformers' `modeling_rope_utils`:
    /// linear divides every frequency by the factor; dynamic (NTK) raises the base once the sequence passes
    /// max_position_embeddings; llama3 divides long wavelengths by the factor, keeps short ones and blends between;
    /// yarn blends interpolated and original frequencies over a ramp of dimensions and scales cos/sin by 0.1·ln(factor) + 1.
    /// <paramref name="sequenceLength"/> is used by dynamic only.
    /// </summary>
    public static (float[] InverseFrequencies, double AttentionFactor) InverseFrequencies(int headSize, double theta,
        RopeScaling? scaling, int maxPositionEmbeddings, long sequenceLength)
    {
        int half = headSize / 2;
        double[] Plain(double b) => [.. Enumerable.Range(0, half).Select(i => 1.0 / Math.Pow(b, 2.0 * i / headSize))];
        double[] freq;
        double attention = 1.0;
        double factor = scaling?.Factor ?? 1.0;
        switch (scaling?.RopeType ?? "default")
        {
            case "default":
                freq = Plain(theta);
                break;
            case "linear":
                freq = [.. Plain(theta).Select(f => f / factor)];
                break;
            case "dynamic":
                double b = theta;
                if (sequenceLength > maxPositionEmbeddings)
                    b = theta * Math.Pow(factor * sequenceLength / maxPositionEmbeddings - (factor - 1), headSize / (headSize - 2.0));
                freq = Plain(b);
                break;
            case "llama3":
            {
                double old = scaling!.OriginalMaxPositionEmbeddings!.Value, low = scaling.LowFreqFactor!.Value, high = scaling.HighFreqFactor!.Value;
                double lowWavelength = old / low, highWavelength = old / high;
                freq = [.. Plain(theta).Select(f =>
                {
                    double wavelength = 2 * Math.PI / f;
                    if (wavelength < highWavelength) return f;                      // high frequencies: kept
                    if (wavelength > lowWavelength) return f / factor;               // low frequencies: interpolated
                    double smooth = (old / wavelength - low) / (high - low);          // in between: blended
                    return (1 - smooth) * f / factor + smooth * f;
                })];
                break;
            }
            case "yarn":
            {
                double fast = scaling!.BetaFast ?? 32, slow = scaling.BetaSlow ?? 1;
                int context = scaling.OriginalMaxPositionEmbeddings ?? maxPositionEmbeddings;
                // The dimension whose wavelength completes `rotations` turns over the context.
                double CorrectionDim(double rotations) => headSize * Math.Log(context / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
                double lowDim = Math.Max(Math.Floor(CorrectionDim(fast)), 0), highDim = Math.Min(Math.Ceiling(CorrectionDim(slow)), headSize - 1);
                if (lowDim == highDim) highDim += 0.001;                              // no zero-width ramp
                var original = Plain(theta);
                freq = new double[half];
                for (int i = 0; i < half; i++)
                {
                    double ramp = Math.Clamp((i - lowDim) / (highDim - lowDim), 0, 1);
                    double keep = 1 - ramp;                                           // 1: extrapolate (original), 0: interpolate
                    freq[i] = original[i] / factor * (1 - keep) + original[i] * keep;
                }
                attention = scaling.AttentionFactor ?? 0.1 * Math.Log(factor) + 1.0;
                break;
            }
            default:
                throw new XrayVLException($"rope_scaling type '{scaling!.RopeType}' is not supported (linear, dynamic, llama3, yarn)");
        }
        return ([.. freq.Select(f => (float)f)], attention);
    }

    /// <summary>x (B, h, T, hd) rotated: x·cos + rotate_half(x)·sin, where rotate_half(x1, x2) = (−x2, x1).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var x1 = x.narrow(-1, 0, half);
        var x2 = x.narrow(-1, half, half);
        var rotated = torch.cat([x2.neg(), x1], dim: -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Token embeddings: row i of `weight` (V, D) for token i. (TorchSharp's nn.Embedding builds and initialises its matrix
/// on the CPU whatever the target device — half a gigabyte for Qwen2-0.5B — and hands out a new handle on every access.)
/// </summary>
public sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weight;

    public TokenEmbedding(long vocabSize, long hiddenSize) : base(nameof(TokenEmbedding))
    {
        weight = new Parameter(torch.empty(vocabSize, hiddenSize));
        RegisterComponents();
    }

    public Parameter Weight => weight;

    /// <summary>(...) int64 ids → (..., D).</summary>
    public override Tensor forward(Tensor ids) =>
        weight.index_select(0, ids.reshape(-1)).view([.. ids.shape, weight.shape[1]]);
}

/// <summary>Grouped-query self-attention with rotary positions; appends its keys/values to a <see cref="KvCache"/> when given.</summary>
public sealed class Attention : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> q_proj;
    private readonly nn.Module<Tensor, Tensor> k_proj;
    private readonly nn.Module<Tensor, Tensor> v_proj;
    private readonly nn.Module<Tensor, Tensor> o_proj;
    private readonly int heads, kvHeads, headSize;

    public Attention(LanguageModelConfig c) : base(nameof(Attention))
    {
        (heads, kvHeads, headSize) = (c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadSize);
        var (qkvBias, outputBias) = c.ProjectionBiases;
        q_proj = Layers.Linear(c.HiddenSize, heads * headSize, qkvBias);
        k_proj = Layers.Linear(c.HiddenSize, kvHeads * headSize, qkvBias);
        v_proj = Layers.Linear(c.HiddenSize, kvHeads * headSize, qkvBias);
        o_proj = Layers.Linear(heads * headSize, c.HiddenSize, outputBias);
        RegisterComponents();
    }

    /// <param name="x">(B, T, D)</param>
    /// <param name="cos">(B, 1, T, hd) rotary table; <paramref name="sin"/> likewise.</param>
    /// <param name="allowed">(B, 1, T, S) true where query t may attend to key s (causal and not padding).</param>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor allowed, KvCache? cache, int layerIndex)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        var q = q_proj.call(x).view(batch, length, heads, headSize).transpose(1, 2);      // (B, H, T, hd)
        var k = k_proj.call(x).view(batch, length, kvHeads, headSize).transpose(1, 2);    // (B, Hkv, T, hd)
        var v = v_proj.call(x).view(batch, length, kvHeads, headSize).transpose(1, 2);    // (B, Hkv, T, hd)
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k, v);                        // (B, Hkv, S, hd)

        // GQA without copying K/V: query head h uses kv head h / G (HF repeat_kv order), so the G query heads of one
        // kv head are folded into its query rows: (B, H, T, hd) → (B, Hkv, G·T, hd), row g·T + t. The mask rows repeat
        // in the same order.
        int groups = heads / kvHeads;
        var groupedQ = q.reshape(batch, kvHeads, groups * length, headSize);              // (B, Hkv, G·T, hd)
        var groupedMask = groups == 1 || length == 1 ? allowed : allowed.repeat(1, 1, groups, 1); // (B, 1, G·T | 1, S)
        // Fully masked rows (left padding) come back as zeros; the softmax accumulates in float32 for bf16 inputs.
        var attended = nn.functional.scaled_dot_product_attention(groupedQ, k, v, groupedMask); // (B, Hkv, G·T, hd)
        var merged = attended.view(batch, heads, length, headSize).transpose(1, 2)
            .reshape(batch, length, heads * headSize);                                     // (B, T, H·hd)
        return o_proj.call(merged).MoveToOuterDisposeScope();                              // (B, T, D)
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) · up(x)).</summary>
public sealed class SwiGluMlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> gate_proj;
    private readonly nn.Module<Tensor, Tensor> up_proj;
    private readonly nn.Module<Tensor, Tensor> down_proj;

    public SwiGluMlp(LanguageModelConfig c) : base(nameof(SwiGluMlp))
    {
        gate_proj = Layers.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
        up_proj = Layers.Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias);
        down_proj = Layers.Linear(c.IntermediateSize, c.HiddenSize, c.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gated = nn.functional.silu(gate_proj.call(x)) * up_proj.call(x);              // (B, T, I)
        return down_proj.call(gated).MoveToOuterDisposeScope();                            // (B, T, D)
    }
}

/// <summary>Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)).</summary>
public sealed class DecoderLayer : nn.Module
{
    private readonly RmsNorm input_layernorm;
    private readonly Attention self_attn;
    private readonly RmsNorm post_attention_layernorm;
    private readonly SwiGluMlp mlp;

    public DecoderLayer(LanguageModelConfig c) : base(nameof(DecoderLayer))
    {
        input_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps);
        self_attn = new Attention(c);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps);
        mlp = new SwiGluMlp(c);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor allowed, KvCache? cache, int layerIndex)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.Forward(input_layernorm.call(x), cos, sin, allowed, cache, layerIndex);
        var y = h + mlp.call(post_attention_layernorm.call(h));
        return y.MoveToOuterDisposeScope();
    }
}

/// <summary>HF's `LlamaModel` (the `model.` prefix): embeddings, the layers and the final norm; turns a padding mask into
/// positions and an attention mask.</summary>
public sealed class DecoderStack : nn.Module
{
    private readonly TokenEmbedding embed_tokens;
    private readonly ModuleList<DecoderLayer> layers;
    private readonly RmsNorm norm;
    private readonly LanguageModelConfig config;
    // 0 and 1 as Scalars held for the process: `tensor.ne(0)` or `tensor - 1` convert the int to a temporary native
    // Scalar that only its finalizer frees, and one collected while libtorch reads it gives garbage positions.
    private static readonly Scalar Zero = 0, One = 1;

    public DecoderStack(LanguageModelConfig c) : base(nameof(DecoderStack))
    {
        config = c;
        embed_tokens = new TokenEmbedding(c.VocabSize, c.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new DecoderLayer(c)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>The (V, D) embedding matrix, which a tied output projection reuses.</summary>
    public Parameter EmbeddingWeight => embed_tokens.Weight;

    public Tensor Embed(Tensor inputIds) => embed_tokens.call(inputIds);

    /// <param name="x">(B, T, D) input embeddings.</param>
    /// <param name="attentionMask">(B, S) 1 = real token, 0 = padding, or null for no padding.</param>
    /// <returns>(B, T, D) final-normed hidden states.</returns>
    public Tensor Forward(Tensor x, Tensor? attentionMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        long past = cache?.Length ?? 0, total = past + length;
        var device = x.device;

        // Positions count real tokens only (cumsum − 1), so a left-padded row sees the same positions as alone.
        using Scalar first = past, end = total;   // held until the calls return, as Zero and One
        var keyIsReal = attentionMask?.ne(Zero) ?? torch.ones(batch, total, ScalarType.Bool, device);       // (B, S)
        var positions = attentionMask is null
            ? torch.arange(first, end, ScalarType.Int64, device).expand(batch, length)
            : keyIsReal.to(ScalarType.Int64).cumsum(1).sub(One).clamp_min(Zero).narrow(1, past, length);    // (B, T)
        var (cos, sin) = RotaryEmbedding.CosSin(positions, config, x.dtype);

        // Query t (absolute position past + t) may see key s when s <= past + t (causal) and s is a real token.
        var causal = torch.arange(end, device: device).unsqueeze(0)
            .le(torch.arange(first, end, device: device).unsqueeze(1));                                      // (T, S)
        var allowed = causal.unsqueeze(0).logical_and(keyIsReal.unsqueeze(1)).unsqueeze(1);                  // (B, 1, T, S)

        var h = x;
        for (int i = 0; i < layers.Count; i++) h = layers[i].Forward(h, cos, sin, allowed, cache, i);
        cache?.Advance((int)length);
        return norm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The causal language model (HF `LlamaForCausalLM` / `Qwen2ForCausalLM`): <see cref="DecoderStack"/> under `model.` and
/// the output projection `lm_head` (absent when the embeddings are tied; the projection then reuses embed_tokens' weight).
/// Runs in float32 or, after `model.to(ScalarType.BFloat16)`, in bfloat16 with float32 where bf16 loses precision
/// (RMSNorm statistics, attention softmax, logits).
/// </summary>
public sealed class LanguageModel : nn.Module
{
    private readonly DecoderStack model;
    private readonly nn.Module<Tensor, Tensor>? lm_head;

    public LanguageModelConfig Config { get; }

    public LanguageModel(LanguageModelConfig config) : base(nameof(LanguageModel))
    {
        Config = config.Validate();
        using (Layers.LanguageModelLayers())
        {
            model = new DecoderStack(config);
            lm_head = config.TieWordEmbeddings ? null : Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        }
        RegisterComponents();
        // A model whose every weight is about to be read from a file skips the random draw (minutes at 7B).
        if (!Layers.InitialisationSkipped) InitializeWeights();
    }

    /// <summary>
    /// HF's init: matrices (linears, embeddings) ~ N(0, initializer_range), biases 0, norm weights 1. A seeded
    /// <paramref name="generator"/> makes the weights reproducible whatever else draws from the global generator.
    /// Every parameter is reset: call it before attaching LoRA adapters.
    /// </summary>
    public void InitializeWeights(torch.Generator? generator = null)
    {
        using var noGrad = torch.no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (!p.is_floating_point()) continue;   // Q8_0 int8 weights (WeightFormats.CreateRandom) keep their draw
            if (p.dim() >= 2) p.normal_(0, Config.InitializerRange, generator);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else p.fill_(1.0);
        }
    }

    public ScalarType DType => model.EmbeddingWeight.dtype;
    public Device Device => model.EmbeddingWeight.device;

    /// <summary>(B, T) int64 token ids → (B, T, D) embeddings.</summary>
    public Tensor Embed(Tensor inputIds)
    {
        if (inputIds.numel() > 0)
            using (NewDisposeScope())
            {
                long low = inputIds.min().item<long>(), high = inputIds.max().item<long>();
                if (low < 0 || high >= Config.VocabSize)
                    throw new XrayVLException($"token id {(low < 0 ? low : high)} is outside the model's vocabulary (0..{Config.VocabSize - 1})");
            }
        return model.Embed(inputIds);
    }

    /// <summary>
    /// Final-normed hidden states (B, T, D) for input embeddings (B, T, D).
    /// <paramref name="attentionMask"/> (B, past + T): 1 = real token, 0 = padding (left padding for batched prompts).
    /// With a <paramref name="cache"/>, the new keys/values are appended and attention spans past + new.
    /// </summary>
    public Tensor ForwardHidden(Tensor inputsEmbeds, Tensor? attentionMask = null, KvCache? cache = null)
    {
        CheckInputs(inputsEmbeds, attentionMask, cache);
        using var scope = NewDisposeScope();
        return model.Forward(inputsEmbeds.to(DType), attentionMask, cache).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Float32 logits (B, T, V), or (B, 1, V) for the last position only when <paramref name="logitsForLastOnly"/>
    /// (prefill during generation: skips the vocabulary projection of every other position).
    /// </summary>
    public Tensor Forward(Tensor inputsEmbeds, Tensor? attentionMask = null, KvCache? cache = null, bool logitsForLastOnly = false)
    {
        using var scope = NewDisposeScope();
        var hidden = ForwardHidden(inputsEmbeds, attentionMask, cache);                    // (B, T, D)
        if (logitsForLastOnly) hidden = hidden.narrow(1, hidden.shape[1] - 1, 1);         // (B, 1, D)
        return Logits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>Hidden states (..., D) → float32 logits (..., V). The product runs in the model's dtype (as HF).</summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var logits = lm_head?.call(hidden) ?? (model.EmbeddingWeight.dtype == ScalarType.BFloat16 && Kernels.DecodeLinear.Applies(hidden, model.EmbeddingWeight)
            ? Kernels.DecodeLinear.Bf16(hidden, model.EmbeddingWeight, null)    // tied head at decode time: the bf16 kernel
            : nn.functional.linear(hidden, model.EmbeddingWeight));
        return logits.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>An empty cache for <paramref name="batch"/> rows and up to <paramref name="capacity"/> positions, in the model's dtype and device.</summary>
    public KvCache NewCache(int batch, int capacity) =>
        new(Config.NumHiddenLayers, batch, Config.NumKeyValueHeads, Config.HeadSize, capacity, DType, Device);

    private void CheckInputs(Tensor embeds, Tensor? attentionMask, KvCache? cache)
    {
        if (embeds.dim() != 3 || embeds.shape[2] != Config.HiddenSize)
            throw new XrayVLBugException($"language model input must be (batch, length, {Config.HiddenSize}) embeddings, got ({string.Join(", ", embeds.shape)})");
        long batch = embeds.shape[0], past = cache?.Length ?? 0;
        if (attentionMask is not null && (attentionMask.dim() != 2 || attentionMask.shape[0] != batch || attentionMask.shape[1] != past + embeds.shape[1]))
            throw new XrayVLBugException($"attention mask must be (batch {batch}, past {past} + new {embeds.shape[1]}), got ({string.Join(", ", attentionMask.shape)})");
        if (cache is not null && cache.Batch != batch)
            throw new XrayVLBugException($"KV cache holds {cache.Batch} rows but the input has {batch}");
    }

    /// <summary>
    /// Next-token cross-entropy: logits (B, T, V) at position t predict labels (B, T) at t + 1; labels equal to
    /// <see cref="Constants.IgnoreIndex"/> (prompt, padding) do not count. Mean over the counted tokens (0 when none).
    /// </summary>
    public static Tensor CausalLmLoss(Tensor logits, Tensor labels)
    {
        if (logits.dim() != 3 || labels.dim() != 2 || logits.shape[0] != labels.shape[0] || logits.shape[1] != labels.shape[1])
            throw new XrayVLBugException($"loss needs logits (B, T, V) and labels (B, T), got ({string.Join(", ", logits.shape)}) and ({string.Join(", ", labels.shape)})");
        if (logits.shape[1] < 2) throw new XrayVLBugException("loss needs sequences of at least 2 tokens");
        using var scope = NewDisposeScope();
        long length = logits.shape[1], vocab = logits.shape[2];
        var predicted = logits.narrow(1, 0, length - 1).reshape(-1, vocab).to(ScalarType.Float32);   // (B·(T−1), V)
        var targets = labels.narrow(1, 1, length - 1).reshape(-1).to(ScalarType.Int64);              // (B·(T−1))
        var total = nn.functional.cross_entropy(predicted, targets, ignore_index: Constants.IgnoreIndex, reduction: nn.Reduction.Sum);
        using Scalar ignored = Constants.IgnoreIndex, one = 1;   // held until the calls return (temporaries are freed by their finalizers)
        var counted = targets.ne(ignored).sum().clamp_min(one);
        return (total / counted).MoveToOuterDisposeScope();
    }

    /// <summary>The parameter count of a config, by formula (checked against instantiated models in the tests).</summary>
    public static long CountParameters(LanguageModelConfig c)
    {
        long d = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadSize, kv = (long)c.NumKeyValueHeads * c.HeadSize, i = c.IntermediateSize;
        var (qkvBias, outputBias) = c.ProjectionBiases;
        long attention = d * q + d * kv * 2 + q * d + (qkvBias ? q + 2 * kv : 0) + (outputBias ? d : 0);
        long mlp = 3 * d * i + (c.MlpBias ? 2 * i + d : 0);
        long perLayer = attention + mlp + 2 * d;                 // + input and post-attention norms
        long embeddings = (long)c.VocabSize * d;
        return embeddings + c.NumHiddenLayers * perLayer + d + (c.TieWordEmbeddings ? 0 : embeddings);
    }
}
