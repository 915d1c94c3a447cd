using System.Diagnostics;
using System.Text.Json;
using XrayVL.Tests.Support;
using XrayVL.Text;

namespace XrayVL.Tests.Text;

/// <summary>
/// One tokenizer trained on the real IU X-ray captions (English + Chinese), shared by the text tests. Studies are split
/// by id: one in ten is held out from training, so round-trip and compression checks run on unseen captions.
/// </summary>
public sealed class TrainedTokenizer
{
    public const int VocabSize = 6000;

    private static readonly Lazy<TrainedTokenizer> Shared = new(() => new TrainedTokenizer());

    public static TrainedTokenizer Instance => Shared.Value;

    public ByteLevelBpeModel Model { get; }
    public XrayTokenizer Tokenizer { get; }
    public string Directory { get; }
    public double TrainSeconds { get; }
    public int TrainCaptionCount { get; }
    public IReadOnlyList<string> HeldOutEnglish { get; }
    public IReadOnlyList<string> HeldOutChinese { get; }

    public IReadOnlyList<string> HeldOut(string lang) => lang == "en" ? HeldOutEnglish : HeldOutChinese;

    private TrainedTokenizer()
    {
        var en = Captions("en");
        var zh = Captions("zh");
        var train = en.Concat(zh).Where(c => !IsHeldOut(c.ImageId)).Select(c => c.Caption).ToList();
        HeldOutEnglish = en.Where(c => IsHeldOut(c.ImageId)).Select(c => c.Caption).Distinct().ToList();
        HeldOutChinese = zh.Where(c => IsHeldOut(c.ImageId)).Select(c => c.Caption).Distinct().ToList();
        TrainCaptionCount = train.Count;

        var clock = Stopwatch.StartNew();
        Model = BpeTrainer.Train(train, new BpeTrainerOptions(VocabSize, MinFrequency: 2));
        TrainSeconds = clock.Elapsed.TotalSeconds;

        Directory = TempDir.Create("xrayvl-tokenizer");
        Model.Save(Directory);
        Tokenizer = XrayTokenizer.Load(Directory);
    }

    /// <summary>Image ids are "study_k": the study decides, so both views of one study fall on the same side.</summary>
    private static bool IsHeldOut(string imageId)
    {
        string study = imageId.Split('_')[0];
        return int.TryParse(study, out int n) && n % 10 == 3;
    }

    public static List<(string ImageId, string Caption)> Captions(string lang)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(SharedData.File("iu-xray", $"openi-{lang}.json")));
        return doc.RootElement.GetProperty("annotations").EnumerateArray()
            .Select(a => (a.GetProperty("image_id").GetString()!, a.GetProperty("caption").GetString()!))
            .ToList();
    }
}
