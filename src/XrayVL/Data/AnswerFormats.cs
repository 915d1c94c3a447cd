using XrayVL.Data.Labeler;

namespace XrayVL.Data;

/// <summary>
/// How answers are written in the training conversations, so that evaluation and the front ends can read back what a
/// model trained on them writes: finding lists and boxes on MiniGPT-Med's 0–100 grid.
/// </summary>
public static class AnswerFormats
{
    /// <summary>
    /// The answer to a finding-list question, as the training conversations write it: "Findings: cardiomegaly, pleural
    /// effusion. Possible: pneumonia." / "发现：心脏增大、胸腔积液。可能：肺炎。" / "No abnormal findings."
    /// </summary>
    public static string FindingList(ChexpertLabels labels, string lang)
    {
        bool zh = lang == "zh";
        var positive = Observations.All.Where(o => o != Observation.NoFinding && labels[o] == LabelValue.Positive).ToList();
        var uncertain = Observations.All.Where(o => o != Observation.NoFinding && labels[o] == LabelValue.Uncertain).ToList();
        if (positive.Count == 0 && uncertain.Count == 0) return zh ? "未见异常。" : "No abnormal findings.";
        var parts = new List<string>();
        if (zh)
        {
            if (positive.Count > 0) parts.Add("发现：" + string.Join("、", positive.Select(o => InstructionPhrases.Term(o, "zh"))) + "。");
            if (uncertain.Count > 0) parts.Add("可能：" + string.Join("、", uncertain.Select(o => InstructionPhrases.Term(o, "zh"))) + "。");
            return string.Concat(parts);
        }
        if (positive.Count > 0) parts.Add("Findings: " + string.Join(", ", positive.Select(o => InstructionPhrases.Term(o, "en"))) + ".");
        if (uncertain.Count > 0) parts.Add("Possible: " + string.Join(", ", uncertain.Select(o => InstructionPhrases.Term(o, "en"))) + ".");
        return string.Join(" ", parts);
    }

    /// <summary>MiniGPT-Med's box text: "{&lt;x1&gt;&lt;y1&gt;&lt;x2&gt;&lt;y2&gt;}" with integers on the 0–100 grid.</summary>
    public static string Box(StudyBox box)
    {
        static int G(double v) => (int)Math.Round(Math.Clamp(v, 0, 100), MidpointRounding.AwayFromZero);
        return $"{{<{G(box.X1)}><{G(box.Y1)}><{G(box.X2)}><{G(box.Y2)}>}}";
    }
}
