namespace XrayVL.Evaluation;

/// <summary>An axis-aligned box on the 0–100 grid (x right, y down); corners are put in order when parsed.</summary>
public readonly record struct Box(double X1, double Y1, double X2, double Y2)
{
    public double Area => Math.Max(0, X2 - X1) * Math.Max(0, Y2 - Y1);

    /// <summary>Intersection over union of the two areas (0 when both are empty).</summary>
    public double IoU(Box other)
    {
        double w = Math.Min(X2, other.X2) - Math.Max(X1, other.X1);
        double h = Math.Min(Y2, other.Y2) - Math.Max(Y1, other.Y1);
        double intersection = w > 0 && h > 0 ? w * h : 0;
        double union = Area + other.Area - intersection;
        return union <= 0 ? 0 : intersection / union;
    }
}

/// <summary>Mean IoU and accuracy at IoU ≥ 0.5 over the items, with the per-item IoU.</summary>
public sealed record GroundingResult(double MeanIoU, double AccuracyAt50, int Items, int Unparsed, IReadOnlyList<double> PerItem);

/// <summary>
/// Grounding scores for boxes written as text, MiniGPT-Med style as <see cref="Data.AnswerFormats.Box"/> writes them:
/// <c>{&lt;x1&gt;&lt;y1&gt;&lt;x2&gt;&lt;y2&gt;}</c>, read by <see cref="Data.GridBoxes.Parse"/> — the parser the server
/// uses to draw boxes, so that a box scored here is a box a user sees. It is strict: braces and exactly four integers
/// on the 0–100 grid; "{&lt;56&gt;&lt;12&gt;&lt;98&gt;&lt;87&gt;&lt;89&gt;&lt;89&gt;}" is not a box. An item's IoU is that of the first
/// predicted box with the best-overlapping reference box; a prediction with no box scores IoU 0 (and is counted as
/// unparsed). Mean IoU = mean over items; accuracy = share with IoU ≥ 0.5.
/// </summary>
public static class Grounding
{
    public const double Threshold = 0.5;

    /// <summary>Every well-formed box in the text, in order (<see cref="Data.GridBoxes.Parse"/>).</summary>
    public static List<Box> Parse(string text) => [.. Data.GridBoxes.Parse(text).Select(b => new Box(b.X1, b.Y1, b.X2, b.Y2))];

    public static GroundingResult Score(IReadOnlyList<string> predictions, IReadOnlyList<string> references)
    {
        if (predictions.Count != references.Count)
            throw new ArgumentException($"{predictions.Count} predictions but {references.Count} references");
        var perItem = new List<double>();
        int unparsed = 0;
        for (int i = 0; i < predictions.Count; i++)
        {
            var truth = Parse(references[i]);
            if (truth.Count == 0) throw new XrayVLException($"reference {i + 1} holds no box: '{references[i]}'");
            var predicted = Parse(predictions[i]);
            if (predicted.Count == 0) { unparsed++; perItem.Add(0); continue; }
            perItem.Add(truth.Max(t => predicted[0].IoU(t)));
        }
        int n = perItem.Count;
        return new GroundingResult(n == 0 ? 0 : perItem.Average(), n == 0 ? 0 : (double)perItem.Count(v => v >= Threshold) / n, n, unparsed, perItem);
    }
}
