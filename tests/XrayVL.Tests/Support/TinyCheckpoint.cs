using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Text;

namespace XrayVL.Tests.Support;

/// <summary>
/// A complete checkpoint folder with a tiny random model and the tokenizer trained on the IU captions, written once per
/// test run through <see cref="Checkpoint.Save"/> (the real path), for tests of loading, the CLI and the server.
/// </summary>
public static class TinyCheckpoint
{
    private static readonly Lazy<string> Shared = new(() => Write(TempDir.Create("xrayvl-tiny-model")));

    /// <summary>The shared folder; treat it as read-only.</summary>
    public static string Directory => Shared.Value;

    public static VisionLanguageConfig Config()
    {
        var tokenizer = TrainedTokenizer.Instance.Tokenizer;
        var baseConfig = TinyVisionLanguageModels.Config();
        return baseConfig with
        {
            TextConfig = baseConfig.TextConfig with { VocabSize = tokenizer.VocabSize, MaxPositionEmbeddings = 512 },
            ImageTokenIndex = tokenizer.ImageId,
        };
    }

    public static string Write(string dir, int seed = 3)
    {
        using var model = TinyVisionLanguageModels.Create(Config(), seed);
        Checkpoint.Save(dir, model, TrainedTokenizer.Instance.Tokenizer, new PreprocessConfig { ImageSize = 32 });
        return dir;
    }
}
