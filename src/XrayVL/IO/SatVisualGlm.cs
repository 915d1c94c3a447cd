using System.Text.Json;
using System.Text.RegularExpressions;
using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>What to do with XrayGLM's unmerged LoRA matrices when a SAT checkpoint is converted.</summary>
public enum SatLoraHandling
{
    /// <summary>Fold them into the base weights (W' = W + Δ, in float32): a plain model.</summary>
    Merge,
    /// <summary>Keep the base weights and hand the matrices out as a PEFT-style adapter (keys under <c>base_model.model.</c>).</summary>
    Adapter,
}

// VisualGLM / XrayGLM checkpoints: model_config.json → VisualGlmConfig, and SAT's state-dict names → VisualGlmModel's
// (the one key table of this family), streamed tensor by tensor so that a 6B checkpoint never sits in memory twice.
public sealed partial class SatCheckpoint
{
    /// <summary>
    /// The whole VisualGLM config: ChatGLM from the top-level arguments, the EVA ViT from <c>eva_args</c>, the Q-Former from
    /// <c>qformer_args</c>, and <c>image_length</c>. Only the layouts VisualGLM builds are accepted (pre-LN ViT with one CLS
    /// token and no final norm, post-LN Q-Former that cross-attends on every other layer from the first).
    /// </summary>
    public VisualGlmConfig VisualGlmConfig()
    {
        string where = Path.Combine(Directory, ConfigFileName);
        string modelClass = ModelConfig.TryGetProperty("model_class", out var c) ? c.GetString() ?? "" : "";
        if (modelClass is not ("VisualGLMModel" or "FineTuneVisualGLMModel"))
            throw new XrayVLException($"{where}: model_class '{modelClass}' is not VisualGLM (VisualGLMModel, FineTuneVisualGLMModel)");
        var text = GlmConfig();
        if (!ModelConfig.TryGetProperty("eva_args", out var eva) || eva.ValueKind != JsonValueKind.Object)
            throw new XrayVLException($"{where}: no eva_args object (the vision encoder's arguments)");
        if (!ModelConfig.TryGetProperty("qformer_args", out var qformer) || qformer.ValueKind != JsonValueKind.Object)
            throw new XrayVLException($"{where}: no qformer_args object (the Q-Former's arguments)");
        try
        {
            var vision = new EvaVisionConfig
            {
                ImageSize = ImageSize(eva),
                PatchSize = Int(eva, "patch_size"),
                NumChannels = Int(eva, "in_channels", 3),
                HiddenSize = Int(eva, "hidden_size"),
                NumHiddenLayers = Int(eva, "num_layers"),
                NumAttentionHeads = Int(eva, "num_attention_heads"),
                MlpHiddenSize = Int(eva, "inner_hidden_size", 4 * Int(eva, "hidden_size")),
                LayerNormEps = Double(eva, "layernorm_epsilon", 1e-5),
            }.Validate();
            Require(Str(eva, "layernorm_order", "pre") == "pre", "eva_args.layernorm_order must be 'pre'");
            Require(Int(eva, "pre_len", 1) == 1 && Int(eva, "post_len", 0) == 0, "eva_args needs pre_len 1 (one CLS token) and post_len 0");
            Require(!Bool(eva, "use_final_layernorm", true), "eva_args.use_final_layernorm must be false (VisualGLM applies ln_vision instead)");
            Require(Int(eva, "max_sequence_length", vision.NumTokens) == vision.NumTokens,
                $"eva_args.max_sequence_length must be the {vision.NumTokens} tokens of a {vision.ImageSize}px image in {vision.PatchSize}px patches");

            int qLayers = Int(qformer, "num_layers");
            bool[] crossLayers = qformer.TryGetProperty("is_decoder", out var isDecoder) && isDecoder.ValueKind == JsonValueKind.Array
                ? [.. isDecoder.EnumerateArray().Select(e => e.GetBoolean())]
                : throw new XrayVLException("qformer_args.is_decoder (which layers cross-attend) is missing");
            Require(crossLayers.Length == qLayers, $"qformer_args.is_decoder has {crossLayers.Length} entries for {qLayers} layers");
            Require(Str(qformer, "layernorm_order", "post") == "post", "qformer_args.layernorm_order must be 'post'");
            // The Q-Former module cross-attends on layers i with i % freq == 0; VisualGLM's [True, False, True, ...] is freq 2.
            int frequency = Enumerable.Range(1, qLayers).FirstOrDefault(f => crossLayers.Select((x, i) => x == (i % f == 0)).All(b => b));
            Require(frequency > 0, $"qformer_args.is_decoder [{string.Join(", ", crossLayers)}] is not 'every k-th layer from the first'");
            int qHidden = Int(qformer, "hidden_size");
            var q = new QFormerConfig
            {
                HiddenSize = qHidden,
                NumHiddenLayers = qLayers,
                NumAttentionHeads = Int(qformer, "num_attention_heads"),
                IntermediateSize = Int(qformer, "inner_hidden_size", 4 * qHidden),
                LayerNormEps = Double(qformer, "layernorm_epsilon", 1e-5),
                EncoderWidth = Int(qformer, "cross_attn_hidden_size"),
                CrossAttentionFreq = frequency,
                NumQueryTokens = Int(qformer, "vocab_size"),
            };
            int imageLength = Int(ModelConfig, "image_length", 32);
            return new VisualGlmConfig { TextConfig = text, VisionConfig = vision, QformerConfig = q, ImageLength = imageLength }.Validate();
        }
        catch (XrayVLException e) { throw new XrayVLException($"{where}: {e.Message}"); }
        catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new XrayVLException($"{where}: {e.Message}"); }
    }

    /// <summary>The rank of XrayGLM's LoRA (model_config.json's lora_rank), or null for a checkpoint without LoRA.</summary>
    public int? LoraRank =>
        ModelConfig.TryGetProperty("use_lora", out var use) && use.ValueKind == JsonValueKind.True && ModelConfig.TryGetProperty("lora_rank", out var r)
            ? r.GetInt32() : null;

    /// <summary>
    /// Reads the folder into a <see cref="VisualGlmModel"/> in <paramref name="dtype"/>, LoRA merged, eval mode. The model is
    /// created in that dtype and each tensor of the file is read, renamed and copied into it before the next is read, so
    /// the peak is the model plus the largest tensor (plus one LoRA layer's matrices), never a second copy of the model.
    /// </summary>
    public VisualGlmModel LoadVisualGlm(ScalarType dtype, out IReadOnlyList<string> mergedLora)
    {
        var config = VisualGlmConfig();
        var model = VisualGlmModel.Create(config, dtype);
        try
        {
            var merged = new List<string>();
            using var file = TorchCheckpoint.Open(ModelStatesPath);
            ModuleWeights.StreamInto(model, ToVisualGlm(file.ReadStateDict("module"), config, SatLoraHandling.Merge, merged), ModelStatesPath);
            mergedLora = merged;
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    // ------------------------------------------------------------------ the key table

    /// <summary>Prefix of PEFT-style adapter keys in <see cref="ToVisualGlm"/>'s output (<see cref="Lora.PeftKeyPrefix"/>).</summary>
    public const string AdapterKeyPrefix = Lora.PeftKeyPrefix;

    /// <summary>
    /// SAT's (name, tensor) pairs → <see cref="VisualGlmModel"/>'s, one at a time. Each input tensor is disposed or handed on
    /// as an output; the caller owns every output. The table:
    /// <list type="bullet">
    /// <item>`transformer.*` → `language_model.transformer.*`; `mixins.chatglm-final.lm_head.weight` → `language_model.lm_head.weight`.
    /// Dropped: `transformer.position_embeddings.weight` (ChatGLM's position_embedding_forward returns None) and the rotary
    /// `inv_freq` buffer (recomputed, as SAT does on load).</item>
    /// <item>XrayGLM's LoRA (`….attention.{query_key_value,dense}.{original.*, matrix_A.i, matrix_B.i}`): merged
    /// (<see cref="XrayGlmLora.Merge"/>, float32) or, with <see cref="SatLoraHandling.Adapter"/>, the original weight plus
    /// one PEFT pair per layer (see <see cref="PeftPair"/>), under <see cref="AdapterKeyPrefix"/>.</item>
    /// <item>`mixins.eva.model.vit.*` (SAT's ViT) → `image_encoder.visual_encoder.*` (EVA's names): CLS = word_embeddings
    /// row 0, the position table, `patch_embedding.proj`, per block input_layernorm → norm1, query_key_value → qkv with its
    /// bias split into q_bias and v_bias (the key bias adds q·b_k to every score of a query alike, which the softmax
    /// cancels exactly, so EVA's layout without it computes the same), dense → proj, post_attention_layernorm → norm2,
    /// dense_h_to_4h / dense_4h_to_h → fc1 / fc2; `mixins.cls.ln_vision` → `ln_vision`.</item>
    /// <item>`mixins.eva.model.qformer.*` → `image_encoder.Qformer.bert.*` and `query_tokens` (= its word_embeddings, as
    /// SAT embeds arange(32)). SAT's post-LN layer normalises its input where BERT normalises the previous output, so layer
    /// 0's input_layernorm is BERT's embeddings.LayerNorm, layer i's is layer i−1's output_query.LayerNorm, and the final
    /// layernorm is the last layer's; fused query_key_value and cross key_value are split contiguously ([q|k|v], [k|v]).</item>
    /// <item>`mixins.eva.model.glm_proj` → `image_encoder.glm_proj`.</item>
    /// </list>
    /// Any other key is an error, so a new layout is never half-loaded. <paramref name="loraLayers"/> receives the
    /// adapted layers' names.
    /// </summary>
    public static IEnumerable<(string Name, Tensor Tensor)> ToVisualGlm(IEnumerable<(string Name, Tensor Tensor)> module,
        VisualGlmConfig config, SatLoraHandling lora, List<string>? loraLayers = null)
    {
        var pending = new Dictionary<string, LoraGroup>();
        try
        {
            foreach (var (name, tensor) in module)
            {
                var outputs = Map(name, tensor, config, lora, pending, loraLayers);
                foreach (var output in outputs) yield return output;
            }
            if (pending.Count > 0)
                throw new XrayVLException($"LoRA layer '{pending.Keys.First()}' is incomplete: its weight or some matrix_A/matrix_B partitions are missing");
        }
        finally
        {
            foreach (var group in pending.Values) group.Dispose();
        }
    }

    private sealed class LoraGroup : IDisposable
    {
        public Tensor? Weight;
        public SortedDictionary<int, Tensor> A { get; } = [];
        public SortedDictionary<int, Tensor> B { get; } = [];

        public bool IsComplete(int partitions) => Weight is not null && A.Count == partitions && B.Count == partitions;

        public void Dispose()
        {
            Weight?.Dispose();
            foreach (var t in A.Values.Concat(B.Values)) t.Dispose();
        }
    }

    private static List<(string, Tensor)> Map(string name, Tensor tensor, VisualGlmConfig config, SatLoraHandling lora,
        Dictionary<string, LoraGroup> pending, List<string>? loraLayers)
    {
        const string Eva = "mixins.eva.model.";
        List<(string, Tensor)> Drop() { tensor.Dispose(); return []; }
        List<(string, Tensor)> As(string target) => [(target, tensor)];

        if (name is "transformer.position_embeddings.weight" or "mixins.chatglm-attn.rotary_emb.inv_freq") return Drop();
        if (name == "mixins.chatglm-final.lm_head.weight")
            return config.TextConfig.TieWordEmbeddings ? Drop() : As("language_model.lm_head.weight");
        var loraMatch = LoraKey().Match(name);
        if (loraMatch.Success) return MapLora(loraMatch, tensor, config, lora, pending, loraLayers);
        if (name.StartsWith("transformer.", StringComparison.Ordinal)) return As("language_model." + name);
        if (!name.StartsWith(Eva, StringComparison.Ordinal)) return Fail();
        string rest = name[Eva.Length..];
        const string Vit = "image_encoder.visual_encoder.", Bert = "image_encoder.Qformer.bert.";

        switch (rest)
        {
            case "vit.mixins.patch_embedding.proj.weight": return As(Vit + "patch_embed.proj.weight");
            case "vit.mixins.patch_embedding.proj.bias": return As(Vit + "patch_embed.proj.bias");
            case "vit.mixins.cls.ln_vision.weight": return As("image_encoder.ln_vision.weight");
            case "vit.mixins.cls.ln_vision.bias": return As("image_encoder.ln_vision.bias");
            case "vit.transformer.word_embeddings.weight": return Owned(Vit + "cls_token", tensor.view(1, 1, -1));        // (1, E) → (1, 1, E)
            case "vit.transformer.position_embeddings.weight": return Owned(Vit + "pos_embed", tensor.unsqueeze(0));   // (N, E) → (1, N, E)
            case "qformer.transformer.word_embeddings.weight": return Owned("image_encoder.query_tokens", tensor.unsqueeze(0));   // (Q, Dq) → (1, Q, Dq)
            case "glm_proj.weight": return As("image_encoder.glm_proj.weight");
            case "glm_proj.bias": return As("image_encoder.glm_proj.bias");
        }
        int lastQ = config.QformerConfig.NumHiddenLayers - 1;
        if (rest.StartsWith("qformer.transformer.final_layernorm.", StringComparison.Ordinal))
            return As($"{Bert}encoder.layer.{lastQ}.output_query.LayerNorm.{rest[(rest.LastIndexOf('.') + 1)..]}");

        var layer = SatLayerKey().Match(rest);
        if (!layer.Success) return Fail();
        int i = int.Parse(layer.Groups["i"].Value);
        string part = layer.Groups["part"].Value, kind = layer.Groups["kind"].Value;
        if (layer.Groups["tower"].Value == "vit")
        {
            string block = $"{Vit}blocks.{i}.";
            switch (part)
            {
                case "input_layernorm": return As($"{block}norm1.{kind}");
                case "attention.query_key_value" when kind == "weight": return As($"{block}attn.qkv.weight");
                case "attention.query_key_value":
                {
                    long e = config.VisionConfig.HiddenSize;                                                   // bias (3E) = [q | k | v]
                    var q = tensor.narrow(0, 0, e).clone();
                    var v = tensor.narrow(0, 2 * e, e).clone();
                    tensor.Dispose();
                    return [($"{block}attn.q_bias", q), ($"{block}attn.v_bias", v)];
                }
                case "attention.dense": return As($"{block}attn.proj.{kind}");
                case "post_attention_layernorm": return As($"{block}norm2.{kind}");
                case "mlp.dense_h_to_4h": return As($"{block}mlp.fc1.{kind}");
                case "mlp.dense_4h_to_h": return As($"{block}mlp.fc2.{kind}");
            }
            return Fail();
        }
        string bert = $"{Bert}encoder.layer.{i}.";
        switch (part)
        {
            case "input_layernorm":
                return As(i == 0 ? $"{Bert}embeddings.LayerNorm.{kind}" : $"{Bert}encoder.layer.{i - 1}.output_query.LayerNorm.{kind}");
            case "attention.query_key_value": return Split(tensor, [$"{bert}attention.self.query.{kind}", $"{bert}attention.self.key.{kind}", $"{bert}attention.self.value.{kind}"]);
            case "attention.dense": return As($"{bert}attention.output.dense.{kind}");
            case "post_attention_layernorm": return As($"{bert}attention.output.LayerNorm.{kind}");
            case "cross_attention.query": return As($"{bert}crossattention.self.query.{kind}");
            case "cross_attention.key_value": return Split(tensor, [$"{bert}crossattention.self.key.{kind}", $"{bert}crossattention.self.value.{kind}"]);
            case "cross_attention.dense": return As($"{bert}crossattention.output.dense.{kind}");
            case "post_cross_attention_layernorm": return As($"{bert}crossattention.output.LayerNorm.{kind}");
            case "mlp.dense_h_to_4h": return As($"{bert}intermediate_query.dense.{kind}");
            case "mlp.dense_4h_to_h": return As($"{bert}output_query.dense.{kind}");
        }
        return Fail();

        List<(string, Tensor)> Fail()
        {
            tensor.Dispose();
            throw new XrayVLException($"SAT checkpoint key '{name}' is not part of VisualGLM");
        }

        // A reshaped view owns nothing new: keep the view, drop the handle of the original.
        List<(string, Tensor)> Owned(string target, Tensor view)
        {
            tensor.Dispose();
            return [(target, view)];
        }
    }

    /// <summary>Splits rows into equal contiguous parts (SAT's fused projections of the ViT and the Q-Former).</summary>
    private static List<(string, Tensor)> Split(Tensor tensor, string[] names)
    {
        long rows = tensor.shape[0] / names.Length;
        var parts = names.Select((n, k) => (n, tensor.narrow(0, k * rows, rows).clone())).ToList();
        tensor.Dispose();
        return parts;
    }

    private static List<(string, Tensor)> MapLora(Match match, Tensor tensor, VisualGlmConfig config, SatLoraHandling lora,
        Dictionary<string, LoraGroup> pending, List<string>? loraLayers)
    {
        string layer = match.Groups["layer"].Value, part = match.Groups["part"].Value, kind = match.Groups["kind"].Value;
        string target = "language_model." + layer;
        if (part == "original" && kind == "bias") return [(target + ".bias", tensor)];
        if (!pending.TryGetValue(layer, out var group)) pending[layer] = group = new LoraGroup();
        if (part == "original") group.Weight = tensor;
        else (part == "matrix_A" ? group.A : group.B)[int.Parse(kind)] = tensor;
        // XrayGLM's LoRA splits query_key_value into q, k, v partitions and keeps dense whole.
        bool fusedQkv = layer.EndsWith(".query_key_value", StringComparison.Ordinal);
        if (!group.IsComplete(fusedQkv ? 3 : 1)) return [];
        pending.Remove(layer);
        using (group)
        {
            if (!group.A.Keys.SequenceEqual(group.B.Keys) || group.A.Keys.First() != 0)
                throw new XrayVLException($"'{layer}': LoRA partitions matrix_A [{string.Join(", ", group.A.Keys)}] and matrix_B [{string.Join(", ", group.B.Keys)}] do not pair up");
            loraLayers?.Add(target);
            int heads = fusedQkv ? config.TextConfig.NumAttentionHeads : 0;
            // XrayGLM's LoraMixin builds its layers with lora_alpha = 1, so the scale is 1 / rank.
            double scaling = 1.0 / group.A[0].shape[0];
            using var scope = NewDisposeScope();
            Tensor F(Tensor t) => t.to(ScalarType.Float32);
            var a = group.A.Values.Select(F).ToList();
            var b = group.B.Values.Select(F).ToList();
            if (lora == SatLoraHandling.Merge)
                return [(target + ".weight", XrayGlmLora.Merge(F(group.Weight!), a, b, scaling, heads).MoveToOuterDisposeScope())];
            var (peftA, peftB) = PeftPair(a, b, scaling, heads, peftRank: 3 * (int)a[0].shape[0]);
            return [(target + ".weight", group.Weight!.clone().MoveToOuterDisposeScope()),
                    ($"{AdapterKeyPrefix}{target}.lora_A.weight", peftA.MoveToOuterDisposeScope()),
                    ($"{AdapterKeyPrefix}{target}.lora_B.weight", peftB.MoveToOuterDisposeScope())];
        }
    }

    /// <summary>
    /// One PEFT pair (A (R, in), B (out, R), applied as x·Aᵀ·Bᵀ with scale 1) equal to XrayGLM's partitioned LoRA:
    /// A stacks the partitions' A_i; B places each B_i·s on the rows of its partition (per head interleaved for the fused
    /// QKV) and the columns of its A_i, zeros elsewhere. Rank R is padded with zero rows/columns to
    /// <paramref name="peftRank"/> so q/k/v (3r) and dense (r) share one rank, as PEFT's single <c>r</c> needs; the
    /// zeros add nothing, so B·A·1 is exactly XrayGLM's Δ.
    /// </summary>
    public static (Tensor A, Tensor B) PeftPair(IReadOnlyList<Tensor> a, IReadOnlyList<Tensor> b, double scaling, int heads, int peftRank)
    {
        using var scope = NewDisposeScope();
        int partitions = a.Count;
        long rank = a[0].shape[0], inFeatures = a[0].shape[1], partRows = b[0].shape[0], outFeatures = partRows * partitions;
        if (partitions * rank > peftRank) throw new XrayVLException($"LoRA of {partitions}×{rank} ranks does not fit a PEFT rank of {peftRank}");
        var peftA = torch.zeros(peftRank, inFeatures, a[0].dtype);
        var blocks = torch.zeros(partitions, partRows, peftRank, b[0].dtype);                           // (P, out/P, R)
        for (int p = 0; p < partitions; p++)
        {
            peftA.narrow(0, p * rank, rank).copy_(a[p]);
            blocks[p].narrow(1, p * rank, rank).copy_(b[p] * scaling);
        }
        // Rows of the fused weight: per head [q k v], the same interleave XrayGlmLora.Merge applies to Δ.
        var peftB = partitions > 1 && heads > 0
            ? blocks.view(partitions, heads, -1, peftRank).permute(1, 0, 2, 3).reshape(outFeatures, peftRank)
            : blocks.reshape(outFeatures, peftRank);
        return (peftA.MoveToOuterDisposeScope(), peftB.contiguous().MoveToOuterDisposeScope());
    }

    [GeneratedRegex(@"^(?<tower>vit|qformer)\.transformer\.layers\.(?<i>\d+)\.(?<part>[a-z_]+(\.[a-z_0-9]+)?)\.(?<kind>weight|bias)$")]
    private static partial Regex SatLayerKey();

    private static int ImageSize(JsonElement args)
    {
        if (!args.TryGetProperty("image_size", out var size)) throw new XrayVLException("eva_args.image_size is missing");
        if (size.ValueKind == JsonValueKind.Number) return size.GetInt32();
        int[] sides = [.. size.EnumerateArray().Select(e => e.GetInt32())];
        if (sides.Length != 2 || sides[0] != sides[1]) throw new XrayVLException($"eva_args.image_size [{string.Join(", ", sides)}] must be square");
        return sides[0];
    }

    private static int Int(JsonElement args, string name, int? fallback = null) =>
        args.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32()
        : args.TryGetProperty(name, out v) && v.ValueKind != JsonValueKind.Null ? throw new XrayVLException($"'{name}' must be a whole number")
        : fallback ?? throw new XrayVLException($"'{name}' is missing");

    private static double Double(JsonElement args, string name, double fallback) =>
        args.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : fallback;

    private static string Str(JsonElement args, string name, string fallback) =>
        args.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : fallback;

    private static bool Bool(JsonElement args, string name, bool fallback) =>
        args.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    private static void Require(bool condition, string message)
    {
        if (!condition) throw new XrayVLException(message);
    }
}
