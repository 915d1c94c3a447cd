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

    private static LoadedModel Build()
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var tiny = TinyVisionLanguageModels.Config();
        var config = tiny with
        {
            // Vocabulary and image token from the tokenizer; room for a few turns of the chat template.
            TextConfig = tiny.TextConfig with { VocabSize = tokenizer.VocabSize, MaxPositionEmbeddings = 1024 },
            ImageTokenIndex = tokenizer.ImageId,
        };
        string dir = Path.Combine(TempDir.Create("xrayvl-serving"), "tiny-xrayvl");
        using (var model = TinyVisionLanguageModels.Create(config, seed: 11))
            Checkpoint.Save(dir, model, tokenizer, new PreprocessConfig { ImageSize = config.VisionConfig.ImageSize });
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
