using System.Text.Json;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Evaluation;
using XrayVL.Imaging;
using XrayVL.IO;
using XrayVL.Tests.Support;
using XrayVL.Tests.Text;
using XrayVL.Text;

namespace XrayVL.Tests.Evaluation;

/// <summary>Evaluates a tiny random model end to end on a manifest of the five shared IU images.</summary>
public class EvaluatorTests
{
    private static readonly Lazy<(LoadedModel Model, string Manifest, List<Study> Studies)> Fixture = new(Build);

    private static (LoadedModel, string, List<Study>) Build()
    {
        string dir = TempDir.Create("xrayvl-eval");
        var en = TrainedTokenizer.Captions("en").ToDictionary(c => c.ImageId, c => c.Caption);
        var zh = TrainedTokenizer.Captions("zh").ToDictionary(c => c.ImageId, c => c.Caption);

        // A small tokenizer (so the model's vocabulary stays small) trained on a slice of the captions.
        var corpus = en.Values.Take(300).Concat(zh.Values.Take(100)).ToList();
        var tokenizer = XrayTokenizer.FromModel(BpeTrainer.Train(corpus, new BpeTrainerOptions(VocabSize: 700, MinFrequency: 2)));
        var config = TinyVisionLanguageModels.Config() with
        {
            TextConfig = TinyLanguageModels.Config(vocab: tokenizer.VocabSize) with { MaxPositionEmbeddings = 1024 },
            ImageTokenIndex = tokenizer.ImageId,
        };
        var model = TinyVisionLanguageModels.Create(config, seed: 7);
        string modelDir = Path.Combine(dir, "tiny-model");
        Checkpoint.Save(modelDir, model, tokenizer, new PreprocessConfig { ImageSize = 32, Channels = 1 });
        var loaded = Checkpoint.Load(modelDir);

        string Image(string name) => SharedData.File("iu-xray", "images", name + ".png");
        Study Make(string id, string split, string lang, string text, params string[] images) => new()
        {
            StudyId = id, PatientId = id, Split = split, Language = lang, Findings = text, Source = "test",
            Images = images.Select(i => new StudyImage(Image(i), Views.Frontal)).ToList(),
        };
        var studies = new List<Study>
        {
            Make("CXR2", "test", "en", en["2_1"], "2_1", "2_2"),
            Make("CXR2882", "test", "en", en["2882_1"], "2882_1") with { Boxes = [new StudyBox(0, "right lung", 10, 15, 48, 85)] },
            Make("CXR861", "train", "en", en["861_1"], "861_1") with { Boxes = [new StudyBox(0, "Right Lung", 4, 5, 40, 75)] },
            Make("CXR2577", "train", "en", en["2577_1"], "2577_1"),
            Make("CXR2-zh", "test", "zh", zh["2_1"], "2_1"),
            Make("CXR861-zh", "train", "zh", zh["861_1"], "861_1"),
            Make("CXR2577-val", "val", "en", en["2577_1"], "2577_1"),
        };
        string manifest = Path.Combine(dir, "manifest.jsonl");
        Manifest.Write(manifest, studies);
        return (loaded, manifest, studies);
    }

    private static EvalOptions Quick => new()
    {
        BatchSize = 3,
        Generation = new XrayVL.Inference.GenerationOptions { MaxNewTokens = 12 },
        ShortAnswerTokens = 6,
    };

    [Fact]
    public void WritesPredictionsMetricsReportAndPlots()
    {
        var (loaded, manifest, studies) = Fixture.Value;
        string outDir = TempDir.Create("xrayvl-eval-out");
        var reports = new List<(int Done, int Total)>();
        var result = new Evaluator(loaded).RunToFolder(manifest, outDir, Quick, new SyncProgress(reports.Add), TestContext.Current.CancellationToken);

        // Progress: from 0 to total, never backwards.
        Assert.Equal(0, reports[0].Done);
        Assert.Equal(reports[^1].Total, reports[^1].Done);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.Second.Done >= p.First.Done));

        // Every task has items; reports are asked of the three test studies only, in their own language.
        var items = result.Items;
        Assert.Equal(items.Count, result.Generations);                     // every prompt has an image: none shared
        Assert.Equal(EvalTasks.All.Order(), items.Select(i => i.Task).Distinct().Order());
        var reportItems = items.Where(i => i.Task == EvalTasks.Report).ToList();
        Assert.Equal(["CXR2", "CXR2882", "CXR2-zh"], reportItems.Select(i => i.StudyId));
        Assert.Equal(InstructionPhrases.ReportRequest("en"), reportItems[0].Prompt);
        Assert.Equal(InstructionPhrases.ReportRequest("zh"), reportItems[2].Prompt);
        Assert.Single(items, i => i.Task == EvalTasks.Ground);
        Assert.DoesNotContain(items, i => i.StudyId.Contains("861") || i.StudyId.Contains("2577"));

        // Baselines come from the training reports of the item's language; the nearest neighbour is one of them.
        var trainEn = studies.Where(s => s.Split == "train" && s.Language == "en").Select(s => s.ReportText).ToList();
        foreach (var item in reportItems.Where(i => i.Language == "en"))
        {
            Assert.Equal(4, item.Baselines!.Count);
            Assert.Contains(item.Baselines[Baselines.ConsensusName], trainEn);
            Assert.Contains(item.Baselines[Baselines.NearestNeighbourName], trainEn);
            Assert.Contains(item.Baselines[Baselines.RandomName], trainEn);
        }
        Assert.Equal(studies.Single(s => s.StudyId == "CXR861-zh").ReportText, reportItems[2].Baselines![Baselines.MostCommonName]);

        // Files: they exist and parse; metrics are in range.
        foreach (string name in new[] { "predictions.jsonl", "metrics.json", "report.md", "per_label_f1_en.png", "confusion_normal_abnormal_en.png", "report_lengths_en.png", "per_label_f1_zh.png" })
            Assert.True(File.Exists(Path.Combine(outDir, name)), name);
        var png = File.ReadAllBytes(Path.Combine(outDir, "per_label_f1_en.png"));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png.Take(4));

        var reread = EvalReport.ReadPredictions(Path.Combine(outDir, EvalReport.PredictionsFile));
        Assert.Equal(items.Select(i => (i.Id, i.Prediction)), reread.Select(i => (i.Id, i.Prediction)));

        using var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, EvalReport.MetricsFile)));
        var en = metrics.RootElement.GetProperty("report").GetProperty("en");
        Assert.Equal(2, en.GetProperty("items").GetInt32());
        foreach (string key in new[] { "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "meteor", "ce_micro_f1", "ce_macro_f1" })
        {
            Assert.InRange(en.GetProperty("model").GetProperty(key).GetDouble(), 0, 1);
            Assert.InRange(en.GetProperty("baselines").GetProperty(Baselines.NearestNeighbourName).GetProperty(key).GetDouble(), 0, 1);
        }
        Assert.True(en.GetProperty("model").GetProperty("cider").GetDouble() >= 0);
        Assert.InRange(metrics.RootElement.GetProperty("vqa").GetProperty("accuracy").GetDouble(), 0, 1);
        Assert.InRange(metrics.RootElement.GetProperty("classify").GetProperty("micro_f1").GetDouble(), 0, 1);
        Assert.InRange(metrics.RootElement.GetProperty("ground").GetProperty("mean_iou").GetDouble(), 0, 1);
        Assert.Equal(3, metrics.RootElement.GetProperty("studies").GetInt32());

        // The metrics are a function of the predictions file: recomputing from it gives the same figures.
        var again = EvalReport.Compute(reread, loaded.Name, "test");
        Assert.Equal(result.Metrics.Report!["en"].Model.Bleu1, again.Report!["en"].Model.Bleu1, 12);
        Assert.Equal(result.Metrics.Report!["en"].Baselines[Baselines.RandomName].Cider, again.Report!["en"].Baselines[Baselines.RandomName].Cider, 12);
        Assert.Equal(result.Metrics.Vqa!.Accuracy, again.Vqa!.Accuracy);

        // Image-free answers for the finding list (the training split's majority findings) and boxes (the mean training box).
        var trainLabels = studies.Where(s => s.Split == "train").Select(s => Labeler.Default.Label(s.ReportText, s.Language)).ToList();
        foreach (var item in items.Where(i => i.Task == EvalTasks.Classify))
            Assert.Equal(AnswerFormats.FindingList(Baselines.MajorityFindings(trainLabels), item.Language), item.Baselines![Baselines.MajorityFindingsName]);
        // Closed questions: the training split's most common answer to the same question, as a bare closed answer.
        Assert.All(items.Where(i => i.Task == EvalTasks.Vqa), i => Assert.NotNull(VqaAccuracy.Parse(i.Baselines![Baselines.QuestionPriorName])));
        Assert.Equal(result.Metrics.Vqa!.QuestionPriorAccuracy, again.Vqa!.QuestionPriorAccuracy);
        Assert.InRange(result.Metrics.Vqa.QuestionPriorAccuracy!.Value, 0, 1);
        var groundItem = items.Single(i => i.Task == EvalTasks.Ground);
        Assert.Equal("{<4><5><40><75>}", groundItem.Baselines![Baselines.MeanBoxName]);
        var meanBox = result.Metrics.Ground!.MeanBoxBaseline!;
        Assert.Equal(new Box(4, 5, 40, 75).IoU(new Box(10, 15, 48, 85)), meanBox.MeanIou, 12);
        Assert.NotNull(result.Metrics.Classify!.MajorityBaseline);
        Assert.Equal(result.Metrics.Classify.MajorityBaseline!.MicroF1, again.Classify!.MajorityBaseline!.MicroF1, 12);

        string md = File.ReadAllText(Path.Combine(outDir, EvalReport.ReportFile));
        Assert.Contains("| majority findings of the training split (no image) |", md);
        Assert.Contains("The mean training box of the asked-for label", md);
        Assert.Contains("question prior (the training split's most common answer to the same question, no image)", md);
        Assert.Contains("| nearest neighbour (image features) |", md);
        Assert.Contains("## Report generation (zh, 1 studies)", md);
        Assert.Contains("![per-label F1](per_label_f1_en.png)", md);
    }

    [Fact]
    public void RefusesAnEmptySplitAndUnknownTasks()
    {
        var (loaded, _, studies) = Fixture.Value;
        var evaluator = new Evaluator(loaded);
        Assert.Contains("'val'", Assert.Throws<XrayVLException>(() => evaluator.Run(studies.Where(s => s.Split != "val").ToList(), Quick with { Split = "val" }, null, TestContext.Current.CancellationToken)).Message);
        Assert.Throws<XrayVLException>(() => evaluator.Run(studies, Quick with { Tasks = ["caption"] }, null, TestContext.Current.CancellationToken));
        Assert.Contains("caption", Assert.Throws<XrayVLException>(() => EvalTasks.Parse("report,caption")).Message);
        Assert.Equal(["report", "vqa"], EvalTasks.Parse("report, vqa"));
    }

    [Fact]
    public void ReportOnlyRunWithoutBaselines()
    {
        var (loaded, _, studies) = Fixture.Value;
        var result = new Evaluator(loaded).Run(studies, Quick with { Tasks = [EvalTasks.Report], Baselines = false, Language = "en", MaxStudies = 1 }, null, TestContext.Current.CancellationToken);
        var item = Assert.Single(result.Items);
        Assert.Equal("CXR2", item.StudyId);
        Assert.Null(item.Baselines);
        Assert.Empty(result.Metrics.Report!["en"].Baselines);
        Assert.Null(result.Metrics.Vqa);
    }

    [Fact]
    public void WithoutImagesTheStudiesWhoseImagesAreMissingAreAskedOnTextAlone()
    {
        var (loaded, _, studies) = Fixture.Value;
        // Three more test studies whose images are not at hand: listed but missing, or not listed at all.
        var more = studies.Concat(
        [
            studies[0] with { StudyId = "CXR9-missing", PatientId = "CXR9", Images = [new StudyImage("/no/such/image.png", Views.Frontal)] },
            studies[0] with { StudyId = "CXR10-none", PatientId = "CXR10", Findings = "The heart is normal in size.", Images = [] },
            studies[4] with { StudyId = "CXR11-zh", PatientId = "CXR11", Images = [] },
        ]).ToList();
        var reports = new List<(int Done, int Total)>();
        var result = new Evaluator(loaded).Run(more, Quick with { Tasks = [EvalTasks.Report], WithoutImages = true }, new SyncProgress(reports.Add), TestContext.Current.CancellationToken);

        // The three test studies with images at hand (CXR2, CXR2882, CXR2-zh) are left out, and the notes count them.
        Assert.Equal(["CXR9-missing", "CXR10-none", "CXR11-zh"], result.Items.Select(i => i.StudyId));
        Assert.Contains(result.Metrics.Notes, n => n.StartsWith("3 studies", StringComparison.Ordinal) && n.Contains("left out"));
        Assert.All(result.Items, i => Assert.Empty(i.Images));
        Assert.Equal(reports[^1].Total, reports[^1].Done);
        Assert.Equal(result.Items.Count, reports[^1].Total);          // no vision features to compute

        // One prompt per language, decoded greedily: generated once per language, and each English study gets the
        // answer the model gives when asked alone.
        Assert.Equal(2, result.Generations);
        var alone = new Evaluator(loaded).Run([studies[1] with { Images = [] }], Quick with { Tasks = [EvalTasks.Report], WithoutImages = true, Baselines = false },
            null, TestContext.Current.CancellationToken);
        Assert.All(result.Items.Where(i => i.Language == "en"), i => Assert.Equal(alone.Items.Single().Prediction, i.Prediction));

        // Baselines: most common, consensus and random training reports; retrieval by image is left out, as the notes say.
        Assert.All(result.Items, i => Assert.Equal([Baselines.ConsensusName, Baselines.MostCommonName, Baselines.RandomName], i.Baselines!.Keys.Order()));
        Assert.Contains(result.Metrics.Notes, n => n.Contains("nearest-neighbour") && n.Contains("without images"));
        Assert.Equal(2, result.Metrics.Report!["en"].Items);
        Assert.Equal(1, result.Metrics.Report!["zh"].Items);

        // Only reports can be asked without an image; a split whose studies all have images has nothing to ask.
        Assert.Contains("--tasks report", Assert.Throws<XrayVLException>(() => (Quick with { WithoutImages = true }).Validate()).Message);
        Assert.Contains("no image file at hand", Assert.Throws<XrayVLException>(() => new Evaluator(loaded).Run(studies,
            Quick with { Tasks = [EvalTasks.Report], WithoutImages = true }, null, TestContext.Current.CancellationToken)).Message);
    }

    /// <summary>Progress&lt;T&gt; posts to the thread pool; this one reports in order, on the caller's thread.</summary>
    private sealed class SyncProgress(Action<(int, int)> report) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => report(value);
    }
}
