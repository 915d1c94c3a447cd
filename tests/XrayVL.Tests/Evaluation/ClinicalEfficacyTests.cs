using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Evaluation;

namespace XrayVL.Tests.Evaluation;

public class ClinicalEfficacyTests
{
    /// <summary>A 14-entry vector with the given observations positive.</summary>
    private static bool[] V(params Observation[] positive)
    {
        var v = new bool[Observations.Names.Count];
        foreach (var o in positive) v[(int)o] = true;
        return v;
    }

    [Fact]
    public void HandComputedMicroAndMacro()
    {
        // Item 1: pred {Cardiomegaly, Edema}, ref {Cardiomegaly, Pleural Effusion}
        // Item 2: pred {No Finding},            ref {No Finding}
        // Item 3: pred {Edema},                 ref {Cardiomegaly}
        // Per label: Cardiomegaly TP1 FN1 → P 1, R 1/2, F1 2/3; Edema FP2 → 0; Pleural Effusion FN1 → 0;
        //            No Finding TP1 → 1; the other 10 labels have no positive → 0.
        // Micro: TP 2, FP 2, FN 2 → P = R = F1 = 1/2. Macro F1 = (2/3 + 1)/14; macro P = (1 + 0 + 1)/14; macro R = (1/2 + 1)/14.
        // Accuracy: 42 (item, label) pairs, 4 disagree (item 1 Edema, Pleural Effusion; item 3 Edema, Cardiomegaly)
        //   → 38/42. Exact match: item 2 only → 1/3.
        var preds = new[] { V(Observation.Cardiomegaly, Observation.Edema), V(Observation.NoFinding), V(Observation.Edema) };
        var refs = new[] { V(Observation.Cardiomegaly, Observation.PleuralEffusion), V(Observation.NoFinding), V(Observation.Cardiomegaly) };
        var ce = ClinicalEfficacy.FromVectors(preds, refs);

        var cardio = ce.PerLabel[(int)Observation.Cardiomegaly];
        Assert.Equal((1, 0, 1, 1), (cardio.TruePositives, cardio.FalsePositives, cardio.FalseNegatives, cardio.TrueNegatives));
        Assert.Equal(2.0 / 3, cardio.F1, 12);
        Assert.Equal(0, ce.PerLabel[(int)Observation.Edema].F1);
        Assert.Equal(0, ce.PerLabel[(int)Observation.Fracture].F1);
        Assert.Equal(1.0, ce.PerLabel[(int)Observation.NoFinding].F1);

        Assert.Equal(0.5, ce.MicroPrecision, 12);
        Assert.Equal(0.5, ce.MicroRecall, 12);
        Assert.Equal(0.5, ce.MicroF1, 12);
        Assert.Equal((2.0 / 3 + 1) / 14, ce.MacroF1, 12);
        Assert.Equal(2.0 / 14, ce.MacroPrecision, 12);
        Assert.Equal(1.5 / 14, ce.MacroRecall, 12);
        Assert.Equal(38.0 / 42, ce.Accuracy, 12);
        Assert.Equal(1.0 / 3, ce.ExactMatch, 12);
        Assert.Equal(3, ce.Items);
    }

    [Fact]
    public void OnlyPositiveCountsUnlessUncertainIsAskedFor()
    {
        var pred = new ChexpertLabels { [Observation.Pneumonia] = LabelValue.Uncertain, [Observation.Edema] = LabelValue.Negative };
        var reference = new ChexpertLabels { [Observation.Pneumonia] = LabelValue.Positive };
        var strict = ClinicalEfficacy.FromLabels([pred], [reference]);
        Assert.Equal(0, strict.MicroF1);
        Assert.Equal(1, strict.PerLabel[(int)Observation.Pneumonia].FalseNegatives);
        var lenient = ClinicalEfficacy.FromLabels([pred], [reference], uncertainAsPositive: true);
        Assert.Equal(1.0, lenient.MicroF1);
    }

    [Fact]
    public void TextsGoThroughTheLabeler()
    {
        var ce = ClinicalEfficacy.FromTexts(
            ["There is a large right pleural effusion.", "The lungs are clear. No pneumothorax."],
            ["Large right pleural effusion is present.", "Heart size normal. Lungs are clear."]);
        var effusion = ce.PerLabel[(int)Observation.PleuralEffusion];
        Assert.Equal(1, effusion.TruePositives);
        Assert.Equal(1.0, effusion.F1);
        Assert.Equal(1.0, ce.MicroF1);
        Assert.Throws<ArgumentException>(() => ClinicalEfficacy.FromVectors([new bool[3]], [new bool[3]]));
    }
}
