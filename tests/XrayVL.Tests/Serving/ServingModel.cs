using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;

namespace XrayVL.Tests.Serving;

/// <summary>
/// The model the serving tests share: the tiny random vision-language model with the tokenizer trained on IU captions,
/// written with <see cref="Checkpoint.Save"/> and read back with <see cref="Checkpoint.Load"/> (the path a server takes).
/// Its answers are nonsense, but deterministic under greedy decoding, which is what the tests compare.
/// </summary>
public static class ServingModel
{
    private static readonly Lazy<LoadedModel> Shared = new(Build);

    public static LoadedModel Loaded => Shared.Value;

    private static readonly Lazy<LoadedModel> SharedSlow = new(() => Build(hidden: 384, layers: 4, name: "slower-xrayvl"));

    /// <summary>
    /// A wider decoder (a few milliseconds per token here instead of a fraction of one) for the tests that must act
    /// while an answer is still being written; real models are slower still.
    /// </summary>
    public static LoadedModel Slow => SharedSlow.Value;

    private static LoadedModel Build() => Build(hidden: 64, layers: 2, name: "tiny-xrayvl");

    private static LoadedModel Build(int hidden, int layers, string name)
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var tiny = TinyVisionLanguageModels.Config();
        var config = tiny with
        {
            // Vocabulary and image token from the tokenizer; room for a few turns of the chat template.
            TextConfig = tiny.TextConfig with
            {
                VocabSize = tokenizer.VocabSize, MaxPositionEmbeddings = 1024,
                HiddenSize = hidden, IntermediateSize = hidden * 3, NumHiddenLayers = layers,
            },
            ImageTokenIndex = tokenizer.ImageId,
        };
        string dir = Path.Combine(TempDir.Create("xrayvl-serving"), name);
        using (var model = TinyVisionLanguageModels.Create(config, seed: 11))
        {
            // The vision tower and projector were drawn from torch's global generator, which parallel tests share:
            // redraw them from a seeded one so that the model, and so every greedy answer, is the same in every run.
            using var generator = new TorchSharp.torch.Generator(12);
            using (TorchSharp.torch.no_grad())
                foreach (var (key, parameter) in model.named_parameters())
                    if (!key.StartsWith("language_model.", StringComparison.Ordinal) && parameter.dim() >= 2) parameter.normal_(0, 0.05, generator);
            Checkpoint.Save(dir, model, tokenizer, new PreprocessConfig { ImageSize = config.VisionConfig.ImageSize });
        }
        return Checkpoint.Load(dir);
    }

    /// <summary>The IU X-ray sample images of the shared data (PNG).</summary>
    public static IReadOnlyList<string> SampleImages =>
        Directory.GetFiles(SharedData.File("iu-xray", "images"), "*.png").Order(StringComparer.Ordinal).ToList();

    /// <summary>A gray test pattern (a bright disc on a gradient), different for each seed.</summary>
    public static GrayImage Pattern(int seed, int width = 48, int height = 40)
    {
        var random = new Random(seed);
        double cx = random.NextDouble() * width, cy = random.NextDouble() * height, r = 4 + random.NextDouble() * 10;
        var pixels = new float[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                bool disc = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
                pixels[y * width + x] = disc ? 0.9f : (float)(0.1 + 0.5 * x / width * random.NextDouble());
            }
        return new GrayImage(width, height, pixels);
    }

    /// <summary>The pattern as PNG bytes.</summary>
    public static byte[] PatternPng(int seed) => PngWriter.EncodeGray(Pattern(seed));
}

/// <summary>A clock the test moves by hand (session expiry).</summary>
public sealed class ManualClock : TimeProvider
{
    private DateTimeOffset now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow()
    {
        lock (this) return now;
    }

    public void Advance(TimeSpan by)
    {
        lock (this) now += by;
    }
}
