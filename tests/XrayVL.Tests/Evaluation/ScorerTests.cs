using XrayVL.Tests.Support;
using System.Text.Json;
using XrayVL.Evaluation;
using XrayVL.Tests.Data;

namespace XrayVL.Tests.Evaluation;

public class ScorerTests
{
    [Fact]
    public void JsonHasTheDocumentedKeys()
    {
        var scores = Scorer.Score(["The heart is normal."], [["The heart is normal in size."]]);
        using var doc = JsonDocument.Parse(scores.ToJson());
        var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(["bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "meteor", "ce_micro_f1", "ce_macro_f1"], keys.Take(9));
        Assert.DoesNotContain("clinical_efficacy", keys);
        Assert.Equal(scores.Bleu1, doc.RootElement.GetProperty("bleu1").GetDouble());
        Assert.DoesNotContain('\n', scores.ToJson());
    }

    [Fact]
    public void MetricsAgreeWithTheirOwnEntryPoints()
    {
        string[] preds = ["The heart is normal. No effusion.", "Large right pleural effusion.", ""];
        IReadOnlyList<string>[] refs = [["The heart is normal in size. No pleural effusion.", "Heart normal."], ["There is a large right pleural effusion."], ["Lungs are clear."]];
        var scores = Scorer.Score(preds, refs);
        var c = preds.Select(p => (IReadOnlyList<string>)CaptionTokenizer.Tokenize(p)).ToList();
        var r = refs.Select(rs => (IReadOnlyList<IReadOnlyList<string>>)rs.Select(x => (IReadOnlyList<string>)CaptionTokenizer.Tokenize(x)).ToList()).ToList();
        Assert.Equal(Bleu.Corpus(c, r).Scores[3], scores.Bleu4, 12);
        Assert.Equal(RougeL.Corpus(c, r).Score, scores.RougeL, 12);
        Assert.Equal(Cider.Corpus(c, r).Score, scores.Cider, 12);
        Assert.Equal(Meteor.Corpus(c, r).Score, scores.Meteor, 12);
        // CE labels the first reference of each item: effusion found in item 2 on both sides.
        Assert.Equal(1, scores.ClinicalEfficacy!.PerLabel[(int)XrayVL.Data.Observation.PleuralEffusion].TruePositives);
        Assert.Equal(3, scores.Items);
    }

    [Fact]
    public void IdenticalTextsScoreAtTheTop()
    {
        string[] texts = ["The heart is enlarged. There is a small left pleural effusion.", "No acute cardiopulmonary abnormality. Lungs are clear."];
        var s = Scorer.Score(texts, texts.Select(t => (IReadOnlyList<string>)[t]).ToList());
        Assert.Equal(1.0, s.Bleu4, 1e-8);
        Assert.Equal(1.0, s.RougeL, 12);
        Assert.True(s.Meteor > 0.99);
        Assert.Equal(1.0, s.CeMicroF1, 12);
    }

    [Fact]
    public void ChineseIsScoredOnCharacters()
    {
        // "心脏正常" vs "心脏大小正常": 4 of 4 characters match, c = 4, r = 6 → BLEU-1 = exp(1 − 6/4).
        var s = Scorer.Score(["心脏正常。"], [["心脏大小正常。"]], "zh");
        Assert.Equal(Math.Exp(1 - 1.5), s.Bleu1, 1e-8);
        Assert.Equal("zh", s.Language);
    }

    [Fact]
    public void ScoreFilesReadsLinesAndSeveralReferences()
    {
        using var dir = new TempDir();
        string pred = dir.Write("pred.txt", "The heart is normal.\n\nNo effusion.\n");
        string reference = dir.Write("ref.txt", "The heart is normal in size. ||| Heart normal.\nLungs are clear.\nNo pleural effusion.\n");
        var s = Scorer.ScoreFiles(pred, reference);
        var expected = Scorer.Score(["The heart is normal.", "", "No effusion."],
            [["The heart is normal in size.", "Heart normal."], ["Lungs are clear."], ["No pleural effusion."]]);
        Assert.Equal(expected.Bleu1, s.Bleu1, 12);
        Assert.Equal(expected.Cider, s.Cider, 12);
        Assert.Equal(3, s.Items);
        Assert.Equal(["a", "b", "c"], Scorer.SplitReferences(" a ||| b|||c ||| "));
    }

    /// <summary>Chinese reports scored as English used to give CE micro F1 1.000 to contradictory reports: the default
    /// language comes from the texts' script, and an explicit one they contradict is refused.</summary>
    [Fact]
    public void ScoreFilesDetectsTheLanguageAndRefusesAContradictedOne()
    {
        using var dir = new TempDir();
        string pred = dir.Write("pred.txt", "心脏增大，双侧胸腔积液。\n");
        string reference = dir.Write("ref.txt", "心脏大小正常，未见胸腔积液。\n");
        var auto = Scorer.ScoreFiles(pred, reference);
        Assert.Equal("zh", auto.Language);
        Assert.True(auto.CeMicroF1 < 0.5, $"contradictory reports: CE micro F1 {auto.CeMicroF1}");
        var e = Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(pred, reference, "en"));
        Assert.Equal($"{reference}: the text is Chinese (CJK characters dominate) but --lang is en; use --lang zh or auto", e.Message);
        string english = dir.Write("en.txt", "The heart is enlarged.\n");
        Assert.StartsWith($"{english}: the text has no Chinese characters but --lang is zh",
            Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(english, english, "zh")).Message);
        // A prediction file in the other language than its references is refused too.
        Assert.StartsWith($"{english}: the text has no Chinese characters",
            Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(english, reference)).Message);
    }

    [Fact]
    public void ScoreFilesSkipsBlankReferencesAndRefusesMismatchedFiles()
    {
        using var dir = new TempDir();
        string pred = dir.Write("pred.txt", "a b c\nx y\n");
        string reference = dir.Write("ref.txt", "a b c\n   \n");
        var s = Scorer.ScoreFiles(pred, reference);
        Assert.Equal((1, 1), (s.Items, s.SkippedEmptyReferences));
        Assert.Equal(1.0, s.Bleu1, 1e-8);

        string longer = dir.Write("ref3.txt", "a\nb\nc\n");
        var e = Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(pred, longer));
        Assert.Contains(pred, e.Message);
        Assert.Contains(longer, e.Message);
        Assert.Contains("2 lines", e.Message);
        Assert.Contains("has 3", e.Message);
        Assert.Contains("missing.txt", Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(dir.File("missing.txt"), longer)).Message);
        Assert.Throws<XrayVLException>(() => Scorer.ScoreFiles(pred, dir.Write("blank.txt", "\n\n")));
        Assert.Throws<XrayVLException>(() => Scorer.Score(["a"], [["a"]], "fr"));
    }
}
