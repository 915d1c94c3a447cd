using XrayVL.Evaluation;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Evaluation;

public class ReferenceFiguresTests(ITestOutputHelper output)
{
    [Fact]
    public void R2GenTokensKeepPeriodsAsWords()
    {
        Assert.Equal(["the", "heart", "is", "normal", ".", "no", "x-ray", "effusion", "."],
            ReferenceFigures.R2GenTokens("The heart is normal. No (x-ray) effusion."));
        // List numbers and doubled periods go; every ". " ends a sentence.
        Assert.Equal(["heart", "normal", ".", "lungs", "clear", "."], ReferenceFigures.R2GenTokens("1. Heart normal.. 2. Lungs clear."));
        var vocabulary = new HashSet<string> { "heart", "." };
        Assert.Equal(["heart", "<unk>", "."], ReferenceFigures.R2GenTokens("Heart normal.", vocabulary));
        Assert.Equal(59, ReferenceFigures.R2GenTokens(string.Join(" ", Enumerable.Repeat("heart", 100)), vocabulary).Length);
        Assert.Equal(["a", "."], [.. ReferenceFigures.R2GenVocabulary(["a b.", "a c.", "a."])]);
    }

    [Fact]
    public void TextBaselinesOnASmallCorpus()
    {
        string[] train = ["The heart is normal. The lungs are clear.", "the heart is normal, the lungs are clear", "Large right pleural effusion."];
        string[] test = ["The heart is normal. The lungs are clear.", "There is a large right pleural effusion."];
        var result = ReferenceFigures.TextBaselines(train, test, randomSeeds: 2);
        Assert.Equal("The heart is normal. The lungs are clear.", result.ConstantReport);
        Assert.Equal(4, result.Rows.Count);
        var constant = result.Rows[0].Scores;
        // The constant report is exact for item 1: BLEU-1 counts 8 of 8 + 0 ... by Scorer on the same predictions.
        var direct = Scorer.Score([result.ConstantReport, result.ConstantReport], test.Select(t => (IReadOnlyList<string>)[t]).ToList());
        Assert.Equal(direct.Bleu4, constant.Bleu4, 12);
        Assert.Equal(direct.CeMicroF1, constant.CeMicroF1, 12);
        string table = result.ToMarkdown();
        Assert.Contains("| R2Gen (Chen et al., EMNLP 2020), published | R2Gen | 0.470 | 0.304 | 0.219 | 0.165 | 0.187 | 0.371 |", table);
        Assert.Contains("random training report (mean of seeds 0–1)", table);
    }

    [Fact]
    public void IuTextBaselinesOnTheR2GenSplit()
    {
        // One random seed keeps the test short; docs/evaluation.md shows the mean of 5 (IuTextBaselines' default).
        var result = ReferenceFigures.IuTextBaselines(SharedData.Root, randomSeeds: 1);
        output.WriteLine(result.ToMarkdown());
        output.WriteLine($"constant report: {result.ConstantReport}");
        Assert.Equal((2069, 590), (result.TrainReports, result.TestReports));
        foreach (var row in result.Rows)
        {
            var s = row.Scores;
            Assert.InRange(s.Bleu1, 0.05, 0.6);
            Assert.True(s.Bleu1 >= s.Bleu2 && s.Bleu2 >= s.Bleu3 && s.Bleu3 >= s.Bleu4, row.Name);
            Assert.InRange(s.RougeL, 0.05, 0.6);
            Assert.InRange(s.CeMicroF1, 0, 1);
        }
        // The constant rows do not depend on seeds: they are the figures docs/evaluation.md prints (coco-caption tokens,
        // then R2Gen-style tokens), and they agree with an independent re-implementation of coco-caption's scorers.
        Assert.Equal("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.", result.ConstantReport);
        var coco = result.Rows.Single(r => r.Name.StartsWith("most common") && r.Tokenization == "coco-caption").Scores;
        Assert.Equal([0.177, 0.109, 0.079, 0.058, 0.251, 0.327], new[] { coco.Bleu1, coco.Bleu2, coco.Bleu3, coco.Bleu4, coco.RougeL, coco.Cider }.Select(v => Math.Round(v, 3)));
        var r2gen = result.Rows.Single(r => r.Name.StartsWith("most common") && r.Tokenization == "r2gen").Scores;
        Assert.Equal([0.241, 0.147, 0.105, 0.081, 0.312, 0.344], new[] { r2gen.Bleu1, r2gen.Bleu2, r2gen.Bleu3, r2gen.Bleu4, r2gen.RougeL, r2gen.Cider }.Select(v => Math.Round(v, 3)));

        // The constant report's only positive label is No Finding, so its macro F1 is that label's F1 over 14.
        var constant = result.Rows[0].Scores;
        Assert.Equal(constant.ClinicalEfficacy!.PerLabel[(int)XrayVL.Data.Observation.NoFinding].F1 / 14, constant.CeMacroF1, 12);
        Assert.True(constant.CeMacroF1 > 0);
    }
}
