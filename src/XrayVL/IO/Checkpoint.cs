using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Modeling;
using XrayVL.Text;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>A model ready to use: weights, tokenizer, image preprocessing, and where it came from.</summary>
public sealed record LoadedModel(VisionLanguageModel Model, XrayTokenizer Tokenizer, PreprocessConfig Preprocess, string Directory)
{
    public VisionLanguageConfig Config => Model.Config;
    public string Name => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(Directory)));
}

/// <summary>
/// Checkpoint folders in the Hugging Face layout:
/// config.json (the composed config) + model.safetensors (or shards with model.safetensors.index.json; or PyTorch's
/// pytorch_model.bin / pytorch_model.bin.index.json)
/// + tokenizer files + preprocessor_config.json. Folders of a plain HF LLaMA/Qwen2 language model or a CLIP vision
/// tower load on their own too, so pretrained parts can be composed into a new vision-language model.
/// </summary>
public static class Checkpoint
{
    public const string ConfigFileName = "config.json";
    public const string WeightsFileName = "model.safetensors";
    public const string WeightsIndexFileName = "model.safetensors.index.json";
    public const string TorchWeightsFileName = "pytorch_model.bin";
    public const string TorchWeightsIndexFileName = "pytorch_model.bin.index.json";
    public const string PreprocessorFileName = "preprocessor_config.json";

    /// <summary>
    /// Writes the folder atomically: everything goes to a sibling temporary folder, which then replaces <paramref name="dir"/>.
    /// A crash mid-save leaves the previous checkpoint intact.
    /// </summary>
    public static void Save(string dir, VisionLanguageModel model, XrayTokenizer tokenizer, PreprocessConfig preprocess,
        IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(dir, model.Config, model.state_dict(), tokenizer, preprocess, metadata);

    /// <summary>
    /// <see cref="Save(string, VisionLanguageModel, XrayTokenizer, PreprocessConfig, IReadOnlyDictionary{string, string}?)"/>
    /// with the weights given as a state dict (e.g. LoRA merged on the fly, adapter keys left out).
    /// <paramref name="writeExtra"/> may add files to the temporary folder before it replaces <paramref name="dir"/>, so that
    /// they appear together with the model or not at all (the trainer's optimizer and trainer state).
    /// </summary>
    public static void Save(string dir, VisionLanguageConfig config, IReadOnlyDictionary<string, Tensor> weights,
        XrayTokenizer tokenizer, PreprocessConfig preprocess, IReadOnlyDictionary<string, string>? metadata = null,
        Action<string>? writeExtra = null)
    {
        string full = Path.GetFullPath(Path.TrimEndingDirectorySeparator(dir));
        string tmp = full + ".saving-" + Environment.ProcessId;
        if (System.IO.Directory.Exists(tmp)) System.IO.Directory.Delete(tmp, recursive: true);
        System.IO.Directory.CreateDirectory(tmp);
        try
        {
            ConfigFile.Write(Path.Combine(tmp, ConfigFileName), config);
            var meta = new Dictionary<string, string> { ["format"] = "pt" };
            if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
            SafeTensors.Save(Path.Combine(tmp, WeightsFileName), weights, meta);
            tokenizer.Save(tmp);
            ConfigFile.Write(Path.Combine(tmp, PreprocessorFileName), preprocess);
            writeExtra?.Invoke(tmp);
        }
        catch
        {
            try { System.IO.Directory.Delete(tmp, recursive: true); } catch (IOException) { /* best effort; the target is untouched */ }
            throw;
        }
        AtomicFile.ReplaceDirectory(tmp, full);
    }

    /// <summary>
    /// Loads a composed model folder with its tokenizer and preprocessing: one written by <see cref="Save"/>, or a
    /// transformers LLaVA folder (either key layout; see <see cref="LoadModel"/>).
    /// </summary>
    public static LoadedModel Load(string dir, ScalarType? dtype = null) => Load(dir, LoadModel(dir, dtype));

    /// <summary>
    /// The folder's tokenizer and preprocessing around <paramref name="model"/>, already loaded from it (e.g. straight into
    /// a quantized format by <see cref="ModelLoading"/>); the model is disposed when they do not fit it.
    /// </summary>
    public static LoadedModel Load(string dir, VisionLanguageModel model)
    {
        try
        {
            var (tokenizer, preprocess) = ReadCompanions(dir, model.Config);
            return new LoadedModel(model, tokenizer, preprocess, dir);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The folder's tokenizer and preprocessing, checked against <paramref name="config"/> (vocabulary size, image token,
    /// image size and channels). Needs no weights, so a loader can refuse a bad folder before reading gigabytes.
    /// </summary>
    public static (XrayTokenizer Tokenizer, PreprocessConfig Preprocess) ReadCompanions(string dir, VisionLanguageConfig config)
    {
        var tokenizer = XrayTokenizer.Load(dir);
        // A seed prompt format feeds the model only the tokenizer files' own ids, never the project's appended specials.
        int embedded = tokenizer.PromptFormat is null ? tokenizer.VocabSize : tokenizer.FileVocabSize;
        if (embedded > config.TextConfig.VocabSize)
            throw new XrayVLException($"{dir}: tokenizer has {embedded} tokens but the model's vocab_size is {config.TextConfig.VocabSize}");
        if (tokenizer.ImageId != config.ImageTokenIndex)
            throw new XrayVLException($"{dir}: image token is {tokenizer.ImageId} in the tokenizer but {config.ImageTokenIndex} in config.json");
        string preprocessPath = Path.Combine(dir, PreprocessorFileName);
        var preprocess = File.Exists(preprocessPath)
            ? ReadPreprocessConfig(preprocessPath, config.VisionConfig)
            : DefaultPreprocess(config.VisionConfig);
        // The encoder's positions are sized for one image size; gray input is repeated to 3 channels, not the reverse.
        if (preprocess.ImageSize != config.VisionConfig.ImageSize || (preprocess.Channels == 3 && config.VisionConfig.NumChannels == 1))
            throw new XrayVLException($"{preprocessPath}: images of {preprocess.ImageSize} px × {preprocess.Channels} channels do not fit the " +
                                      $"vision encoder ({config.VisionConfig.ImageSize} px × {config.VisionConfig.NumChannels} channels)");
        return (tokenizer, preprocess);
    }

    /// <summary>
    /// The weights and config of a composed model folder, without tokenizer: this project's `xrayvl` folders and
    /// transformers' `LlavaForConditionalGeneration` folders as `save_pretrained` writes them, in the 4.40 key layout
    /// (`vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.weight`) or the
    /// one later versions write (`model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
    /// `lm_head.weight`).
    /// </summary>
    public static VisionLanguageModel LoadModel(string dir, ScalarType? dtype = null)
    {
        RequireFolder(dir, "model");
        var config = ConfigFile.Read<VisionLanguageConfig>(Path.Combine(dir, ConfigFileName));
        var model = new VisionLanguageModel(config);
        try
        {
            var tensors = HfLayouts.ToModuleKeys(ReadWeights(dir));
            // A tied head reuses the embeddings; a stored copy of it has no place in the model.
            if (config.TextConfig.TieWordEmbeddings && tensors.Remove("language_model.lm_head.weight", out var head)) head.Dispose();
            LoadInto(dir, model, tensors, prefix: "");
            if (dtype is { } t) model.to(t);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// preprocessor_config.json in this project's form ({image_size, channels, mean, std, pad_value}) or as transformers'
    /// CLIPImageProcessor writes it (image_mean, image_std, crop_size): the latter becomes pad-to-square, resize to the
    /// crop size, and CLIP's statistics per channel.
    /// </summary>
    private static PreprocessConfig ReadPreprocessConfig(string path, VisionConfig vision)
    {
        var node = HfConfigs.ParseFile(path);
        if (node["image_mean"] is null) return ConfigFile.Read<PreprocessConfig>(path);
        try
        {
            float[] mean = node["image_mean"]!.Deserialize<float[]>() ?? [];
            float[] std = node["image_std"]?.Deserialize<float[]>() ?? [];
            int size = node["crop_size"] switch
            {
                JsonObject crop => crop["height"]?.GetValue<int>() ?? vision.ImageSize,
                JsonValue v => v.GetValue<int>(),
                _ => vision.ImageSize,
            };
            return new PreprocessConfig { ImageSize = size, Channels = mean.Length == 3 ? 3 : 1, Mean = mean, Std = std }.Validate();
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new XrayVLException($"{path}: not a valid image processor config ({e.Message})");
        }
        catch (XrayVLException e) { throw new XrayVLException($"{path}: {e.Message}"); }
    }

    /// <summary>Without preprocessor_config.json: the encoder's size, and CLIP's statistics for a 3-channel CLIP tower.</summary>
    private static PreprocessConfig DefaultPreprocess(VisionConfig vision) =>
        vision.NumChannels == 3 && vision.IsVit
            ? PreprocessConfig.Clip(vision.ImageSize)
            : new PreprocessConfig { ImageSize = vision.ImageSize, Channels = vision.NumChannels };

    /// <summary>Loads a Hugging Face LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM folder (config.json + weights).</summary>
    public static LanguageModel LoadLanguageModel(string dir)
    {
        RequireFolder(dir, "language model");
        var config = ConfigFile.Read<LanguageModelConfig>(Path.Combine(dir, ConfigFileName));
        var model = new LanguageModel(config);
        var tensors = ReadWeights(dir);
        // Some tied checkpoints store lm_head.weight anyway (a copy of the embeddings): it has no place in a tied model.
        if (config.TieWordEmbeddings && tensors.Remove("lm_head.weight", out var head)) head.Dispose();
        LoadInto(dir, model, tensors, prefix: "");
        model.eval();
        return model;
    }

    /// <summary>
    /// Loads a vision tower folder: HF CLIPVisionModel (`model_type` clip_vision_model, keys `vision_model.*`), a full
    /// HF CLIPModel (its `vision_config`; text weights ignored), or a ResNet with torchvision keys.
    /// </summary>
    public static VisionEncoder LoadVisionTower(string dir, int featureLayer = -1, string selectStrategy = "default")
    {
        RequireFolder(dir, "vision tower");
        var config = ConfigFile.Read<VisionConfig>(Path.Combine(dir, ConfigFileName));
        var encoder = VisionEncoder.Create(config, featureLayer, selectStrategy);
        LoadWeights(dir, encoder, prefix: "", strict: false, requireAllOfModel: true);
        encoder.eval();
        return encoder;
    }

    /// <summary>
    /// Copies the folder's tensors into <paramref name="module"/>. Strict by default: missing keys, unexpected keys and
    /// shape mismatches are refused with a message listing them. With <paramref name="requireAllOfModel"/>, extra keys
    /// in the file (e.g. a CLIP text tower) are allowed but every model key must be present.
    /// </summary>
    public static void LoadWeights(string dir, nn.Module module, string prefix, bool strict = true, bool requireAllOfModel = false) =>
        LoadInto(dir, module, ReadWeights(dir), prefix, strict, requireAllOfModel);

    private static void LoadInto(string dir, nn.Module module, Dictionary<string, Tensor> tensors, string prefix, bool strict = true, bool requireAllOfModel = false)
    {
        try
        {
            if (!strict && requireAllOfModel)
            {
                var wanted = module.state_dict().Keys.Select(k => prefix + k).ToHashSet();
                foreach (var extra in tensors.Keys.Where(k => !wanted.Contains(k)).ToList())
                {
                    tensors[extra].Dispose();
                    tensors.Remove(extra);
                }
                strict = true;
            }
            ModuleWeights.LoadInto(module, tensors, prefix, strict);
        }
        catch (XrayVLException e) { throw new XrayVLException($"{dir}: {e.Message}"); }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>
    /// All tensors of a folder: one model.safetensors, or the shards model.safetensors.index.json lists; without
    /// safetensors, a PyTorch pytorch_model.bin or the shards of pytorch_model.bin.index.json (what Hugging Face writes
    /// with safe_serialization=False), read by <see cref="TorchCheckpoint"/> without executing the pickle.
    /// </summary>
    public static Dictionary<string, Tensor> ReadWeights(string dir)
    {
        string single = Path.Combine(dir, WeightsFileName);
        if (File.Exists(single)) return SafeTensors.Load(single);
        string index = Path.Combine(dir, WeightsIndexFileName);
        if (File.Exists(index)) return ReadShards(dir, index, path => SafeTensors.Load(path));
        string torchSingle = Path.Combine(dir, TorchWeightsFileName);
        if (File.Exists(torchSingle)) return TorchCheckpoint.LoadStateDict(torchSingle);
        string torchIndex = Path.Combine(dir, TorchWeightsIndexFileName);
        if (File.Exists(torchIndex)) return ReadShards(dir, torchIndex, path => TorchCheckpoint.LoadStateDict(path));
        throw new XrayVLException($"{dir}: no {WeightsFileName}, {WeightsIndexFileName}, {TorchWeightsFileName} or {TorchWeightsIndexFileName}");
    }

    /// <summary>The weight files <see cref="ReadWeights"/> would read, in the same order of preference, without reading them.</summary>
    public static IReadOnlyList<string> WeightFiles(string dir)
    {
        foreach (var (single, index) in new[] { (WeightsFileName, WeightsIndexFileName), (TorchWeightsFileName, TorchWeightsIndexFileName) })
        {
            if (File.Exists(Path.Combine(dir, single))) return [Path.Combine(dir, single)];
            string indexPath = Path.Combine(dir, index);
            if (!File.Exists(indexPath)) continue;
            var map = Json.ReadObject(indexPath, "shard index")["weight_map"];
            if (map is not JsonObject weightMap) throw new XrayVLException($"{indexPath}: no weight_map");
            var shards = weightMap.Select(kv => Path.Combine(dir, kv.Value!.GetValue<string>())).Distinct().ToList();
            foreach (string shard in shards.Where(s => !File.Exists(s)))
                throw new XrayVLException($"{indexPath}: lists shard {Path.GetFileName(shard)}, which is missing");
            return shards;
        }
        throw new XrayVLException($"{dir}: no {WeightsFileName}, {WeightsIndexFileName}, {TorchWeightsFileName} or {TorchWeightsIndexFileName}");
    }

    private static Dictionary<string, Tensor> ReadShards(string dir, string index, Func<string, Dictionary<string, Tensor>> read)
    {
        var map = Json.ReadObject(index, "shard index")["weight_map"];
        if (map is not JsonObject weightMap) throw new XrayVLException($"{index}: no weight_map");
        var all = new Dictionary<string, Tensor>();
        try
        {
            foreach (string shard in weightMap.Select(kv => kv.Value!.GetValue<string>()).Distinct())
            {
                string shardPath = Path.Combine(dir, shard);
                if (!File.Exists(shardPath)) throw new XrayVLException($"{index}: lists shard {shard}, which is missing");
                foreach (var (name, tensor) in read(shardPath))
                {
                    if (all.Remove(name, out var duplicate)) duplicate.Dispose();
                    all[name] = tensor;
                }
            }
            foreach (var (name, _) in weightMap)
                if (!all.ContainsKey(name)) throw new XrayVLException($"{index}: maps '{name}' to a shard that does not hold it");
        }
        catch
        {
            foreach (var t in all.Values) t.Dispose();
            throw;
        }
        return all;
    }

    private static void RequireFolder(string dir, string what)
    {
        if (!System.IO.Directory.Exists(dir)) throw new XrayVLException($"{dir}: {what} folder not found");
        if (!File.Exists(Path.Combine(dir, ConfigFileName))) throw new XrayVLException($"{dir}: no {ConfigFileName}: not a {what} folder");
    }
}
