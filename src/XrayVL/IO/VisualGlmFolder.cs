using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>What <see cref="VisualGlmFolder.Import"/> does with the LoRA matrices, where it finds the tokenizer, and what it reports.</summary>
public sealed record XrayGlmImportOptions
{
    /// <summary>Merge XrayGLM's LoRA into the weights (default), or keep the base weights and write adapter/ (PEFT-style).</summary>
    public SatLoraHandling Lora { get; init; } = SatLoraHandling.Merge;
    /// <summary>A VisualGLM-6B SAT folder whose weights fill in what the checkpoint lacks (and which may hold ice_text.model).</summary>
    public string? BaseDirectory { get; init; }
    /// <summary>ice_text.model; by default looked for in the checkpoint folder, then in the base folder.</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>The tokenizer's id offset; by default tokenizer_config.json's num_image_tokens beside the model file, else 0.</summary>
    public int? NumImageTokens { get; init; }
}

public sealed record XrayGlmImportResult(int Tensors, long Bytes, IReadOnlyList<string> LoraLayers, int FromBase, string Tokenizer);

/// <summary>A VisualGLM model folder loaded for inference: the model, its ChatGLM tokenizer and its image preprocessing.</summary>
public sealed record LoadedVisualGlm(VisualGlmModel Model, ChatGlmTokenizer Tokenizer, PreprocessConfig Preprocess, string Directory) : IDisposable
{
    /// <summary>The folder's name: the model id reports and the API give.</summary>
    public string Name => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(Directory)));

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// XrayVL's VisualGLM model folder: <c>config.json</c> (<see cref="VisualGlmConfig"/>: model_type "visualglm", text_config,
/// vision_config, qformer_config, image_length, prompt_format), <c>model.safetensors</c> (VisualGlmModel's keys),
/// <c>ice_text.model</c> + <c>tokenizer_config.json</c> (num_image_tokens), <c>preprocessor_config.json</c>, and
/// optionally <c>adapter/</c> (adapter_config.json + adapter_model.safetensors, PEFT's layout) holding XrayGLM's LoRA
/// unmerged. <see cref="Import"/> writes one from a SAT checkpoint; <see cref="Load"/> reads it.
/// </summary>
public static class VisualGlmFolder
{
    public const string ModelType = "visualglm";
    public const string AdapterFolder = "adapter";

    /// <summary>True when the folder's config.json names model_type "visualglm".</summary>
    public static bool IsVisualGlm(string directory)
    {
        string path = Path.Combine(directory, Checkpoint.ConfigFileName);
        if (!File.Exists(path)) return false;
        // A config that cannot be read is not claimed here: the other loader reports what is wrong with it.
        try
        {
            return Json.ReadObject(path, "model config")["model_type"] is JsonValue type && type.TryGetValue(out string? name) && name == ModelType;
        }
        catch (XrayVLException) { return false; }
    }

    /// <summary>
    /// Converts an XrayGLM (or VisualGLM) SAT checkpoint folder into an XrayVL model folder at <paramref name="outDir"/>
    /// (replaced when it exists). The file is read tensor by tensor, renamed, merged or split, and written at once, so
    /// memory holds one tensor (and one LoRA layer) at a time. <paramref name="progress"/> gets (bytes read, total bytes).
    /// </summary>
    public static XrayGlmImportResult Import(string checkpointDir, string outDir, XrayGlmImportOptions options, IProgress<(long Done, long Total)>? progress = null)
    {
        var checkpoint = SatCheckpoint.Open(checkpointDir);
        var config = checkpoint.VisualGlmConfig();
        var baseCheckpoint = options.BaseDirectory is { } b ? SatCheckpoint.Open(b) : null;
        if (Path.GetFullPath(outDir).TrimEnd('/') == Path.GetFullPath(checkpointDir).TrimEnd('/'))
            throw new XrayVLException($"{outDir}: the output folder is the checkpoint folder itself; choose another");

        // The tokenizer first: a checkpoint is of no use without it, so a missing one fails before minutes of conversion.
        string tokenizerPath = options.TokenizerPath
            ?? new[] { checkpointDir, options.BaseDirectory }.Where(d => d is not null).Select(d => Path.Combine(d!, ChatGlmTokenizer.FileName)).FirstOrDefault(File.Exists)
            ?? throw new XrayVLException($"no {ChatGlmTokenizer.FileName} in {checkpointDir}{(options.BaseDirectory is null ? "" : " or " + options.BaseDirectory)}: " +
                                         "pass --tokenizer FILE (ice_text.model from huggingface.co/THUDM/chatglm-6b or THUDM/visualglm-6b)");
        int numImageTokens = options.NumImageTokens ?? ReadNumImageTokens(Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!);
        var tokenizer = ChatGlmTokenizer.Load(tokenizerPath, numImageTokens);
        CheckTokenizer(tokenizer, config.TextConfig, tokenizerPath);

        string tmp = Path.GetFullPath(outDir).TrimEnd('/') + ".tmp-" + Guid.NewGuid().ToString("N")[..12];
        System.IO.Directory.CreateDirectory(tmp);
        try
        {
            var loraLayers = new List<string>();
            int tensors = 0, fromBase = 0;
            long bytes;
            using (var file = TorchCheckpoint.Open(checkpoint.ModelStatesPath))
            using (var baseFile = baseCheckpoint is null ? null : TorchCheckpoint.Open(baseCheckpoint.ModelStatesPath))
            using (var model = new SafeTensorsStreamWriter(Path.Combine(tmp, Checkpoint.WeightsFileName)))
            using (var adapter = options.Lora == SatLoraHandling.Adapter ? new SafeTensorsStreamWriter(Path.Combine(tmp, AdapterFolder, Lora.WeightsFileName)) : null)
            {
                var entries = file.StateDictEntries("module");
                var present = entries.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
                var fill = baseFile?.StateDictEntries("module").Where(e => !present.Contains(e.Name)).ToList() ?? [];
                fromBase = fill.Count;
                long total = entries.Concat(fill).Sum(e => e.Tensor.Shape.Aggregate(1L, (n, d) => n * d) * SafeTensors.ElementSize(e.Tensor.DType));
                long done = 0;
                var source = file.ReadStateDict("module").Concat(fill.Select(e => (e.Name, baseFile!.ReadTensor(e.Tensor))))
                    .Select(e =>
                    {
                        done += e.Item2.numel() * e.Item2.element_size();
                        progress?.Report((done, total));
                        return e;
                    });
                foreach (var (name, tensor) in SatCheckpoint.ToVisualGlm(source, config, options.Lora, loraLayers))
                    using (tensor)
                    {
                        if (name.StartsWith(SatCheckpoint.AdapterKeyPrefix, StringComparison.Ordinal)) adapter!.Add(name, tensor);
                        else model.Add(name, tensor);
                        tensors++;
                    }
                bytes = model.DataBytes + (adapter?.DataBytes ?? 0);
                var metadata = new Dictionary<string, string> { ["format"] = "pt", ["source"] = $"SAT checkpoint, iteration {checkpoint.Iteration}" };
                model.Commit(metadata);
                adapter?.Commit(metadata);
            }

            if (options.Lora == SatLoraHandling.Adapter)
            {
                if (loraLayers.Count == 0) throw new XrayVLException($"{checkpointDir}: no LoRA matrices to keep as an adapter (use the default, merged)");
                int rank = checkpoint.LoraRank ?? throw new XrayVLException($"{checkpointDir}: model_config.json names no lora_rank");
                // One PEFT rank for q/k/v (3 partitions of `rank`) and dense (zero-padded), scale 1: see SatCheckpoint.PeftPair.
                var adapterConfig = new LoraConfig
                {
                    R = 3 * rank,
                    LoraAlpha = 3 * rank,
                    TargetModules = LoraTargetModules.Matching(string.Join("|", loraLayers.Select(System.Text.RegularExpressions.Regex.Escape))),
                    BaseModelNameOrPath = "..",
                    InferenceMode = true,
                };
                AtomicFile.WriteAllText(Path.Combine(tmp, AdapterFolder, Lora.ConfigFileName), JsonSerializer.Serialize(adapterConfig.Validate(), Json.Options) + "\n");
            }
            AtomicFile.WriteAllText(Path.Combine(tmp, Checkpoint.ConfigFileName), JsonSerializer.Serialize(config, Json.Options) + "\n");
            File.Copy(tokenizerPath, Path.Combine(tmp, ChatGlmTokenizer.FileName));
            AtomicFile.WriteAllText(Path.Combine(tmp, HfFiles.TokenizerConfigJson), JsonSerializer.Serialize(new JsonObject
            {
                ["tokenizer_class"] = "ChatGLMTokenizer",
                ["num_image_tokens"] = numImageTokens,
                ["bos_token"] = "<sop>",
                ["eos_token"] = "<eop>",
                ["mask_token"] = "[MASK]",
                ["gmask_token"] = "[gMASK]",
                ["pad_token"] = "<pad>",
            }, Json.Options) + "\n");
            AtomicFile.WriteAllText(Path.Combine(tmp, Checkpoint.PreprocessorFileName), JsonSerializer.Serialize(PreprocessConfig.Clip(config.VisionConfig.ImageSize), Json.Options) + "\n");
            AtomicFile.ReplaceDirectory(tmp, outDir);
            return new XrayGlmImportResult(tensors, bytes, loraLayers, fromBase, tokenizerPath);
        }
        catch
        {
            if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// Loads a VisualGLM model folder with weights in <paramref name="dtype"/>: the model is created in that dtype and
    /// filled one tensor at a time (peak: the model plus its largest tensor). An adapter/ folder is attached and merged.
    /// </summary>
    public static LoadedVisualGlm Load(string directory, ScalarType dtype = ScalarType.Float32) => Load(directory, dtype, LinearQuantization.None, null);

    /// <summary>
    /// Loads a VisualGLM model folder as <paramref name="format"/> (`--dtype`): fp32 or bf16 as above; int8 and int4 load in
    /// bf16 (an adapter merged there), then store each ChatGLM linear layer as Q8_0 / Q4_0, releasing its bf16 weight as
    /// soon as the quantized copy exists. The peak is therefore the bf16 model (about 15.6 GB for ChatGLM-6B + EVA-CLIP),
    /// and what stays is the quantized one. The vision side stays in bf16.
    /// </summary>
    /// <param name="progress">Gets (bytes read, bytes in all) after each tensor.</param>
    public static LoadedVisualGlm Load(string directory, WeightFormat format, Action<long, long>? progress = null) =>
        Load(directory, format.ComputeDType(), format.LinearQuantization(), progress);

    private static LoadedVisualGlm Load(string directory, ScalarType dtype, LinearQuantization quantization, Action<long, long>? progress = null)
    {
        string configPath = Path.Combine(directory, Checkpoint.ConfigFileName);
        if (!File.Exists(configPath)) throw new XrayVLException($"{directory}: no {Checkpoint.ConfigFileName}: not a model folder");
        var config = ConfigFile.Read<VisualGlmConfig>(configPath).Validate();
        string weights = Path.Combine(directory, Checkpoint.WeightsFileName);
        if (!File.Exists(weights)) throw new XrayVLException($"{directory}: no {Checkpoint.WeightsFileName}");
        var tokenizer = ChatGlmTokenizer.Load(directory, ReadNumImageTokens(directory));
        CheckTokenizer(tokenizer, config.TextConfig, Path.Combine(directory, ChatGlmTokenizer.FileName));
        string preprocessPath = Path.Combine(directory, Checkpoint.PreprocessorFileName);
        var preprocess = File.Exists(preprocessPath) ? ConfigFile.Read<PreprocessConfig>(preprocessPath).Validate() : PreprocessConfig.Clip(config.VisionConfig.ImageSize);
        if (preprocess.ImageSize != config.VisionConfig.ImageSize)
            throw new XrayVLException($"{preprocessPath}: image_size {preprocess.ImageSize} does not fit the vision encoder's {config.VisionConfig.ImageSize}");

        var model = VisualGlmModel.Create(config, dtype);
        try
        {
            var stored = SafeTensors.ReadHeader(weights).Tensors;
            long total = stored.Sum(t => t.ByteLength), done = 0;
            ModuleWeights.StreamInto(model, stored.Select(t =>
            {
                var tensor = SafeTensors.Load(weights, [t.Name])[t.Name];
                progress?.Invoke(done += t.ByteLength, total);
                return (t.Name, tensor);
            }), weights);
            string adapter = Path.Combine(directory, AdapterFolder);
            if (System.IO.Directory.Exists(adapter))
            {
                Lora.LoadAdapter(model, adapter);
                Lora.MergeAndUnload(model);
                foreach (var p in model.parameters()) p.requires_grad = false;
            }
            WeightFormats.QuantizeLinears(model.LanguageModel, quantization);
            model.eval();
            return new LoadedVisualGlm(model, tokenizer, preprocess, directory);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    private static int ReadNumImageTokens(string directory)
    {
        string path = Path.Combine(directory, HfFiles.TokenizerConfigJson);
        if (!File.Exists(path)) return 0;
        var node = Json.ReadObject(path, "tokenizer config")["num_image_tokens"];
        if (node is null) return 0;
        return node is JsonValue value && value.TryGetValue(out int count) && count >= 0 ? count
            : throw new XrayVLException($"{path}: num_image_tokens must be a whole number ≥ 0, got {node.ToJsonString()}");
    }

    /// <summary>The tokenizer's special ids must be the ones the model was trained with (SAT's model_config.json names them).</summary>
    private static void CheckTokenizer(ChatGlmTokenizer tokenizer, GlmConfig text, string path)
    {
        if (tokenizer.GmaskId != text.GmaskTokenId || tokenizer.SopId != text.BosTokenId || tokenizer.MaskId != text.MaskTokenId || tokenizer.EopId != text.EopTokenId)
            throw new XrayVLException($"{path}: [gMASK] <sop> [MASK] <eop> are {tokenizer.GmaskId} {tokenizer.SopId} {tokenizer.MaskId} {tokenizer.EopId} " +
                                      $"but the model's are {text.GmaskTokenId} {text.BosTokenId} {text.MaskTokenId} {text.EopTokenId} (wrong tokenizer file, or num_image_tokens {tokenizer.NumImageTokens} is not the model's)");
        if (tokenizer.VocabSize > text.VocabSize)
            throw new XrayVLException($"{path}: {tokenizer.VocabSize} token ids do not fit the model's vocabulary of {text.VocabSize}");
    }
}
