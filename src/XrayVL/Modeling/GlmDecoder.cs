using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

// ChatGLM-6B's decoder as SwissArmyTransformer (SAT, sat/model/official/chatglm_model.py) computes it, the language side of
// VisualGLM-6B / XrayGLM, read top to bottom:
//   GlmConfig → GlmRotary (2D rotary on half-heads) → GlmAttention → GlmMlp → GlmBlock (post-LN, α-scaled residuals)
//   → GlmTransformer → GlmDecoder (LM head, GLM inputs, greedy decoding with a KV cache) → XrayGlmLora (merge).
// Field names are SAT's state-dict keys below `transformer.` (`transformer.layers.0.attention.query_key_value.weight`,
// ...); the few keys SAT keeps elsewhere (the LM head in a mixin, XrayGLM's LoRA wrappers) are mapped in SatCheckpoint.
// Shapes: B batch, T new positions, S = past + T positions attended to, D hidden, H heads, hd head size, V vocabulary.

/// <summary>
/// ChatGLM's hyper-parameters under the names of SAT's model_config.json (snake_case), which is what XrayGLM and
/// VisualGLM checkpoints ship. Defaults are the real ChatGLM-6B; the special ids are its tokenizer's.
/// </summary>
public sealed record GlmConfig
{
    /// <summary>"chatglm": the only GLM flavour implemented (SAT's ChatGLMModel and the VisualGLM/XrayGLM models built on it).</summary>
    public string ModelType { get; init; } = "chatglm";
    public int NumLayers { get; init; } = 28;
    public int HiddenSize { get; init; } = 4096;
    public int NumAttentionHeads { get; init; } = 32;
    public int VocabSize { get; init; } = 130528;
    /// <summary>MLP width; SAT's default (null) is 4 · hidden.</summary>
    public int? InnerHiddenSize { get; init; }
    /// <summary>Longest sequence; SAT keeps a learned position table of this size that ChatGLM never reads.</summary>
    public int MaxSequenceLength { get; init; } = 2048;
    public double LayernormEpsilon { get; init; } = 1e-5;
    /// <summary>Only "post" is ChatGLM's order: LN before attention and MLP, whose outputs are the residual base (scaled by α).</summary>
    public string LayernormOrder { get; init; } = "post";
    /// <summary>`<sop>`: starts the answer; the position ids switch to the block numbering after it.</summary>
    public long BosTokenId { get; init; } = 130004;
    public long MaskTokenId { get; init; } = 130000;
    /// <summary>`[gMASK]`: the prompt's last token but one; the generated tokens all take its position.</summary>
    public long GmaskTokenId { get; init; } = 130001;
    /// <summary>`<eop>`: the end token XrayGLM's chat stops at (SAT's config does not name it).</summary>
    public long EopTokenId { get; init; } = 130005;
    /// <summary>ChatGLM's LM head is its own matrix, not the embeddings (SAT's ChatGLMFinalMixin).</summary>
    public bool TieWordEmbeddings { get; init; }

    [JsonIgnore] public int HeadSize => HiddenSize / NumAttentionHeads;
    [JsonIgnore] public int MlpSize => InnerHiddenSize ?? 4 * HiddenSize;

    public GlmConfig Validate()
    {
        if (ModelType != "chatglm") throw new XrayVLException($"GLM model_type '{ModelType}' is not supported (only 'chatglm')");
        if (LayernormOrder != "post") throw new XrayVLException($"ChatGLM needs layernorm_order 'post', got '{LayernormOrder}'");
        if (NumLayers <= 0 || HiddenSize <= 0 || NumAttentionHeads <= 0 || VocabSize <= 0 || MlpSize <= 0)
            throw new XrayVLException("GLM config needs positive num_layers, hidden_size, num_attention_heads, vocab_size and inner_hidden_size");
        // Rotary on half-heads with a rotate-half of its own: the head splits into 4 equal quarters.
        if (HiddenSize % NumAttentionHeads != 0 || HeadSize % 4 != 0)
            throw new XrayVLException($"GLM head size hidden_size / num_attention_heads = {HiddenSize}/{NumAttentionHeads} must be a whole multiple of 4");
        return this;
    }
}

/// <summary>
/// GLM's 2D rotary embeddings: each head's q and k are split into halves of hd/2; the first half is rotated by the token's
/// position, the second by its block position, each with an ordinary rotate-half rotary of dimension hd/2.
/// </summary>
public static class GlmRotary
{
    /// <summary>
    /// cos and sin (B, 1, T, hd/2) for positions (B, T). SAT builds them in float32 and then casts them to float16 (its
    /// ChatGLM passes precision=torch.half even for a float32 model); q·cos then runs in float32 on those rounded
    /// values. Reproduced: computed in float32, rounded through float16, returned in float32.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int rotaryDim)
    {
        using var scope = NewDisposeScope();
        // inv_freq = 1 / 10000^(arange(0, dim, 2) / dim), float32 throughout as SAT.
        using Scalar zero = 0, dim = rotaryDim, two = 2;   // held until the calls return (a temporary is freed by its finalizer)
        var exponents = torch.arange(zero, dim, two, ScalarType.Float32, positions.device) / dim;
        var invFreq = torch.tensor(10000.0f, device: positions.device).pow(exponents).reciprocal();                           // (dim/2)
        var angles = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq;               // (B, T, dim/2)
        var doubled = torch.cat([angles, angles], dim: -1).unsqueeze(1);                     // (B, 1, T, dim)
        var cos = doubled.cos().to(ScalarType.Float16).to(ScalarType.Float32);
        var sin = doubled.sin().to(ScalarType.Float16).to(ScalarType.Float32);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>x (B, H, T, dim) · cos + rotate_half(x) · sin, rotate_half(x1, x2) = (−x2, x1).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var rotated = torch.cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], dim: -1);
        // cos/sin are float32: a bf16 x is rotated in float32 and returned in its own dtype (a no-op for float32).
        return (x * cos + rotated * sin).to(x.dtype).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// ChatGLM self-attention: a fused query_key_value whose rows are interleaved per head ([h0: q k v][h1: q k v]…), 2D
/// rotary on half-heads, and SAT's (layer_id + 1) score scaling; the new keys/values go to a <see cref="KvCache"/> when given.
/// </summary>
public sealed class GlmAttention : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> query_key_value;
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly int heads, headSize;
    private static readonly Scalar One = 1.0, MaskedScore = 10000.0;   // held: see the comment in Forward

    public GlmAttention(GlmConfig c) : base(nameof(GlmAttention))
    {
        (heads, headSize) = (c.NumAttentionHeads, c.HeadSize);
        query_key_value = Layers.Linear(c.HiddenSize, 3L * c.HiddenSize);
        dense = Layers.Linear(c.HiddenSize, c.HiddenSize);
        RegisterComponents();
    }

    /// <param name="x">(B, T, D)</param>
    /// <param name="position">(cos, sin) (B, 1, T, hd/2) for the positions; <paramref name="block"/> likewise for the block positions.</param>
    /// <param name="mask">(B | 1, 1, T, S) float, 1 = may attend, 0 = may not; null = attend to everything (one-token decode).</param>
    public Tensor Forward(Tensor x, (Tensor Cos, Tensor Sin) position, (Tensor Cos, Tensor Sin) block, Tensor? mask, KvCache? cache, int layerIndex)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        // (B, T, 3D) viewed per head as (B, T, H, 3·hd), then split into q | k | v: the per-head interleaved layout.
        var mixed = query_key_value.call(x).view(batch, length, heads, 3 * headSize).permute(0, 2, 1, 3);   // (B, H, T, 3hd)
        var q = mixed.narrow(-1, 0, headSize);                                                              // (B, H, T, hd)
        var k = mixed.narrow(-1, headSize, headSize);
        var v = mixed.narrow(-1, 2 * headSize, headSize);
        q = RotateHalves(q, position, block);
        k = RotateHalves(k, position, block);
        if (cache is not null) (k, v) = cache.Append(layerIndex, k.contiguous(), v.contiguous());         // (B, H, S, hd)

        // SAT divides q by √hd·(layer_id + 1), masks, and multiplies the float32 scores back by (layer_id + 1) before the
        // softmax (a guard against fp16 overflow in deep layers); the same order is kept so float32 results agree bit for bit
        // as far as possible. Masked scores become s·0 − 10000, which the softmax turns into 0.
        // The numbers as Scalars held until the calls return: `tensor * double` makes a temporary native Scalar that only
        // its finalizer frees, and one collected while libtorch reads it gives a garbage factor.
        using Scalar coefficient = layerIndex + 1.0, divisor = Math.Sqrt(headSize) * (layerIndex + 1.0);
        var scores = torch.matmul(q / divisor, k.transpose(-1, -2));                                       // (B, H, T, S)
        if (mask is not null) scores = scores * mask - mask.neg().add(One) * MaskedScore;
        var probabilities = nn.functional.softmax(scores.to(ScalarType.Float32) * coefficient, dim: -1).to(v.dtype);
        var context = torch.matmul(probabilities, v);                                                       // (B, H, T, hd)
        var merged = context.permute(0, 2, 1, 3).reshape(batch, length, heads * headSize);                  // (B, T, D)
        return dense.call(merged).MoveToOuterDisposeScope();
    }

    /// <summary>First half of each head rotated by position, second half by block position; back in x's dtype (cos/sin are float32).</summary>
    private static Tensor RotateHalves(Tensor x, (Tensor Cos, Tensor Sin) position, (Tensor Cos, Tensor Sin) block)
    {
        long half = x.shape[^1] / 2;
        return torch.cat([GlmRotary.Apply(x.narrow(-1, 0, half), position.Cos, position.Sin),
                          GlmRotary.Apply(x.narrow(-1, half, half), block.Cos, block.Sin)], dim: -1).to(x.dtype);
    }
}

/// <summary>dense_4h_to_h(gelu_tanh(dense_h_to_4h(x))), the GELU written out as SAT's OpenAI formula.</summary>
public sealed class GlmMlp : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense_h_to_4h;
    private readonly nn.Module<Tensor, Tensor> dense_4h_to_h;
    // The gelu's constants as Scalars held for the process: `tensor * double` converts the double to a temporary native
    // Scalar that only its finalizer frees, and one collected while libtorch reads it gives a garbage factor.
    private static readonly Scalar Half = 0.5, One = 1.0, GeluScale = 0.7978845608028654, GeluCubic = 0.044715;

    public GlmMlp(GlmConfig c) : base(nameof(GlmMlp))
    {
        dense_h_to_4h = Layers.Linear(c.HiddenSize, c.MlpSize);
        dense_4h_to_h = Layers.Linear(c.MlpSize, c.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = dense_h_to_4h.call(x);                                                                      // (B, T, 4D)
        // 0.5·h·(1 + tanh(√(2/π)·h·(1 + 0.044715·h²))), each product in the order SAT computes it (float32 results agree).
        var gelu = h * Half * torch.tanh(h * GeluScale * (h * GeluCubic * h).add(One)).add(One);
        return dense_4h_to_h.call(gelu).MoveToOuterDisposeScope();                                          // (B, T, D)
    }
}

/// <summary>
/// ChatGLM's "post" block: a = LN(x); h = α·a + attn(a); m = LN(h); out = α·m + mlp(m), with α = √(2·layers) (the
/// DeepNorm-style up-weighting of the residual that keeps 28 post-LN layers trainable).
/// </summary>
public sealed class GlmBlock : nn.Module
{
    private readonly LayerNorm input_layernorm;
    private readonly GlmAttention attention;
    private readonly LayerNorm post_attention_layernorm;
    private readonly GlmMlp mlp;
    private readonly Scalar alpha;   // a Scalar the block holds: a temporary one from `tensor * double` is freed by its finalizer, maybe mid-call

    public GlmBlock(GlmConfig c) : base(nameof(GlmBlock))
    {
        input_layernorm = nn.LayerNorm(c.HiddenSize, c.LayernormEpsilon);
        attention = new GlmAttention(c);
        post_attention_layernorm = nn.LayerNorm(c.HiddenSize, c.LayernormEpsilon);
        mlp = new GlmMlp(c);
        alpha = Math.Sqrt(2.0 * c.NumLayers);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, (Tensor, Tensor) position, (Tensor, Tensor) block, Tensor? mask, KvCache? cache, int layerIndex)
    {
        using var scope = NewDisposeScope();
        var a = input_layernorm.call(x);
        var h = a * alpha + attention.Forward(a, position, block, mask, cache, layerIndex);
        var m = post_attention_layernorm.call(h);
        return (m * alpha + mlp.call(m)).MoveToOuterDisposeScope();
    }
}

/// <summary>SAT's `transformer.`: word embeddings, the blocks and the final LayerNorm.</summary>
public sealed class GlmTransformer : nn.Module
{
    private readonly TokenEmbedding word_embeddings;
    private readonly ModuleList<GlmBlock> layers;
    private readonly LayerNorm final_layernorm;
    private readonly int headSize;

    public GlmTransformer(GlmConfig c) : base(nameof(GlmTransformer))
    {
        word_embeddings = new TokenEmbedding(c.VocabSize, c.HiddenSize);
        layers = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(_ => new GlmBlock(c)).ToArray());
        final_layernorm = nn.LayerNorm(c.HiddenSize, c.LayernormEpsilon);
        headSize = c.HeadSize;
        RegisterComponents();
    }

    public Parameter EmbeddingWeight => word_embeddings.Weight;

    public Tensor Embed(Tensor ids) => word_embeddings.call(ids);

    /// <param name="x">(B, T, D) input embeddings.</param>
    /// <param name="positionIds">(B, 2, T): row 0 positions, row 1 block positions.</param>
    /// <param name="layerOutputs">when given, receives each block's output (B, T, D) before the final LayerNorm.</param>
    /// <returns>(B, T, D) after the final LayerNorm.</returns>
    public Tensor Forward(Tensor x, Tensor positionIds, Tensor? mask, KvCache? cache, List<Tensor>? layerOutputs)
    {
        using var scope = NewDisposeScope();
        var position = GlmRotary.CosSin(positionIds.select(1, 0), headSize / 2);       // (B, 1, T, hd/2) each
        var block = GlmRotary.CosSin(positionIds.select(1, 1), headSize / 2);
        var h = x;
        for (int i = 0; i < layers.Count; i++)
        {
            h = layers[i].Forward(h, position, block, mask, cache, i);
            if (layerOutputs is not null) layerOutputs.Add(h.clone().MoveToOuterDisposeScope());
        }
        cache?.Advance((int)x.shape[1]);
        return final_layernorm.call(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// ChatGLM-6B as a causal LM: <see cref="GlmTransformer"/> under `transformer.` and `lm_head` (no bias; absent when the
/// config ties it to the embeddings). Float32 compute. Also builds GLM's inputs (2D positions, bidirectional-prefix mask)
/// and decodes greedily, with a KV cache or by full recompute, with XrayGLM's repetition-penalty rule.
/// </summary>
public sealed class GlmDecoder : nn.Module
{
    private static readonly Scalar One = 1.0;   // held: an implicit Scalar temporary can be finalized while libtorch reads it
    private readonly GlmTransformer transformer;
    private readonly nn.Module<Tensor, Tensor>? lm_head;

    public GlmConfig Config { get; }

    public GlmDecoder(GlmConfig config) : base(nameof(GlmDecoder))
    {
        Config = config.Validate();
        transformer = new GlmTransformer(config);
        lm_head = config.TieWordEmbeddings ? null : Layers.Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        RegisterComponents();
    }

    /// <summary>(B, T) int64 ids → (B, T, D).</summary>
    public Tensor Embed(Tensor ids)
    {
        if (ids.numel() > 0)
            using (NewDisposeScope())
            {
                long low = ids.min().item<long>(), high = ids.max().item<long>();
                if (low < 0 || high >= Config.VocabSize)
                    throw new XrayVLException($"token id {(low < 0 ? low : high)} is outside the GLM vocabulary (0..{Config.VocabSize - 1})");
            }
        return transformer.Embed(ids);
    }

    /// <summary>
    /// Final-normed hidden states (B, T, D). <paramref name="positionIds"/> (B, 2, T) and <paramref name="mask"/>
    /// (B | 1, 1, T, past + T), 1 = attend, as <see cref="Inputs"/> builds them; a null mask attends everywhere (SAT's
    /// one-token decode step). <paramref name="layerOutputs"/> collects every block's output for debugging.
    /// </summary>
    public Tensor ForwardHidden(Tensor inputsEmbeds, Tensor positionIds, Tensor? mask = null, KvCache? cache = null, List<Tensor>? layerOutputs = null)
    {
        long batch = inputsEmbeds.shape[0], length = inputsEmbeds.shape[1], past = cache?.Length ?? 0;
        if (inputsEmbeds.dim() != 3 || inputsEmbeds.shape[2] != Config.HiddenSize)
            throw new XrayVLException($"GLM input must be (batch, length, {Config.HiddenSize}) embeddings, got ({string.Join(", ", inputsEmbeds.shape)})");
        if (positionIds.dim() != 3 || positionIds.shape[0] != batch || positionIds.shape[1] != 2 || positionIds.shape[2] != length)
            throw new XrayVLException($"GLM position ids must be (batch {batch}, 2, length {length}), got ({string.Join(", ", positionIds.shape)})");
        if (mask is not null && (mask.dim() != 4 || mask.shape[2] != length || mask.shape[3] != past + length))
            throw new XrayVLException($"GLM attention mask must be (batch, 1, {length}, {past + length}), got ({string.Join(", ", mask.shape)})");
        using var scope = NewDisposeScope();
        var dtype = transformer.EmbeddingWeight.dtype;
        int collected = layerOutputs?.Count ?? 0;
        var hidden = transformer.Forward(inputsEmbeds.to(dtype), positionIds, mask?.to(dtype), cache, layerOutputs);
        // The layer outputs belong to the caller's scope, like the result.
        if (layerOutputs is not null) for (int i = collected; i < layerOutputs.Count; i++) layerOutputs[i].MoveToOuterDisposeScope();
        return hidden.MoveToOuterDisposeScope();
    }

    /// <summary>Hidden states (..., D) → float32 logits (..., V).</summary>
    public Tensor Logits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        var embedding = transformer.EmbeddingWeight;
        // The tied head is the largest matrix of a decode step (130,528 × 4,096 in ChatGLM-6B): one token's row goes through
        // the bf16 matrix-vector kernel, which reads it at memory speed where libtorch's bf16 GEMM does not.
        var logits = lm_head?.call(hidden) ?? (embedding.dtype == ScalarType.BFloat16 && Kernels.DecodeLinear.Applies(hidden, embedding)
            ? Kernels.DecodeLinear.Bf16(hidden, embedding, null)
            : nn.functional.linear(hidden, embedding));
        return logits.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>An empty cache for <paramref name="batch"/> rows and <paramref name="capacity"/> positions.</summary>
    public KvCache NewCache(int batch, int capacity) =>
        new(Config.NumLayers, batch, Config.NumAttentionHeads, Config.HeadSize, capacity, transformer.EmbeddingWeight.dtype, transformer.EmbeddingWeight.device);

    /// <summary>
    /// GLM's inputs for a prompt of <paramref name="length"/> tokens whose `[gMASK]` sits at <paramref name="maskPosition"/>
    /// and whose `<sop>` starts at <paramref name="contextLength"/> (SAT's get_position_ids / get_masks, no left padding):
    /// positions 0..ctx−1 and then all maskPosition; block positions 0 over the context and 1, 2, … from `<sop>` on;
    /// the mask lets every token see the whole context (bidirectional) and, from `<sop>` on, the tokens before it (causal).
    /// Returns position ids (1, 2, T) int64 and mask (1, 1, T, T) float32.
    /// </summary>
    public static (Tensor PositionIds, Tensor Mask) Inputs(long length, long maskPosition, long contextLength)
    {
        if (contextLength < 1 || contextLength > length || maskPosition < 0 || maskPosition >= contextLength)
            throw new XrayVLException($"GLM prompt needs [gMASK] ({maskPosition}) before <sop> ({contextLength}) within {length} tokens");
        using var scope = NewDisposeScope();
        using Scalar end = length, context = contextLength, firstBlock = contextLength - 1, zero = 0L;   // held until the calls return
        var index = torch.arange(end, ScalarType.Int64);
        var positions = index.where(index.lt(context), torch.tensor(maskPosition));
        var blocks = index.sub(firstBlock).clamp_min(zero);
        var positionIds = torch.stack([positions, blocks]).unsqueeze(0);                                    // (1, 2, T)
        var causal = index.unsqueeze(0).le(index.unsqueeze(1));                                             // (T, T)
        var mask = causal.logical_or(index.lt(context).unsqueeze(0)).to(ScalarType.Float32);
        return (positionIds.MoveToOuterDisposeScope(), mask.view(1, 1, length, length).MoveToOuterDisposeScope());
    }

    /// <summary>GLM's inputs for prompt ids ending in [gMASK] (or [MASK]) … &lt;sop&gt;, found as SAT finds them.</summary>
    public (Tensor PositionIds, Tensor Mask) Inputs(long[] promptIds)
    {
        int gmask = Array.IndexOf(promptIds, Config.GmaskTokenId);
        int maskPosition = gmask >= 0 ? gmask : Array.IndexOf(promptIds, Config.MaskTokenId);
        int contextLength = Array.IndexOf(promptIds, Config.BosTokenId);
        if (maskPosition < 0 || contextLength < 0)
            throw new XrayVLException($"a GLM prompt needs [gMASK] ({Config.GmaskTokenId}) or [MASK] ({Config.MaskTokenId}) and <sop> ({Config.BosTokenId})");
        return Inputs(promptIds.Length, maskPosition, contextLength);
    }

    /// <summary>
    /// Greedy decoding of one prompt (batch 1): up to <paramref name="maxNewTokens"/> ids, stopping after `<eop>`.
    /// The prompt comes as embeddings (so an image splice is the caller's), with its position ids (1, 2, T) and mask
    /// (1, 1, T, T); new tokens take position maskPosition and block positions 2, 3, … as in SAT.
    /// <paramref name="repetitionPenalty"/> is SAT's BaseStrategy rule that XrayGLM's chat uses (1.2): the logit of
    /// every token generated so far is divided by the penalty whatever its sign (temperature, a common divisor, does not
    /// change the argmax; top-k 1 makes XrayGLM's chat this greedy choice).
    /// With <paramref name="useCache"/> false every step recomputes the whole sequence (the check on the cache).
    /// </summary>
    public long[] Generate(Tensor promptEmbeds, Tensor positionIds, Tensor mask, int maxNewTokens, double repetitionPenalty = 1.0, bool useCache = true)
    {
        if (promptEmbeds.dim() != 3 || promptEmbeds.shape[0] != 1) throw new XrayVLException("GLM generation takes one prompt (batch 1)");
        if (repetitionPenalty <= 0) throw new XrayVLException($"repetition penalty must be positive, got {repetitionPenalty}");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        int length = (int)promptEmbeds.shape[1];
        long maskPosition = positionIds[0, 0, length - 1].item<long>();
        long lastBlock = positionIds[0, 1, length - 1].item<long>();
        var generated = new List<long>();
        using var cache = useCache ? NewCache(1, length + maxNewTokens) : null;

        var logits = Logits(ForwardHidden(promptEmbeds, positionIds, mask, cache).narrow(1, length - 1, 1)).view(-1);   // (V)
        Tensor embeds = promptEmbeds, positions = positionIds, fullMask = mask;
        for (int step = 0; step < maxNewTokens; step++)
        {
            using var stepScope = NewDisposeScope();
            long next = PickGreedy(logits, generated, repetitionPenalty);
            generated.Add(next);
            if (next == Config.EopTokenId || step == maxNewTokens - 1) break;
            var tokenEmbeds = Embed(torch.tensor(new[] { next }).view(1, 1));                                       // (1, 1, D)
            var tokenPosition = torch.tensor(new[] { maskPosition, lastBlock + step + 1 }).view(1, 2, 1);
            Tensor hidden;
            if (cache is not null)
                hidden = ForwardHidden(tokenEmbeds, tokenPosition, mask: null, cache);                                 // (1, 1, D)
            else
            {
                // Full recompute: the new token sees everything before it; nobody before sees it.
                long n = embeds.shape[1];
                embeds = torch.cat([embeds, tokenEmbeds], dim: 1).MoveToOuterDisposeScope();
                positions = torch.cat([positions, tokenPosition], dim: 2).MoveToOuterDisposeScope();
                var grown = torch.zeros(1, 1, n + 1, n + 1);
                grown.narrow(2, 0, n).narrow(3, 0, n).copy_(fullMask);
                grown[0, 0, n].fill_(One);
                fullMask = grown.MoveToOuterDisposeScope();
                hidden = ForwardHidden(embeds, positions, fullMask).narrow(1, n, 1);
            }
            logits = Logits(hidden).view(-1).MoveToOuterDisposeScope();
        }
        return [.. generated];
    }

    /// <summary>The parameter count of a config, by formula (the tests check it against an instantiated model).</summary>
    public static long CountParameters(GlmConfig c)
    {
        long d = c.HiddenSize, m = c.MlpSize;
        long perLayer = (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d) + 4 * d;   // qkv, dense, MLP, 2 LayerNorms
        long vocabulary = (long)c.VocabSize * d;
        return vocabulary + c.NumLayers * perLayer + 2 * d + (c.TieWordEmbeddings ? 0 : vocabulary);
    }

    private static long PickGreedy(Tensor logits, List<long> generated, double repetitionPenalty)
    {
        using var scope = NewDisposeScope();
        var scores = logits.to(ScalarType.Float32);
        if (generated.Count > 0 && repetitionPenalty != 1.0)
        {
            var divisor = torch.ones_like(scores);
            using Scalar penalty = repetitionPenalty;   // held until index_fill_ returns
            divisor.index_fill_(0, torch.tensor(generated.ToArray()), penalty);
            scores = scores / divisor;
        }
        return scores.argmax().item<long>();
    }
}

/// <summary>
/// XrayGLM's own LoRA (its lora_mixin.LoraMixin, not SAT's): a linear of P partitions (query_key_value: q, k, v; dense: 1)
/// carries per partition A_i (r, in) and B_i (out/P, r) and adds x·A_iᵀ·B_iᵀ·s with s = lora_alpha / r, where XrayGLM
/// fixes lora_alpha = 1. For query_key_value the partitions are "head first": each delta is viewed per head and the three
/// are interleaved per head, matching the fused weight's [h0: q k v][h1: q k v]… rows.
/// </summary>
public static class XrayGlmLora
{
    /// <summary>W' = W + Δ, Δ (out, in) built from the partitions' B_i·A_i·s, interleaved per head when <paramref name="heads"/> &gt; 0.</summary>
    public static Tensor Merge(Tensor weight, IReadOnlyList<Tensor> a, IReadOnlyList<Tensor> b, double scaling, int heads)
    {
        if (a.Count == 0 || a.Count != b.Count) throw new XrayVLException($"LoRA merge needs as many matrix_A as matrix_B (got {a.Count} and {b.Count})");
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1], partitions = a.Count;
        if (outFeatures % partitions != 0) throw new XrayVLException($"LoRA: {outFeatures} output rows do not split into {partitions} partitions");
        for (int i = 0; i < partitions; i++)
            if (a[i].dim() != 2 || b[i].dim() != 2 || a[i].shape[1] != inFeatures || b[i].shape[0] != outFeatures / partitions || b[i].shape[1] != a[i].shape[0])
                throw new XrayVLException($"LoRA partition {i}: matrix_A ({string.Join(", ", a[i].shape)}) and matrix_B ({string.Join(", ", b[i].shape)}) do not fit a ({outFeatures}, {inFeatures}) weight in {partitions} parts");
        using var scope = NewDisposeScope();
        var deltas = torch.stack(Enumerable.Range(0, (int)partitions).Select(i => torch.matmul(b[i], a[i]) * scaling).ToArray());   // (P, out/P, in)
        Tensor delta = partitions > 1 && heads > 0
            ? deltas.view(partitions, heads, -1, inFeatures).permute(1, 0, 2, 3).reshape(outFeatures, inFeatures)  // per head: [q k v]
            : deltas.reshape(outFeatures, inFeatures);
        return (weight + delta.to(weight.dtype)).MoveToOuterDisposeScope();
    }
}
