using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using XrayVL.Data;
using XrayVL.Data.Sources;
using XrayVL.Imaging;
using XrayVL.Modeling;

namespace XrayVL.Training;

/// <summary>
/// A training recipe (`configs/*.json`, snake_case): the seed, the compute dtype, the model to start from, the
/// tokenizer, the data sources, and the stages to run in order. Read with <see cref="Load"/>, which validates every
/// field and names the file and field at fault. Paths are relative to the recipe file; <c>${shared}</c> stands for the
/// shared data folder (see <see cref="DataRecipe.Shared"/>).
/// </summary>
public sealed record TrainRecipe
{
    /// <summary>Seeds model init, data order, LoRA dropout and augmentation: same recipe + seed, same run (on one machine).</summary>
    public int Seed { get; init; } = 42;
    /// <summary>
    /// "bf16": forward and backward run in a bfloat16 copy of the model while AdamW updates float32 master weights
    /// (measured 1.5–2.3x faster per step on this project's CPU); "fp32": everything in float32.
    /// </summary>
    public string Dtype { get; init; } = "bf16";
    public ModelRecipe Model { get; init; } = new();
    public TokenizerRecipe Tokenizer { get; init; } = new();
    public DataRecipe Data { get; init; } = new();
    public IReadOnlyList<StageRecipe> Stages { get; init; } = [];

    /// <summary>The file the recipe was read from (null when built in code): relative paths start from its folder.</summary>
    [JsonIgnore] public string? SourcePath { get; init; }

    [JsonIgnore] public string BaseDirectory => SourcePath is null ? Directory.GetCurrentDirectory() : Path.GetDirectoryName(Path.GetFullPath(SourcePath))!;

    /// <summary>The JSON reader: the project's conventions, and unknown fields are errors (a misspelt "lr" must not pass silently).</summary>
    private static readonly JsonSerializerOptions ReadOptions = new(Json.Options) { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };

    /// <summary>Reads and validates a recipe file.</summary>
    public static TrainRecipe Load(string path)
    {
        var recipe = Json.Read<TrainRecipe>(path, "recipe", ReadOptions);
        return (recipe with { SourcePath = path }).Validate();
    }

    /// <summary>Parses and validates recipe JSON text; relative paths start from the folder of <paramref name="sourcePath"/> (else the current folder).</summary>
    public static TrainRecipe Parse(string json, string? sourcePath = null)
    {
        TrainRecipe? recipe;
        string name = sourcePath ?? "recipe";
        try { recipe = JsonSerializer.Deserialize<TrainRecipe>(json, ReadOptions); }
        catch (JsonException e)
        {
            throw new XrayVLException($"{name}: not a valid recipe{Json.Where(e)}: {Json.Problem(e)}", e);
        }
        if (recipe is null) throw new XrayVLException($"{name}: empty recipe");
        return (recipe with { SourcePath = sourcePath }).Validate();
    }

    /// <summary>
    /// Throws <see cref="XrayVLException"/> "FILE: field: problem" for the first invalid value; returns the recipe with
    /// defaults filled in (a stage without data takes every source).
    /// </summary>
    public TrainRecipe Validate()
    {
        string file = SourcePath ?? "recipe";
        void Require(bool ok, string message)
        {
            if (!ok) throw new XrayVLException($"{file}: {message}");
        }

        Require(Dtype is "bf16" or "fp32", $"dtype '{Dtype}' is not supported (bf16, fp32)");
        Require(Model is not null, "model is missing");
        Require(Model!.Config is null ^ Model.InitFrom is null, "model needs exactly one of config (train from scratch) or init_from (a checkpoint folder)");
        if (Model.Config is not null)
        {
            // vocab_size and image_token_index come from the tokenizer; validate the rest with placeholders that fit.
            try { Model.Config.WithTokenizer(Math.Max(Model.Config.TextConfig.VocabSize, 1), 0).Validate(); }
            catch (XrayVLException e) { throw new XrayVLException($"{file}: model.config: {e.Message}"); }
        }
        Require(Tokenizer is not null, "tokenizer is missing");
        if (Tokenizer!.From is null)
        {
            Require(Tokenizer.VocabSize >= 256 + Text.SpecialTokens.All.Count,
                $"tokenizer.vocab_size {Tokenizer.VocabSize} is too small (at least {256 + Text.SpecialTokens.All.Count}: 256 bytes + special tokens)");
            Require(Tokenizer.MinFrequency >= 1, $"tokenizer.min_frequency {Tokenizer.MinFrequency} must be at least 1");
        }
        Require(Model.VisionInit is null || Model.Config is not null, "model.vision_init needs model.config (an init_from checkpoint has its own vision weights)");
        Require(Model.InitFrom is null || Tokenizer.From is null || SamePath(Tokenizer.From, Model.InitFrom),
            "tokenizer.from cannot differ from model.init_from: a checkpoint's embeddings belong to its own tokenizer");

        Require(Data is not null, "data is missing");
        Require(Data!.SplitFractions is { Length: 3 } f && f.All(x => x >= 0 && double.IsFinite(x)) && Math.Abs(f.Sum() - 1) < 1e-6,
            "data.split_fractions must be three non-negative numbers (train, val, test) that add up to 1");
        Require(Data.Languages.Count > 0 && Data.Languages.All(l => l is "en" or "zh"), "data.languages must list en and/or zh");
        Require(Data.QuestionsPerStudy >= 0, "data.questions_per_study cannot be negative");
        Require(Data.Sources.Count > 0, "data.sources is empty: name at least one source");
        foreach (var (name, source) in Data.Sources)
        {
            string at = $"data.sources.{name}";
            Require(source is not null, $"{at} is null");
            Require(ReportSources.Names.Contains(source!.Source), $"{at}.source '{source.Source}' is not one of {string.Join(", ", ReportSources.Names)}");
            Require(!string.IsNullOrWhiteSpace(source.Input), $"{at}.input is missing");
            Require(source.Language is null or "en" or "zh", $"{at}.language '{source.Language}' must be en or zh");
            Require(name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'), $"source name '{name}' may use letters, digits, '-' and '_' only");
        }

        Require(Stages.Count > 0, "stages is empty: list at least one stage");
        Require(Stages.All(s => s is not null), "stages holds a null entry");
        Require(Model.Config is not { FindingHint: true } || Stages[0].Kind == StageRecipe.Vision,
            "model.config.finding_hint needs a vision stage first: it trains the classifier whose decisions the hint carries");
        // A stage without data takes every source once.
        var stages = Stages.Select(s => s.Data.Count > 0 ? s : s with { Data = Data.Sources.Keys.Select(k => new MixRecipe { Source = k }).ToList() }).ToList();
        var names = new HashSet<string>();
        for (int i = 0; i < stages.Count; i++)
        {
            var stage = stages[i];
            string at = $"stages[{i}] ({stage.Name})";
            Require(!string.IsNullOrWhiteSpace(stage.Name), $"stages[{i}] has no name");
            Require(names.Add(stage.Name), $"{at}: the name is used twice");
            try { stage.Validate(); }
            catch (XrayVLException e) { throw new XrayVLException($"{file}: {at}: {e.Message}"); }
            foreach (var mix in stage.Data)
                Require(Data.Sources.ContainsKey(mix.Source),
                    $"{at}: data names source '{mix.Source}', which data.sources does not define ({string.Join(", ", Data.Sources.Keys)})");
        }
        return this with { Stages = stages };
    }

    /// <summary>
    /// A path from the recipe made absolute: <c>${shared}</c> is replaced by <paramref name="sharedDirectory"/>, and a
    /// relative result starts from the recipe's folder.
    /// </summary>
    public string ResolvePath(string path, string? sharedDirectory)
    {
        if (path.Contains("${shared}", StringComparison.Ordinal))
        {
            if (sharedDirectory is null)
                throw new XrayVLException($"{SourcePath ?? "recipe"}: '{path}' uses ${{shared}} but no shared data folder is set " +
                                          "(--shared DIR, XRAYVL_SHARED_DATA, or data.shared in the recipe)");
            path = path.Replace("${shared}", sharedDirectory, StringComparison.Ordinal);
        }
        return Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(BaseDirectory, path));
    }

    /// <summary>
    /// The shared data folder: the caller's choice (CLI --shared), else XRAYVL_SHARED_DATA, else data.shared — an absolute
    /// path, or a relative one looked for in the recipe's folder and then in each folder above it (the first that exists).
    /// </summary>
    public string? SharedDirectory(string? overrideDirectory)
    {
        if (!string.IsNullOrEmpty(overrideDirectory)) return Path.GetFullPath(overrideDirectory);
        string? env = Environment.GetEnvironmentVariable("XRAYVL_SHARED_DATA");
        if (!string.IsNullOrEmpty(env)) return Path.GetFullPath(env);
        if (Data.Shared is not { Length: > 0 } shared) return null;
        if (Path.IsPathRooted(shared)) return Path.GetFullPath(shared);
        for (var dir = new DirectoryInfo(BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.GetFullPath(Path.Combine(dir.FullName, shared));
            if (Directory.Exists(candidate)) return candidate;
        }
        return Path.GetFullPath(Path.Combine(BaseDirectory, shared));
    }

    /// <summary>
    /// A hash of everything that decides the training trajectory (seed, dtype, model, tokenizer, data, each stage's
    /// optimisation fields) and nothing that does not (how often to evaluate, save, sample, how many checkpoints to keep):
    /// a checkpoint written under another fingerprint cannot be resumed.
    /// </summary>
    [JsonIgnore]
    public string Fingerprint
    {
        get
        {
            var trajectory = this with
            {
                Data = Data with { Shared = null },
                Stages = Stages.Select(s => s with
                {
                    EvalEvery = 0, EvalBatches = 0, SaveEvery = 0, KeepLast = 0, SampleEvery = 0, Samples = 0, SampleMaxNewTokens = 0,
                }).ToList(),
            };
            byte[] json = JsonSerializer.SerializeToUtf8Bytes(trajectory, Json.Line);
            return Convert.ToHexStringLower(SHA256.HashData(json))[..16];
        }
    }

    private static bool SamePath(string a, string b) =>
        string.Equals(Path.TrimEndingDirectorySeparator(a), Path.TrimEndingDirectorySeparator(b), StringComparison.Ordinal);

}

/// <summary>Where the model comes from: a fresh architecture or an existing checkpoint folder.</summary>
public sealed record ModelRecipe
{
    /// <summary>The architecture to train from scratch; its vocab_size and image_token_index are set from the tokenizer.</summary>
    public VisionLanguageConfig? Config { get; init; }
    /// <summary>A checkpoint folder (config.json, model.safetensors, tokenizer) to continue from; its tokenizer is used.</summary>
    public string? InitFrom { get; init; }
    /// <summary>
    /// Pretrained vision weights for a config-built model: a vision-tower folder (`xrayvl convert` output) or an ONNX ResNet
    /// converted on the fly (<c>${resnet18_onnx}</c>: the ImageNet ResNet-18 NuGet restore fetched). Its preprocessing
    /// (mean, std) replaces the default; its architecture must be the config's vision_config.
    /// </summary>
    public string? VisionInit { get; init; }
}

/// <summary>The tokenizer: a byte-level BPE trained on the recipe's training texts, or an existing tokenizer folder.</summary>
public sealed record TokenizerRecipe
{
    /// <summary>6000 entries cover English and Chinese report text compactly (the project's measured choice).</summary>
    public int VocabSize { get; init; } = 6000;
    /// <summary>A pair seen fewer times is never merged: rarer merges would memorise single reports.</summary>
    public int MinFrequency { get; init; } = 2;
    /// <summary>A tokenizer folder (vocab.json + merges.txt, or tokenizer.model) to use instead of training one.</summary>
    public string? From { get; init; }
}

/// <summary>The data sources, read with <see cref="DatasetBuilder"/> into OUT/data/NAME/manifest.jsonl, and how instructions are built.</summary>
public sealed record DataRecipe
{
    /// <summary>
    /// The folder <c>${shared}</c> stands for when neither the CLI (--shared) nor XRAYVL_SHARED_DATA gives one; a relative
    /// path is looked for from the recipe's folder upwards ("shared/data" finds ../shared/data of a checkout).
    /// </summary>
    public string? Shared { get; init; }
    /// <summary>Seed of the patient-level split (used when a source has no official split).</summary>
    public int SplitSeed { get; init; } = 42;
    /// <summary>Train / val / test fractions of patients: 80/10/10, the split most report-generation papers use.</summary>
    public double[] SplitFractions { get; init; } = [0.8, 0.1, 0.1];
    /// <summary>Sources by name; stages refer to them by that name.</summary>
    public IReadOnlyDictionary<string, SourceRecipe> Sources { get; init; } = new Dictionary<string, SourceRecipe>();
    /// <summary>Conversation languages for instruction tasks (reports are learned in their own language only).</summary>
    public IReadOnlyList<string> Languages { get; init; } = ["en", "zh"];
    /// <summary>Closed questions per study and language in the VQA task: two mix a present and an absent finding.</summary>
    public int QuestionsPerStudy { get; init; } = 2;
    /// <summary>Label-based tasks (VQA, finding lists, grounding) in the other language too: teaches both languages on every image.</summary>
    public bool CrossLanguage { get; init; } = true;
}

/// <summary>One source for <see cref="DatasetBuilder"/>: the reader's name and its input paths.</summary>
public sealed record SourceRecipe
{
    /// <summary>One of <see cref="ReportSources.Names"/> (xrayglm, covid, iu-csv, r2gen, ...).</summary>
    public string Source { get; init; } = "";
    public string Input { get; init; } = "";
    /// <summary>The image folder, where the source does not find it by itself.</summary>
    public string? Images { get; init; }
    /// <summary>An official split (R2Gen annotation.json, MIMIC split CSV) instead of the seeded patient split.</summary>
    public string? SplitFile { get; init; }
    /// <summary>Overrides the language the source assigns.</summary>
    public string? Language { get; init; }
    /// <summary>Keep reports whose images are not on disk: text stages learn from them; image stages leave them out anyway.</summary>
    public bool KeepMissingImages { get; init; } = true;
    /// <summary>Studies with labels but no report get one written from their labels, in English and Chinese
    /// (<see cref="TemplatedReports"/>), so report tasks see normal and abnormal images of label-only collections.</summary>
    public bool TemplatedReports { get; init; }
}

/// <summary>One component of a stage's data: which source, which tasks, and how often it is repeated in an epoch.</summary>
public sealed record MixRecipe
{
    public string Source { get; init; } = "";
    /// <summary>
    /// Instruction tasks (<see cref="Instructions.Tasks"/>); null takes the stage kind's default: align → report and
    /// findings (an image paired with its description), instruct → all tasks. Text stages always use the report text.
    /// </summary>
    public IReadOnlyList<string>? Tasks { get; init; }
    /// <summary>Splits to draw training samples from: "train" only, so that val and test stay unseen.</summary>
    public IReadOnlyList<string> Splits { get; init; } = ["train"];
    /// <summary>False: the conversations without their images (text-only turns), e.g. to keep reports in an image stage.</summary>
    public bool Images { get; init; } = true;
    /// <summary>How many times each sample appears per epoch: up-weights a small source in a mixture.</summary>
    public int Repeat { get; init; } = 1;
    /// <summary>At most this many training items, a seeded choice: down-weights a large source (null: all).</summary>
    public int? Limit { get; init; }
    /// <summary>
    /// Only the studies whose labels have all these values (CheXpert names; 1 positive, 0 negative, -1 uncertain), e.g.
    /// { "No Finding": 1 } for a source's normal studies: weights one class of a source, such as normal reports in a
    /// mixture where most images are abnormal (null: every study).
    /// </summary>
    public IReadOnlyDictionary<string, int>? Labels { get; init; }
    /// <summary>
    /// Only the studies whose report is in this language ("en" or "zh"; each report is a study per language), e.g. to
    /// weight one language's normal reports where that language's reports lean abnormal (null: both). Questions in the
    /// other language built from a kept study's labels stay unless data.cross_language is false.
    /// </summary>
    public string? Language { get; init; }

    /// <summary>Whether a study passes <see cref="Labels"/> and <see cref="Language"/>.</summary>
    public bool Admits(Study study) => (Language is null || study.Language == Language) && (Labels is null ||
        (study.Labels is { } labels && Labels.All(kv => labels.TryGetValue(Observations.Parse(kv.Key).Name(), out var v) && v == kv.Value)));
}

/// <summary>What a stage trains, parsed from "vision+projector+lora"-style strings.</summary>
[Flags]
public enum TrainableParts
{
    None = 0,
    Vision = 1,
    Projector = 2,
    LanguageModel = 4,
    Lora = 8,
    Full = Vision | Projector | LanguageModel,
}

/// <summary>One stage of a recipe: its data, what it trains, and its optimisation settings.</summary>
public sealed record StageRecipe
{
    public const string Text = "text";
    public const string Align = "align";
    public const string Instruct = "instruct";
    /// <summary>The encoder and a multi-label head learn the labels of the stage's images (no language model).</summary>
    public const string Vision = "vision";
    public static readonly IReadOnlyList<string> Kinds = [Text, Align, Instruct, Vision];

    public string Name { get; init; } = "";
    /// <summary>"text" (report text, no image), "align" (image + description, usually projector only), "instruct" (the
    /// instruction mixture) or "vision" (the encoder as a multi-label classifier of the images' 14 observations).</summary>
    public string Kind { get; init; } = "";
    /// <summary>
    /// Parts that train, joined by '+': vision, projector, lm, lora (LoRA adapters on the language model), full
    /// (= vision+projector+lm). Null takes the kind's default: text → lm, align → projector, instruct → projector+lora.
    /// </summary>
    public string? Trainable { get; init; }
    /// <summary>LoRA settings when trainable has lora; null takes r 16, alpha 32 on every linear layer of the language model.</summary>
    public LoraConfig? Lora { get; init; }
    /// <summary>The stage's mixture of sources; left out, every source of data.sources once with the kind's default tasks.</summary>
    public IReadOnlyList<MixRecipe> Data { get; init; } = [];
    /// <summary>Optimizer steps; give steps or epochs, not both.</summary>
    public long? Steps { get; init; }
    /// <summary>Passes over the stage's training samples (fractions allowed); converted to steps once the data is built.</summary>
    public double? Epochs { get; init; }
    /// <summary>Samples per forward pass: 8 sequences of ~200 tokens keep both cores' matmuls busy without slowing steps.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Forward passes per optimizer step: the effective batch is batch_size × grad_accum.</summary>
    public int GradAccum { get; init; } = 1;
    /// <summary>Peak learning rate: 3e-4, AdamW's well-tried rate for small transformers.</summary>
    public double Lr { get; init; } = 3e-4;
    /// <summary>The cosine's floor; null is a tenth of lr (decay to 10%, as LLaMA and Chinchilla).</summary>
    public double? MinLr { get; init; }
    /// <summary>Linear warmup: a few dozen steps let AdamW's moment estimates settle before full-size updates.</summary>
    public int WarmupSteps { get; init; } = 50;
    /// <summary>Decoupled weight decay on weight matrices (≥ 2-D) only; 0.1 as GPT-3 and LLaMA.</summary>
    public double WeightDecay { get; init; } = 0.1;
    public double Beta1 { get; init; } = 0.9;
    /// <summary>0.95 rather than 0.999: second moments follow the loss faster, steadier for small-batch transformer training.</summary>
    public double Beta2 { get; init; } = 0.95;
    /// <summary>Gradients are clipped to this global L2 norm (0 turns clipping off): guards against loss spikes.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>Steps between validation losses (0: never; the stage's last step is always evaluated when on).</summary>
    public int EvalEvery { get; init; } = 100;
    /// <summary>Validation batches per evaluation: a fixed subset, so that values are comparable across steps.</summary>
    public int EvalBatches { get; init; } = 8;
    /// <summary>Steps between checkpoints (0: only at the end of the stage and on Ctrl-C).</summary>
    public int SaveEvery { get; init; } = 200;
    /// <summary>Step checkpoints kept (the best and the final model are kept apart).</summary>
    public int KeepLast { get; init; } = 2;
    /// <summary>Steps between sample generations printed with their references (0: never).</summary>
    public int SampleEvery { get; init; } = 200;
    /// <summary>Generations per sampling, from the validation set.</summary>
    public int Samples { get; init; } = 2;
    /// <summary>Length limit of a sample generation: a report fits in about 100 tokens.</summary>
    public int SampleMaxNewTokens { get; init; } = 100;
    /// <summary>Longest training sequence; longer ones are cut at the end. Null: the model's max_position_embeddings.</summary>
    public int? MaxSeqLen { get; init; }
    /// <summary>
    /// Text stages: "chat" renders each report as an answer to a report request (no image), so the request the front ends
    /// send is learned from the start; "plain" is report text followed by end-of-text.
    /// </summary>
    public string TextFormat { get; init; } = "chat";
    /// <summary>Image augmentation while the encoder trains; with a frozen encoder it disables the feature cache (null: none).</summary>
    public AugmentConfig? Augment { get; init; }

    /// <summary>LoRA settings in effect for this stage (null when it trains no adapters).</summary>
    [JsonIgnore]
    public LoraConfig? EffectiveLora => Parts.HasFlag(TrainableParts.Lora)
        ? Lora ?? new LoraConfig { R = 16, LoraAlpha = 32, TargetModules = LoraTargetModules.AllLinear }
        : null;

    /// <summary>The parsed <see cref="Trainable"/> (or the kind's default).</summary>
    [JsonIgnore]
    public TrainableParts Parts => ParseTrainable(Trainable ?? Kind switch
    {
        Text => "lm",
        Align => "projector",
        Instruct => "projector+lora",
        Vision => "vision",
        _ => throw new XrayVLException($"kind '{Kind}' is not supported ({string.Join(", ", Kinds)})"),
    });

    [JsonIgnore] public double EffectiveMinLr => MinLr ?? Lr / 10;

    /// <summary>The instruction tasks a mixture component builds in this stage.</summary>
    public IReadOnlyList<string> TasksFor(MixRecipe mix) => Kind == Text
        ? [Instructions.Report]
        : mix.Tasks ?? (Kind == Align ? [Instructions.Report, Instructions.Findings] : Instructions.Tasks);

    public static TrainableParts ParseTrainable(string text)
    {
        var parts = TrainableParts.None;
        foreach (string raw in text.Split('+'))
        {
            parts |= raw.Trim() switch
            {
                "vision" => TrainableParts.Vision,
                "projector" => TrainableParts.Projector,
                "lm" => TrainableParts.LanguageModel,
                "lora" => TrainableParts.Lora,
                "full" => TrainableParts.Full,
                var other => throw new XrayVLException($"trainable part '{other}' is not supported (vision, projector, lm, lora, full)"),
            };
        }
        return parts;
    }

    internal void Validate()
    {
        static void Require(bool ok, string message)
        {
            if (!ok) throw new XrayVLException(message);
        }
        Require(Kinds.Contains(Kind), $"kind '{Kind}' is not supported ({string.Join(", ", Kinds)})");
        var parts = Parts;
        Require(parts != TrainableParts.None, "trainable names no part");
        Require(!(parts.HasFlag(TrainableParts.Lora) && parts.HasFlag(TrainableParts.LanguageModel)),
            "trainable has both lm and lora: LoRA adapts a frozen language model (choose one)");
        Require(Kind != Text || (parts & (TrainableParts.Vision | TrainableParts.Projector)) == 0,
            "a text stage has no images: only lm or lora can train");
        Require(Lora is null || parts.HasFlag(TrainableParts.Lora), "lora settings are given but trainable has no lora");
        Require(Kind != Vision || parts == TrainableParts.Vision, "a vision stage trains the encoder and its classifier head: trainable must be vision");
        Require(Kind != Vision || Data.All(m => m is null || m.Tasks is null), "a vision stage learns the images' labels; tasks do not apply");
        Lora?.Validate("lora");
        Require(Data.Count > 0, "data is empty: name at least one source (or leave it out to use every source)");
        foreach (var mix in Data)
        {
            Require(mix is not null && !string.IsNullOrWhiteSpace(mix.Source), "a data entry has no source");
            Require(mix!.Repeat >= 1, $"data '{mix.Source}': repeat must be at least 1");
            Require(mix.Limit is null or >= 1, $"data '{mix.Source}': limit must be at least 1");
            foreach (var (name, value) in mix.Labels ?? new Dictionary<string, int>())
            {
                Require(Observations.TryParse(name, out _), $"data '{mix.Source}': label '{name}' is not one of {string.Join(", ", Observations.Names)}");
                Require(value is 1 or 0 or -1, $"data '{mix.Source}': label '{name}' must be 1, 0 or -1, got {value}");
            }
            Require(mix.Language is null or "en" or "zh", $"data '{mix.Source}': language '{mix.Language}' is not en or zh");
            Require(mix.Splits.Count > 0 && mix.Splits.All(s => Data_Splits.Contains(s)), $"data '{mix.Source}': splits must list train, val and/or test");
            Require(Kind != Text || mix.Tasks is null || mix.Tasks.SequenceEqual([Instructions.Report]),
                $"data '{mix.Source}': a text stage learns report text; tasks do not apply");
            foreach (string t in mix.Tasks ?? [])
                Require(Instructions.Tasks.Contains(t), $"data '{mix.Source}': task '{t}' is not one of {string.Join(", ", Instructions.Tasks)}");
        }
        Require(Steps is null ^ Epochs is null, "give steps or epochs (exactly one)");
        Require(Steps is null or > 0, $"steps must be positive, got {Steps}");
        Require(Epochs is null || (Epochs > 0 && double.IsFinite(Epochs.Value)), $"epochs must be positive, got {Epochs}");
        Require(BatchSize > 0, $"batch_size must be positive, got {BatchSize}");
        Require(GradAccum > 0, $"grad_accum must be positive, got {GradAccum}");
        Require(Lr > 0 && double.IsFinite(Lr), $"lr must be positive, got {Lr}");
        Require(MinLr is null || (MinLr >= 0 && MinLr <= Lr), $"min_lr must be in [0, lr], got {MinLr}");
        Require(WarmupSteps >= 0, $"warmup_steps cannot be negative, got {WarmupSteps}");
        Require(WeightDecay >= 0 && double.IsFinite(WeightDecay), $"weight_decay cannot be negative, got {WeightDecay}");
        Require(Beta1 is >= 0 and < 1 && Beta2 is >= 0 and < 1, $"beta1 and beta2 must be in [0, 1), got {Beta1} and {Beta2}");
        Require(MaxGradNorm >= 0 && double.IsFinite(MaxGradNorm), $"max_grad_norm cannot be negative, got {MaxGradNorm}");
        Require(EvalEvery >= 0 && SaveEvery >= 0 && SampleEvery >= 0, "eval_every, save_every and sample_every cannot be negative");
        Require(EvalBatches >= 1 || EvalEvery == 0, "eval_batches must be at least 1 when eval_every is on");
        Require(KeepLast >= 1, $"keep_last must be at least 1, got {KeepLast}");
        Require(Samples >= 0 && SampleMaxNewTokens >= 1, "samples cannot be negative and sample_max_new_tokens must be positive");
        Require(MaxSeqLen is null or >= 2, $"max_seq_len must be at least 2, got {MaxSeqLen}");
        Require(TextFormat is "chat" or "plain", $"text_format '{TextFormat}' is not supported (chat, plain)");
        Require(Kind == Text || TextFormat == "chat", "text_format applies to text stages only");
        Augment?.Validate();
        Require(Augment is null || Kind != Text, "augment needs images; a text stage has none");
    }

    private static readonly string[] Data_Splits = [Splits.Train, Splits.Val, Splits.Test];
}

internal static class ConfigExtensions
{
    /// <summary>The config with the tokenizer's vocabulary size, image token and end-of-text ids.</summary>
    public static VisionLanguageConfig WithTokenizer(this VisionLanguageConfig config, int vocabSize, int imageTokenId, int? eosId = null) => config with
    {
        ImageTokenIndex = imageTokenId,
        TextConfig = config.TextConfig with
        {
            VocabSize = vocabSize,
            EosTokenId = eosId ?? config.TextConfig.EosTokenId,
            PadTokenId = eosId ?? config.TextConfig.PadTokenId,
        },
    };
}
