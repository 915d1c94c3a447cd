using System.Text.Json;
using System.Text.Json.Nodes;

namespace XrayVL.Modeling;

/// <summary>
/// Reads `config.json` trees the way Hugging Face transformers does. `save_pretrained` writes a config as a diff against
/// the class defaults (nested `vision_config` / `text_config` keep only keys that differ from the defaults of their own
/// `model_type`), so a key that is missing means transformers' default for that model type — never this project's own
/// compact-model default. The tables below are transformers' `configuration_*.py` defaults (4.40, plus the keys later
/// versions added: `head_dim`, `mlp_bias`, `rope_scaling` types, LLaVA's `image_seq_length`, `multimodal_projector_bias`).
///
/// Every key is accounted for: read into the config, known to leave the computation unchanged (generation settings,
/// dropout, bookkeeping), or required to hold the one value this project computes with (e.g. `use_sliding_window`
/// false). Any other key is refused by name: a key nobody reads could change the result, and a silently wrong answer is
/// worse than a clear refusal.
/// </summary>
public static class HfConfigs
{
    /// <summary>The language model config of a `config.json` object (model_type llama, mistral or qwen2).</summary>
    public static LanguageModelConfig ReadLanguageModel(JsonObject node) =>
        Deserialize<LanguageModelConfig>(Resolve(node, "llama", TextFamily)).Validate();

    /// <summary>The vision tower config of a `config.json` object: clip_vision_model, clip (its `vision_config`) or resnet.</summary>
    public static VisionConfig ReadVision(JsonObject node)
    {
        if (TypeOf(node, "clip_vision_model") == "clip") return ReadVision(Child(node, "vision_config", "clip_vision_model"));
        return Deserialize<VisionConfig>(Resolve(node, "clip_vision_model", VisionFamily)).Validate();
    }

    /// <summary>A composed model: this project's own `xrayvl` config or a transformers `llava` config.</summary>
    public static VisionLanguageConfig ReadVisionLanguage(JsonObject node)
    {
        string type = TypeOf(node, null);
        var top = Resolve(node, type, ComposedFamily);
        var vision = ReadVision(Child(node, "vision_config", "clip_vision_model"));
        var text = ReadLanguageModel(Child(node, "text_config", "llama"));
        top.Remove("vision_config");
        top.Remove("text_config");
        var config = Deserialize<VisionLanguageConfig>(top) with { VisionConfig = vision, TextConfig = text };
        if (type == "llava")
            config = config with { ModelType = "llava", ProjectorType = "mlp2x_gelu", FreezeVision = true };
        return config.Validate();
    }

    /// <summary>Parses a JSON file into an object; one-line errors name the file.</summary>
    public static JsonObject ParseFile(string path) => Json.ReadObject(path, "config");

    // ---- writing: the way save_pretrained writes a LLaVA config ----

    /// <summary>The transformers version whose LLaVA layout and config format <see cref="WriteLlava"/> writes.</summary>
    public const string TransformersVersion = "4.40.0";

    /// <summary>
    /// `config.json` of a LlavaForConditionalGeneration as `save_pretrained` writes it: the top level in full, the nested
    /// `vision_config` / `text_config` as diffs against the defaults of their own model_type (plus model_type), keys
    /// sorted. Throws when a part has no transformers equivalent (the caller checks that first).
    /// </summary>
    public static JsonObject WriteLlava(VisionLanguageConfig config, string torchDtype)
    {
        var v = config.VisionConfig;
        var vision = Diff("clip_vision_model", VisionFamily, O(("hidden_size", v.HiddenSize), ("intermediate_size", v.IntermediateSize),
            ("num_hidden_layers", v.NumHiddenLayers), ("num_attention_heads", v.NumAttentionHeads), ("num_channels", v.NumChannels),
            ("image_size", v.ImageSize), ("patch_size", v.PatchSize), ("hidden_act", v.HiddenAct), ("layer_norm_eps", v.LayerNormEps)));
        var t = config.TextConfig;
        var textValues = O(("vocab_size", t.VocabSize), ("hidden_size", t.HiddenSize), ("intermediate_size", t.IntermediateSize),
            ("num_hidden_layers", t.NumHiddenLayers), ("num_attention_heads", t.NumAttentionHeads),
            ("num_key_value_heads", t.NumKeyValueHeads), ("hidden_act", t.HiddenAct), ("max_position_embeddings", t.MaxPositionEmbeddings),
            ("rms_norm_eps", t.RmsNormEps), ("rope_theta", t.RopeTheta), ("tie_word_embeddings", t.TieWordEmbeddings),
            ("initializer_range", t.InitializerRange));
        if (t.HeadDim is int headDim) textValues["head_dim"] = headDim;
        if (t.RopeScaling is { } scaling) textValues["rope_scaling"] = WriteRopeScaling(scaling);
        if (t.ModelType == "llama")
        {
            textValues["attention_bias"] = t.AttentionBias;
            if (t.MlpBias) textValues["mlp_bias"] = true;
        }
        // Token ids only where set: a missing one reads as the type's default, which the forward pass never uses.
        if (t.BosTokenId is int bos) textValues["bos_token_id"] = bos;
        if (t.EosTokenId is int eos) textValues["eos_token_id"] = eos;
        if (t.PadTokenId is int pad) textValues["pad_token_id"] = pad;
        var text = Diff(t.ModelType, TextFamily, textValues);
        var top = O(("architectures", new JsonArray("LlavaForConditionalGeneration")), ("ignore_index", Constants.IgnoreIndex),
            ("image_token_index", config.ImageTokenIndex), ("model_type", "llava"), ("projector_hidden_act", config.ProjectorHiddenAct),
            ("text_config", text), ("torch_dtype", torchDtype), ("transformers_version", TransformersVersion), ("vision_config", vision),
            ("vision_feature_layer", config.VisionFeatureLayer), ("vision_feature_select_strategy", config.VisionFeatureSelectStrategy));
        return Sorted(top);
    }

    /// <summary>transformers 4.40 reads "type" for linear and dynamic; the later kinds were introduced with "rope_type".</summary>
    private static JsonObject WriteRopeScaling(RopeScaling scaling)
    {
        var node = (JsonObject)JsonSerializer.SerializeToNode(scaling, Json.Options)!;
        if (scaling.RopeType is "linear" or "dynamic")
        {
            node.Remove("rope_type");
            node["type"] = scaling.RopeType;
        }
        return node;
    }

    /// <summary>The keys of <paramref name="values"/> that differ from the type's defaults, with model_type.</summary>
    private static JsonObject Diff(string modelType, Dictionary<string, Family> families, JsonObject values)
    {
        var defaults = families[modelType].Defaults;
        var diff = new JsonObject { ["model_type"] = modelType };
        foreach (var (key, value) in values)
        {
            var fallback = key == "num_key_value_heads" && defaults[key] is null ? defaults["num_attention_heads"] : defaults[key];
            if (!defaults.ContainsKey(key) || !SameNumberOrValue(value, fallback)) diff[key] = value?.DeepClone();
        }
        return Sorted(diff);
    }

    /// <summary>Equal values, numbers compared by value (1e-05 written by Python equals 1E-05 written here).</summary>
    private static bool SameNumberOrValue(JsonNode? a, JsonNode? b) =>
        a is JsonValue va && b is JsonValue vb && va.GetValueKind() == JsonValueKind.Number && vb.GetValueKind() == JsonValueKind.Number
            ? Number(va) == Number(vb)
            : JsonNode.DeepEquals(a, b);

    private static double Number(JsonValue v) => double.Parse(v.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    private static JsonObject Sorted(JsonObject node)
    {
        var sorted = new JsonObject();
        foreach (var (key, value) in node.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            sorted[key] = value is JsonObject child ? Sorted(child) : value?.DeepClone();
        return sorted;
    }

    // ---- model families: defaults, keys read, keys that leave the computation unchanged, keys pinned to one value ----

    /// <summary>
    /// One `model_type`: transformers' defaults for the keys this project reads, keys that change nothing here
    /// (beyond <see cref="GenericInert"/>), and keys accepted only with one value.
    /// </summary>
    private sealed record Family(JsonObject Defaults, string[] Inert, (string Key, JsonNode? Value, string Why)[] Pinned)
    {
        /// <summary>Keys read when present and left unset otherwise (token ids: bookkeeping, not computation).</summary>
        public string[] ReadIfPresent { get; init; } = [];
    }

    private static JsonObject O(params (string Key, JsonNode? Value)[] entries)
    {
        var o = new JsonObject();
        foreach (var (k, v) in entries) o[k] = v;
        return o;
    }

    private static readonly string[] TokenIds = ["bos_token_id", "eos_token_id", "pad_token_id"];

    // pretraining_tp > 1 splits the same products into slices: the same result up to rounding.
    private static readonly string[] TextInert = ["use_cache", "attention_dropout", "pretraining_tp", "torch_dtype"];

    private static readonly Dictionary<string, Family> TextFamily = new()
    {
        // LlamaConfig: num_key_value_heads None means as many as the query heads (resolved in Resolve).
        ["llama"] = new(O(("vocab_size", 32000), ("hidden_size", 4096), ("intermediate_size", 11008), ("num_hidden_layers", 32),
                ("num_attention_heads", 32), ("num_key_value_heads", null), ("head_dim", null), ("hidden_act", "silu"),
                ("max_position_embeddings", 2048), ("rms_norm_eps", 1e-6), ("rope_theta", 10000.0), ("rope_scaling", null),
                ("tie_word_embeddings", false), ("attention_bias", false), ("mlp_bias", false),
                ("initializer_range", 0.02)),
            TextInert, []) { ReadIfPresent = TokenIds },
        // MistralConfig: its sliding window (4096 by default) only binds past that many positions; the context is
        // limited to it below, so the window never changes a result.
        ["mistral"] = new(O(("vocab_size", 32000), ("hidden_size", 4096), ("intermediate_size", 14336), ("num_hidden_layers", 32),
                ("num_attention_heads", 32), ("num_key_value_heads", 8), ("head_dim", null), ("hidden_act", "silu"),
                ("max_position_embeddings", 4096 * 32), ("rms_norm_eps", 1e-6), ("rope_theta", 10000.0), ("rope_scaling", null),
                ("tie_word_embeddings", false), ("attention_bias", false), ("mlp_bias", false),
                ("initializer_range", 0.02), ("sliding_window", 4096)),
            TextInert, []) { ReadIfPresent = TokenIds },
        // Qwen2Config: q/k/v biases always; sliding-window attention only when use_sliding_window is true.
        ["qwen2"] = new(O(("vocab_size", 151936), ("hidden_size", 4096), ("intermediate_size", 22016), ("num_hidden_layers", 32),
                ("num_attention_heads", 32), ("num_key_value_heads", 32), ("head_dim", null), ("hidden_act", "silu"),
                ("max_position_embeddings", 32768), ("rms_norm_eps", 1e-6), ("rope_theta", 10000.0), ("rope_scaling", null),
                ("tie_word_embeddings", false), ("initializer_range", 0.02)),
            [.. TextInert, "sliding_window", "max_window_layers"],
            [("use_sliding_window", false, "sliding-window attention is not implemented"),
             // This project's own files write the LLaMA bias flags for every type; Qwen2's biases are fixed by its architecture.
             ("attention_bias", false, "Qwen2 has q/k/v biases and no others"),
             ("mlp_bias", false, "Qwen2 has no MLP biases")]) { ReadIfPresent = TokenIds },
    };

    // This project writes every VisionConfig field whatever the architecture, and reads the other architecture's fields
    // back unchanged (they are never used): their defaults are the record's.
    private static (string, JsonNode?)[] ResNetOnlyDefaults()
    {
        var d = new VisionConfig();
        return [("layers", new JsonArray([.. d.Layers.Select(n => (JsonNode?)n)])), ("block", d.Block), ("width", d.Width)];
    }

    private static (string, JsonNode?)[] VitOnlyDefaults()
    {
        var d = new VisionConfig();
        return [("patch_size", d.PatchSize), ("hidden_size", d.HiddenSize), ("intermediate_size", d.IntermediateSize),
            ("num_hidden_layers", d.NumHiddenLayers), ("num_attention_heads", d.NumAttentionHeads),
            ("layer_norm_eps", d.LayerNormEps), ("hidden_act", d.HiddenAct)];
    }

    private static readonly Dictionary<string, Family> VisionFamily = new()
    {
        // CLIPVisionConfig: note quick_gelu and 3 channels, unlike this project's own gray towers.
        ["clip_vision_model"] = new(O([("hidden_size", 768), ("intermediate_size", 3072), ("num_hidden_layers", 12),
                ("num_attention_heads", 12), ("num_channels", 3), ("image_size", 224), ("patch_size", 32),
                ("hidden_act", "quick_gelu"), ("layer_norm_eps", 1e-5), .. ResNetOnlyDefaults()]),
            ["projection_dim", "attention_dropout", "dropout", "initializer_range", "initializer_factor", "torch_dtype"], []),
        // This project's torchvision-layout ResNet (not transformers' ResNetConfig, whose keys differ and are refused).
        ["resnet"] = new(O([("image_size", 224), ("num_channels", 1), .. ResNetOnlyDefaults(), .. VitOnlyDefaults()]),
            ["torch_dtype"], []),
        // EVA ViT-g/14 as BLIP-2 builds it (39 blocks, MLP int(1408 · 4.3637)), alone (MiniGPT-v2) or with the Q-Former
        // (MiniGPT-4 / XrayGPT; its qformer_config is required and validated by the record).
        ["eva_vit_g"] = new(O([.. EvaDefaults(), ("qformer_config", null)]), ["torch_dtype"], []),
        ["eva_vit_g_qformer"] = new(O([.. EvaDefaults(), ("qformer_config", null)]), ["torch_dtype"], []),
    };

    private static (string, JsonNode?)[] EvaDefaults() =>
        [("image_size", 224), ("num_channels", 3), ("patch_size", 14), ("hidden_size", 1408), ("intermediate_size", 6144),
         ("num_hidden_layers", 39), ("num_attention_heads", 16), ("layer_norm_eps", 1e-6), ("hidden_act", "gelu"),
         .. ResNetOnlyDefaults()];

    private static readonly Dictionary<string, Family> ComposedFamily = new()
    {
        // This project's own composed config; its files are written in full, so these defaults are the record's.
        ["xrayvl"] = new(O(("projector_type", "mlp2x_gelu"), ("projector_hidden_act", "gelu"), ("vision_feature_layer", -1),
                ("vision_feature_select_strategy", "default"), ("image_token_index", 0), ("freeze_vision", false),
                ("finding_hint", false)),
            ["torch_dtype"], []),
        // LlavaConfig: the projector is always linear_1 → act → linear_2 (mlp2x), with biases.
        ["llava"] = new(O(("image_token_index", 32000), ("projector_hidden_act", "gelu"), ("vision_feature_layer", -2),
                ("vision_feature_select_strategy", "default")),
            ["ignore_index", "vocab_size", "image_seq_length", "torch_dtype"],
            [("multimodal_projector_bias", true, "a projector without biases is not implemented"),
             ("projector_type", "mlp2x_gelu", "LLaVA's projector is linear → activation → linear")]),
    };

    /// <summary>
    /// PretrainedConfig's own keys, present in every full `config.json`: generation settings (used only by
    /// `generate`, which takes its settings from the caller here), output switches and bookkeeping.
    /// </summary>
    private static readonly HashSet<string> GenericInert =
    [
        "architectures", "transformers_version", "_name_or_path", "_commit_hash", "_attn_implementation", "_attn_implementation_autoset",
        "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
        "chunk_size_feed_forward", "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
        "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
        "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
        "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "finetuning_task", "id2label",
        "label2id", "tokenizer_class", "prefix", "sep_token_id", "decoder_start_token_id", "task_specific_params",
        "problem_type", "vocab_size_", "model_type", "torch_dtype", "dtype",
        // Token ids of the composed and vision configs (the language model reads its own).
        "bos_token_id", "eos_token_id", "pad_token_id",
        // Tying is the language model's (its text_config); a top-level copy in composed configs changes nothing.
        "tie_word_embeddings",
    ];

    /// <summary>Generic keys whose non-default value would change the computation.</summary>
    private static readonly (string Key, JsonNode? Value, string Why)[] GenericPinned =
    [
        ("pruned_heads", new JsonObject(), "pruned attention heads are not implemented"),
        ("is_encoder_decoder", false, "encoder-decoder models are not supported"),
        ("add_cross_attention", false, "cross-attention layers are not implemented"),
        ("is_decoder", false, "a decoder flag on this part is not supported"),
        ("tie_encoder_decoder", false, "encoder-decoder models are not supported"),
        ("cross_attention_hidden_size", null, "cross-attention layers are not implemented"),
    ];

    private static string TypeOf(JsonObject node, string? fallback)
    {
        var value = node["model_type"];
        if (value is null)
            return fallback ?? throw new XrayVLException("config.json has no model_type (expected xrayvl or llava for a vision-language model)");
        return value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>()
            : throw new XrayVLException($"model_type must be a string, got {value.ToJsonString()}");
    }

    /// <summary>A nested config object, its model_type defaulting as the parent config's class defaults it.</summary>
    private static JsonObject Child(JsonObject parent, string key, string defaultType)
    {
        var child = parent[key];
        var result = child switch
        {
            null => new JsonObject(),
            JsonObject o => (JsonObject)o.DeepClone(),
            _ => throw new XrayVLException($"{key} must be an object, got {child.ToJsonString()}"),
        };
        if (result["model_type"] is null) result["model_type"] = defaultType;
        return result;
    }

    /// <summary>
    /// The family's defaults overlaid with the node's keys, after checking every key; model_type filled in, inert keys
    /// dropped. Errors name the key and the model type.
    /// </summary>
    private static JsonObject Resolve(JsonObject node, string defaultType, Dictionary<string, Family> families)
    {
        string type = TypeOf(node, defaultType);
        if (!families.TryGetValue(type, out var family))
            throw new XrayVLException($"model_type '{type}' is not supported here (supported: {string.Join(", ", families.Keys)})");
        var merged = (JsonObject)family.Defaults.DeepClone();
        foreach (var (key, value) in node)
        {
            if (key == "model_type" || (key is "vision_config" or "text_config" && families == ComposedFamily)) continue;
            if (family.Defaults.ContainsKey(key) || family.ReadIfPresent.Contains(key))
            {
                merged[key] = value?.DeepClone();
                continue;
            }
            var pinned = family.Pinned.Concat(GenericPinned).Where(p => p.Key == key).ToArray();
            if (pinned.Length > 0)
            {
                if (!Same(value, pinned[0].Value))
                    throw new XrayVLException($"{type} config key '{key}' = {Show(value)} is not supported: {pinned[0].Why}");
                continue;
            }
            if (family.Inert.Contains(key) || GenericInert.Contains(key)) continue;
            throw new XrayVLException(
                $"{type} config key '{key}' is not understood by XrayVL and could change the computation; refusing rather than ignoring it");
        }
        merged["model_type"] = type;
        if (families == TextFamily) ResolveText(merged, type);
        return merged;
    }

    private static void ResolveText(JsonObject merged, string type)
    {
        // Some files list several end tokens; the config keeps the first (generation stops on the tokenizer's).
        if (merged["eos_token_id"] is JsonArray ends) merged["eos_token_id"] = ends.FirstOrDefault()?.DeepClone();
        if (merged["num_key_value_heads"] is null) merged["num_key_value_heads"] = merged["num_attention_heads"]?.DeepClone();
        if (merged["rope_scaling"] is JsonObject scaling) merged["rope_scaling"] = ReadRopeScaling(scaling, type);
        else if (merged["rope_scaling"] is not null)
            throw new XrayVLException($"{type} config key 'rope_scaling' must be an object or null, got {Show(merged["rope_scaling"])}");
        if (type == "mistral" && merged["sliding_window"] is JsonValue window && window.TryGetValue(out int w) && w > 0)
        {
            // Limiting the context to the window keeps every query's keys inside it: the window never binds.
            int maxPositions = merged["max_position_embeddings"]!.GetValue<int>();
            merged["max_position_embeddings"] = Math.Min(maxPositions, w);
        }
        merged.Remove("sliding_window");
    }

    /// <summary>
    /// transformers' `rope_scaling`: "type" (older files) or "rope_type" names the kind; the keys each kind reads are
    /// checked, anything else refused.
    /// </summary>
    private static JsonObject ReadRopeScaling(JsonObject scaling, string modelType)
    {
        var result = new JsonObject();
        string? kind = (scaling["rope_type"] ?? scaling["type"])?.GetValue<string>();
        string[] allowed = kind switch
        {
            "default" => [],
            "linear" => ["factor"],
            "dynamic" => ["factor", "original_max_position_embeddings"],
            "llama3" => ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
            "yarn" => ["factor", "attention_factor", "beta_fast", "beta_slow", "original_max_position_embeddings"],
            null => throw new XrayVLException($"{modelType} config 'rope_scaling' has no type (linear, dynamic, llama3, yarn)"),
            _ => throw new XrayVLException($"{modelType} config rope_scaling type '{kind}' is not supported (linear, dynamic, llama3, yarn)"),
        };
        result["rope_type"] = kind;
        foreach (var (key, value) in scaling)
        {
            if (key is "type" or "rope_type") continue;
            if (!allowed.Contains(key))
                throw new XrayVLException($"{modelType} config rope_scaling key '{key}' is not read for type '{kind}'; refusing rather than ignoring it");
            if (value is not null) result[key] = value.DeepClone();
        }
        string[] required = kind switch
        {
            "linear" or "dynamic" or "yarn" => ["factor"],
            "llama3" => ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
            _ => [],
        };
        foreach (string key in required)
            if (result[key] is null) throw new XrayVLException($"{modelType} config rope_scaling of type '{kind}' needs '{key}'");
        return result;
    }

    private static bool Same(JsonNode? a, JsonNode? b) => JsonNode.DeepEquals(a, b);

    /// <summary>A value for an error message, cut short: config values can be long lists.</summary>
    private static string Show(JsonNode? value)
    {
        string text = value?.ToJsonString() ?? "null";
        return text.Length <= 60 ? text : text[..57] + "...";
    }

    private static T Deserialize<T>(JsonObject node) where T : class
    {
        try { return node.Deserialize<T>(Json.Options) ?? throw new XrayVLException("empty config"); }
        catch (JsonException e) { throw new XrayVLException($"not a valid config ({e.Message})"); }
        catch (InvalidOperationException e) { throw new XrayVLException($"not a valid config ({e.Message})"); }
    }
}
