using XrayVL.Data;
using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class VqaAccuracyTests
{
    [Theory]
    [InlineData("Yes.", ClosedAnswer.Yes)] [InlineData("yes, there is a small effusion", ClosedAnswer.Yes)] [InlineData("  YES", ClosedAnswer.Yes)]
    [InlineData("No. There is no sign of pneumothorax.", ClosedAnswer.No)] [InlineData("no", ClosedAnswer.No)]
    [InlineData("Uncertain. There may be pneumonia.", ClosedAnswer.Uncertain)] [InlineData("Possibly, a small opacity.", ClosedAnswer.Uncertain)]
    [InlineData("Not sure.", ClosedAnswer.Uncertain)] [InlineData("Not seen.", ClosedAnswer.No)]
    [InlineData("是。存在胸腔积液。", ClosedAnswer.Yes)] [InlineData("否。未见气胸。", ClosedAnswer.No)] [InlineData("不确定。可能存在肺炎。", ClosedAnswer.Uncertain)]
    [InlineData("不是", ClosedAnswer.No)] [InlineData("没有", ClosedAnswer.No)] [InlineData("可能有", ClosedAnswer.Uncertain)] [InlineData("有。", ClosedAnswer.Yes)]
    public void ParsesClosedAnswers(string answer, ClosedAnswer expected) => Assert.Equal(expected, VqaAccuracy.Parse(answer));

    [Theory]
    [InlineData("")] [InlineData("The heart is normal.")] [InlineData("yesterday")] [InlineData("心脏正常")]
    public void OtherTextIsNotAnAnswer(string answer) => Assert.Null(VqaAccuracy.Parse(answer));

    [Fact]
    public void WrittenAnswersParseBack()
    {
        foreach (var answer in Enum.GetValues<ClosedAnswer>())
            foreach (string lang in new[] { "en", "zh" })
                Assert.Equal(answer, VqaAccuracy.Parse(VqaAccuracy.Write(answer, lang)));
    }

    [Fact]
    public void AccuracyAndConfusion()
    {
        // 4 questions: right, wrong (no for yes), unparsed, right.
        var result = VqaAccuracy.Score(["Yes.", "No.", "The heart is normal.", "否。"], ["Yes. There is X.", "Yes.", "No.", "否。未见气胸。"]);
        Assert.Equal(0.5, result.Accuracy);
        Assert.Equal((2, 4, 1), (result.Correct, result.Total, result.Unparsed));
        Assert.Equal(1, result.Confusion[(int)ClosedAnswer.Yes, (int)ClosedAnswer.Yes]);
        Assert.Equal(1, result.Confusion[(int)ClosedAnswer.Yes, (int)ClosedAnswer.No]);
        Assert.Equal(1, result.Confusion[(int)ClosedAnswer.No, 3]);
        Assert.Equal(1, result.Confusion[(int)ClosedAnswer.No, (int)ClosedAnswer.No]);
        Assert.Throws<XrayVLException>(() => VqaAccuracy.Score(["Yes"], ["The heart is normal."]));
    }
}

public class GroundingTests
{
    [Fact]
    public void ParsesTheInstructionBoxFormat()
    {
        string text = AnswerFormats.Box(new StudyBox(0, "right lung", 10.4, 20, 45.6, 80));
        Assert.Equal("{<10><20><46><80>}", text);
        Assert.Equal([new Box(10, 20, 46, 80)], Grounding.Parse("The right lung is at " + text + "."));
        Assert.Equal([new Box(1, 2, 3, 4)], Grounding.Parse("<10><20><30><40> and {< 3 ><4><1><2>}"));     // braces required; corners ordered
        // What the server would not draw is not scored either: more or fewer than four numbers, decimals, off the grid.
        foreach (string malformed in new[] { "{<56><12><98><87><89><89>}", "{<10><20><30>}", "{<1.5><2><3><4>}", "{<-5><0><20><50>}", "{<0><0><120><50>}", "left lung <10><20>" })
        {
            Assert.Empty(Grounding.Parse(malformed));
            Assert.Empty(GridBoxes.Parse(malformed));
        }
    }

    [Fact]
    public void IoUByHand()
    {
        // (0,0)-(10,10) and (5,5)-(15,15): intersection 25, union 100 + 100 − 25 = 175.
        Assert.Equal(25.0 / 175, new Box(0, 0, 10, 10).IoU(new Box(5, 5, 15, 15)), 12);
        Assert.Equal(1.0, new Box(1, 2, 3, 4).IoU(new Box(1, 2, 3, 4)), 12);
        Assert.Equal(0.0, new Box(0, 0, 10, 10).IoU(new Box(10, 0, 20, 10)));
        // (0,0)-(10,10) inside (0,0)-(20,10): 100 / 200.
        Assert.Equal(0.5, new Box(0, 0, 10, 10).IoU(new Box(0, 0, 20, 10)), 12);
    }

    [Fact]
    public void MeanIoUAndAccuracyAtHalf()
    {
        // IoUs: 1, 0.5 (counts: ≥ 0.5), 25/175, 0 (no box in the prediction).
        var result = Grounding.Score(
            ["{<0><0><10><10>}", "{<0><0><10><10>}", "{<0><0><10><10>}", "I cannot find it."],
            ["{<0><0><10><10>}", "{<0><0><20><10>}", "{<5><5><15><15>}", "{<1><1><2><2>}"]);
        Assert.Equal((1 + 0.5 + 25.0 / 175 + 0) / 4, result.MeanIoU, 12);
        Assert.Equal(0.5, result.AccuracyAt50, 12);
        Assert.Equal((4, 1), (result.Items, result.Unparsed));
        Assert.Throws<XrayVLException>(() => Grounding.Score(["{<0><0><1><1>}"], ["no box here"]));
    }
}

public class VqaMajorityBaselineTests
{
    [Fact]
    public void MajorityBaselineIsTheShareOfTheMostCommonReferenceAnswer()
    {
        // References: no ×3, yes ×1; the model answers no, yes, yes, no → 3 of 4 correct; always "no" is also 3 of 4.
        (string Prediction, string Reference)[] qa = [("No.", "No."), ("Yes.", "No."), ("Yes.", "Yes."), ("No.", "No.")];
        var items = qa.Select((q, i) => new XrayVL.Evaluation.EvalItem
        {
            Id = $"s{i}-vqa", Task = XrayVL.Evaluation.EvalTasks.Vqa, StudyId = $"s{i}", Language = "en",
            Prompt = "Is there a pleural effusion?", Prediction = q.Prediction, References = [q.Reference],
        }).ToList();
        var vqa = XrayVL.Evaluation.EvalReport.Compute(items, "m", "test").Vqa!;
        Assert.Equal(0.75, vqa.Accuracy, 12);
        Assert.Equal("no", vqa.MajorityAnswer);
        Assert.Equal(0.75, vqa.MajorityAccuracy, 12);
    }
}
