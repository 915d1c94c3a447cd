using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// Writes a model as a transformers `LlavaForConditionalGeneration` folder (the 4.40 key layout, which later versions
/// convert on load): config.json as `save_pretrained` writes it, model.safetensors, the tokenizer files with their chat
/// template, a CLIPImageProcessor-style preprocessor_config.json and generation_config.json.
/// Expressible: a 3-channel CLIP-layout ViT, a "mlp2x_gelu" projector (LLaVA's own) or a "linear" one (written as
/// linear_1 → identity activation → an identity linear_2, exactly the same map), a llama or qwen2 text model.
/// </summary>
public static class HfExport
{
    /// <summary>Tokenizer files copied as they are when the model folder has them.</summary>
    private static readonly string[] TokenizerFiles =
        ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json"];

    /// <summary>Null when transformers' LLaVA can express the model, else one line saying what it cannot.</summary>
    public static string? WhyNotLlava(VisionLanguageConfig config)
    {
        var v = config.VisionConfig;
        if (!v.IsVit) return $"the vision encoder is a ResNet; transformers' LLaVA takes a CLIP-layout ViT";
        if (v.NumChannels != 3)
            return $"the vision encoder takes {v.NumChannels}-channel images; transformers' CLIP vision tower takes 3 channels";
        if (config.ProjectorType is not ("mlp2x_gelu" or "linear"))
            return $"projector '{config.ProjectorType}' merges adjacent image tokens; LLaVA's projector maps each token on its own";
        if (config.TextConfig.ModelType is not ("llama" or "qwen2"))
            return $"text model type '{config.TextConfig.ModelType}' is not exported (llama, qwen2)";
        if (config.TextConfig.ModelType == "llama" && config.TextConfig.MlpBias)
            return "the text model has MLP biases, which transformers 4.40's LlamaConfig cannot express";
        return null;
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="outDir"/> (replaced atomically). Tokenizer files are copied from
    /// <paramref name="tokenizerDir"/> when given.
    /// </summary>
    public static void WriteLlava(VisionLanguageModel model, string outDir, string? tokenizerDir, PreprocessConfig? preprocess)
    {
        var config = model.Config;
        if (WhyNotLlava(config) is { } why) throw new XrayVLException($"cannot export as hf-llava: {why}");
        string dtype = model.LanguageModel.DType switch
        {
            ScalarType.Float32 => "float32",
            ScalarType.BFloat16 => "bfloat16",
            ScalarType.Float16 => "float16",
            var other => throw new XrayVLException($"cannot export weights of dtype {other}"),
        };
        var exported = config;
        using var scope = NewDisposeScope();
        var weights = new Dictionary<string, Tensor>();
        foreach (var (name, tensor) in model.state_dict())
        {
            if (name.Contains(".lora_", StringComparison.Ordinal))
                throw new XrayVLException("cannot export as hf-llava: the model carries LoRA adapters; merge them first");
            weights[name] = tensor;
        }
        if (config.ProjectorType == "linear")
        {
            // linear_1 → identity → linear_2 = I: the same map in LLaVA's two-linear projector.
            long d = config.TextConfig.HiddenSize;
            weights["multi_modal_projector.linear_2.weight"] = eye(d, dtype: model.LanguageModel.DType);
            weights["multi_modal_projector.linear_2.bias"] = zeros(d, dtype: model.LanguageModel.DType);
            exported = config with { ProjectorType = "mlp2x_gelu", ProjectorHiddenAct = "linear" };
        }
        // A tied head is written too: whichever way a reader ties it, the head is the embedding matrix.
        if (config.TextConfig.TieWordEmbeddings)
            weights["language_model.lm_head.weight"] = weights["language_model.model.embed_tokens.weight"];

        string full = Path.GetFullPath(Path.TrimEndingDirectorySeparator(outDir));
        string tmp = full + ".exporting-" + Environment.ProcessId;
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        Directory.CreateDirectory(tmp);
        try
        {
            AtomicFile.WriteAllText(Path.Combine(tmp, Checkpoint.ConfigFileName),
                HfConfigs.WriteLlava(exported, dtype).ToJsonString(Json.Options) + "\n");
            SafeTensors.Save(Path.Combine(tmp, Checkpoint.WeightsFileName), weights, new Dictionary<string, string> { ["format"] = "pt" });
            if (tokenizerDir != null)
                foreach (string file in TokenizerFiles.Where(f => File.Exists(Path.Combine(tokenizerDir, f))))
                    File.Copy(Path.Combine(tokenizerDir, file), Path.Combine(tmp, file));
            WriteImageProcessor(tmp, preprocess ?? PreprocessConfig.Clip(config.VisionConfig.ImageSize));
            var generation = new JsonObject { ["_from_model_config"] = true };
            if (config.TextConfig.BosTokenId is int bos) generation["bos_token_id"] = bos;
            if (config.TextConfig.EosTokenId is int eos) generation["eos_token_id"] = eos;
            if (config.TextConfig.PadTokenId is int pad) generation["pad_token_id"] = pad;
            generation["transformers_version"] = HfConfigs.TransformersVersion;
            AtomicFile.WriteAllText(Path.Combine(tmp, "generation_config.json"), generation.ToJsonString(Json.Options) + "\n");
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { /* best effort; the target is untouched */ }
            throw;
        }
        AtomicFile.ReplaceDirectory(tmp, full);
    }

    /// <summary>
    /// A CLIPImageProcessor config with the model's statistics. transformers resizes the short side and centre-crops
    /// where this project pads to a square first: send square images (or pad them) for identical inputs.
    /// </summary>
    private static void WriteImageProcessor(string dir, PreprocessConfig preprocess)
    {
        float[] PerChannel(float[] values) => values.Length == 3 ? values : [values[0], values[0], values[0]];
        var node = new JsonObject
        {
            ["crop_size"] = new JsonObject { ["height"] = preprocess.ImageSize, ["width"] = preprocess.ImageSize },
            ["do_center_crop"] = true,
            ["do_convert_rgb"] = true,
            ["do_normalize"] = true,
            ["do_rescale"] = true,
            ["do_resize"] = true,
            ["image_mean"] = new JsonArray([.. PerChannel(preprocess.Mean).Select(m => (JsonNode?)m)]),
            ["image_processor_type"] = "CLIPImageProcessor",
            ["image_std"] = new JsonArray([.. PerChannel(preprocess.Std).Select(m => (JsonNode?)m)]),
            ["resample"] = 2,                               // PIL bilinear, the filter this project resizes with
            ["rescale_factor"] = 1.0 / 255,
            ["size"] = new JsonObject { ["shortest_edge"] = preprocess.ImageSize },
        };
        AtomicFile.WriteAllText(Path.Combine(dir, Checkpoint.PreprocessorFileName), node.ToJsonString(Json.Options) + "\n");
    }
}
