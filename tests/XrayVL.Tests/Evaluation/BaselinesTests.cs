using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class BaselinesTests
{
    [Fact]
    public void MostCommonCountsNormalisedReports()
    {
        string[] train = ["Heart normal. Lungs clear.", "No effusion.", "heart normal lungs clear", "No effusion!", "HEART NORMAL, LUNGS CLEAR.", ""];
        Assert.Equal("Heart normal. Lungs clear.", Baselines.MostCommonReport(train));
    }

    [Fact]
    public void MostCommonTieIsIndependentOfOrder()
    {
        string[] train = ["b report", "a report", "b report.", "a report."];
        Assert.Equal("a report", Baselines.MostCommonReport(train));
        Assert.Equal("a report.", Baselines.MostCommonReport(train.Reverse()));
        Assert.Throws<XrayVLException>(() => Baselines.MostCommonReport(["  "]));
    }

    [Fact]
    public void RandomReportsAreSeededDrawsFromTraining()
    {
        string[] train = ["r1", "r2", "r3", "", "r4"];
        var a = Baselines.RandomReports(train, 50, seed: 3);
        Assert.Equal(a, Baselines.RandomReports(train, 50, seed: 3));
        Assert.NotEqual(a, Baselines.RandomReports(train, 50, seed: 4));
        Assert.All(a, r => Assert.Contains(r, new[] { "r1", "r2", "r3", "r4" }));
        Assert.True(a.Distinct().Count() > 1);
    }

    [Fact]
    public void NearestNeighbourUsesCosine()
    {
        float[][] train = [[1, 0], [0, 1], [10, 10]];
        string[] reports = ["east", "north", "diagonal"];
        // [5, 0.1] is closest in angle to [1, 0] although [10, 10] is closer in Euclidean distance... and larger.
        // [0, 0] has similarity 0 to all → the first. [2, 2] equals the diagonal's direction.
        var result = Baselines.NearestNeighbourReports(train, reports, [[5, 0.1f], [0.1f, 3], [2, 2], [0, 0]]);
        Assert.Equal(["east", "north", "diagonal", "east"], result);
        Assert.Throws<XrayVLException>(() => Baselines.NearestNeighbours(train, [[1, 2, 3]]));
        Assert.Throws<XrayVLException>(() => Baselines.NearestNeighbours([], [[1, 2]]));
    }

    [Fact]
    public void ConsensusPicksTheMostTypicalWordingWhereEveryReportIsUnique()
    {
        string[] train =
        [
            "Aortic calcification. Old rib fractures on the left.",
            "The heart is normal in size. The lungs are clear. No effusion.",
            "The heart is normal in size and the lungs are clear.",
            "Heart size is normal. The lungs are clear without effusion.",
            "Large right pleural effusion with compressive atelectasis.",
        ];
        // Every report occurs once, so "most common" falls back to the first in sort order, an outlier here.
        Assert.Equal("Aortic calcification. Old rib fractures on the left.", Baselines.MostCommonReport(train));
        string consensus = Baselines.ConsensusReport(train);
        Assert.Equal(BruteForceConsensus(train), consensus);
        Assert.Contains("lungs are clear", consensus);
        Assert.Equal(consensus, Baselines.ConsensusReport(train.Reverse()));
        Assert.Equal(consensus, Baselines.ConsensusReport([.. train, "", "   "]));
        Assert.Throws<XrayVLException>(() => Baselines.ConsensusReport(["", " "]));
    }

    [Fact]
    public void ConsensusAgreesWithPairwiseMeansOnRealCaptions()
    {
        foreach (string lang in new[] { "en", "zh" })
        {
            var captions = XrayVL.Tests.Text.TrainedTokenizer.Captions(lang).Select(c => c.Caption).Take(120).ToList();
            Assert.Equal(BruteForceConsensus(captions, lang), Baselines.ConsensusReport(captions, lang));
        }
    }

    /// <summary>The definition, computed pair by pair: mean over orders 1..4 of the summed cosine to every other report.</summary>
    private static string BruteForceConsensus(IReadOnlyList<string> reports, string lang = "en")
    {
        var tokens = reports.Select(r => CaptionTokenizer.Tokenize(r, lang)).ToList();
        var scores = new double[reports.Count];
        for (int n = 1; n <= 4; n++)
        {
            var grams = tokens.Select(t => Enumerable.Range(0, Math.Max(0, t.Length - n + 1)).Select(i => string.Join(" ", t.Skip(i).Take(n)))
                .GroupBy(g => g).ToDictionary(g => g.Key, g => (double)g.Count())).ToList();
            var df = grams.SelectMany(g => g.Keys).GroupBy(k => k).ToDictionary(g => g.Key, g => g.Count());
            var vectors = grams.Select(g => g.ToDictionary(kv => kv.Key, kv => kv.Value * Math.Log((double)reports.Count / df[kv.Key]))).ToList();
            double Norm(Dictionary<string, double> v) => Math.Sqrt(v.Values.Sum(w => w * w));
            for (int a = 0; a < reports.Count; a++)
                for (int b = 0; b < reports.Count; b++)
                {
                    if (a == b || Norm(vectors[a]) == 0 || Norm(vectors[b]) == 0) continue;
                    scores[a] += vectors[a].Sum(kv => kv.Value * vectors[b].GetValueOrDefault(kv.Key)) / (Norm(vectors[a]) * Norm(vectors[b]));
                }
        }
        double best = scores.Max();
        return reports.Select((r, i) => (r, i)).Where(x => scores[x.i] >= best - 1e-9)
            .OrderBy(x => CaptionTokenizer.Normalize(x.r, lang), StringComparer.Ordinal).First().r;
    }

    [Fact]
    public void MajorityFindingsNeedMoreThanHalfOfTheTrainingStudies()
    {
        static ChexpertLabels L(params (Observation O, LabelValue V)[] set)
        {
            var l = new ChexpertLabels();
            foreach (var (o, v) in set) l[o] = v;
            return l;
        }
        var pneumonia = (Observation.Pneumonia, LabelValue.Positive);
        var opacity = (Observation.LungOpacity, LabelValue.Positive);
        var training = new[]
        {
            L(pneumonia, opacity), L(pneumonia), L(pneumonia, (Observation.LungOpacity, LabelValue.Uncertain)), L(opacity),
            L((Observation.NoFinding, LabelValue.Positive)),
        };
        // Pneumonia 3 of 5: in; opacity 2 of 5 (the uncertain one does not count): out.
        var majority = Baselines.MajorityFindings(training);
        Assert.Equal([Observation.Pneumonia], majority.With(LabelValue.Positive));
        // Opacity 2 of 4 is exactly half: not a majority; with nothing positive the answer is No Finding.
        var tie = Baselines.MajorityFindings([L(opacity), L(opacity), L(), L()]);
        Assert.Equal([Observation.NoFinding], tie.With(LabelValue.Positive));
        Assert.Throws<XrayVLException>(() => Baselines.MajorityFindings([]));
    }

    [Fact]
    public void FindingListAnswersReadBackToTheirLabels()
    {
        // The majority-findings baseline is scored through the labeler, as the model's answer is: every finding list the
        // training answers can write must read back to exactly its positive findings, in both languages.
        var wrong = new List<string>();
        foreach (string lang in new[] { "en", "zh" })
            foreach (var o in Observations.All)
            {
                var labels = new ChexpertLabels();
                labels[o] = LabelValue.Positive;
                if (o != Observation.PleuralEffusion) labels[Observation.PleuralEffusion] = LabelValue.Positive;
                string answer = AnswerFormats.FindingList(labels, lang);
                var read = Labeler.Default.Label(answer, lang);
                var expected = o == Observation.NoFinding ? [Observation.PleuralEffusion] : labels.With(LabelValue.Positive).ToList();
                if (!expected.SequenceEqual(read.With(LabelValue.Positive))) wrong.Add($"{lang} '{answer}' read as {read}");
            }
        // With nothing positive the answer is "No abnormal findings." / "未见异常。": read as No Finding alone.
        foreach (string lang in new[] { "en", "zh" })
        {
            string none = AnswerFormats.FindingList(new ChexpertLabels(), lang);
            var read = Labeler.Default.Label(none, lang);
            if (!read.With(LabelValue.Positive).SequenceEqual([Observation.NoFinding])) wrong.Add($"{lang} '{none}' read as {read}");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Fact]
    public void MeanBoxesAverageEachLabelsCorners()
    {
        var boxes = new[]
        {
            new StudyBox(0, "Right Lung", 10, 20, 40, 80), new StudyBox(0, "right lung", 20, 10, 50, 90), new StudyBox(1, "Left Lung", 55, 15, 90, 85),
        };
        var mean = Baselines.MeanBoxes(boxes);
        Assert.Equal(2, mean.Count);
        Assert.Equal((15.0, 15.0, 45.0, 85.0), (mean["RIGHT LUNG"].X1, mean["RIGHT LUNG"].Y1, mean["RIGHT LUNG"].X2, mean["RIGHT LUNG"].Y2));
        Assert.Equal("{<55><15><90><85>}", AnswerFormats.Box(mean["Left Lung"]));
    }

    [Fact]
    public void QuestionPriorAnswersEachQuestionAsTrainingMostOftenDid()
    {
        (string, string, string)[] training =
        [
            ("en", "Is there pneumonia?", "Yes. There is pneumonia."), ("en", "Is there pneumonia?", "Yes."), ("en", "Is there pneumonia?", "No."),
            ("en", "Is there a fracture?", "No."), ("en", "Is there a fracture?", "No fracture is seen."),
            ("en", "Is there edema?", "Yes."), ("en", "Is there edema?", "No."),                  // a tie: yes first
            ("zh", "有气胸吗？", "否。"), ("en", "Is the heart enlarged?", "Not a sentence a parser reads"),
        ];
        var answers = Baselines.QuestionPrior(training,
        [
            ("en", "Is there pneumonia?"), ("en", "Is there a fracture?"), ("en", "Is there edema?"),
            ("en", "Is the heart enlarged?"),                    // only an unreadable answer: the language's majority (yes 3, no 4)
            ("zh", "有肺炎吗？"),                                   // unseen text: the language's majority
            ("fr", "Y a-t-il un épanchement ?"),                 // a language without questions: the majority of all (no 5)
        ]);
        Assert.Equal(["Yes.", "No.", "Yes.", "No.", "否。", "No."], answers);
        Assert.Null(Baselines.QuestionPrior([("en", "Is there edema?", "perhaps")], [("en", "Is there edema?")]));
    }
}
