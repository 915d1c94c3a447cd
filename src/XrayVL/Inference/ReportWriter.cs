using System.Diagnostics;
using System.Text.Json.Nodes;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Imaging;

namespace XrayVL.Inference;

/// <summary>What a report says, read back: the 14 CheXpert findings (with the sentence that decided each) and the boxes it wrote.</summary>
public sealed record ReportFindings(ChexpertLabels Labels, IReadOnlyList<GridBox> Boxes)
{
    /// <summary>Labels a report (the rule labeler, in the report's language) and reads its boxes (the 0–100 grid).</summary>
    public static ReportFindings Read(string report, string language) =>
        new(Labeler.Default.Label(report, language), GridBoxes.Parse(report));

    /// <summary>All 14 CheXpert names → 1 (present), 0 (absent), −1 (uncertain) or null (not mentioned).</summary>
    public JsonObject LabelsJson()
    {
        var json = new JsonObject();
        foreach (var (name, value) in Labels.ToDictionary()) json[name] = value;
        return json;
    }

    /// <summary>For each mentioned finding, the sentence of the report that decided it.</summary>
    public JsonObject EvidenceJson()
    {
        var json = new JsonObject();
        foreach (var o in Observations.All)
            if (Labels[o] != LabelValue.NotMentioned && Labels.Evidence(o) is { } sentence) json[o.Name()] = sentence;
        return json;
    }

    /// <summary>Each box as [x1, y1, x2, y2] on the 0–100 grid.</summary>
    public static JsonArray BoxesJson(IReadOnlyList<GridBox> boxes) =>
        new([.. boxes.Select(b => (JsonNode)new JsonArray(b.X1, b.Y1, b.X2, b.Y2))]);
}

/// <summary>A written report with what it says and how it was written.</summary>
public sealed record WrittenReport(string Report, string Language, ReportFindings Findings, FinishReason? FinishReason, string Model, double Seconds)
{
    /// <summary>
    /// The JSON every front end returns for a report (<c>xrayvl report --json</c>, <c>POST /api/report</c>): report,
    /// language, labels, evidence, boxes, finish_reason, model, seconds and the disclaimer in the report's language.
    /// </summary>
    public JsonObject ToJson() => new()
    {
        ["report"] = Report,
        ["language"] = Language,
        ["labels"] = Findings.LabelsJson(),
        ["evidence"] = Findings.EvidenceJson(),
        ["boxes"] = ReportFindings.BoxesJson(Findings.Boxes),
        ["finish_reason"] = FinishReason == Inference.FinishReason.Length ? "length" : "stop",
        ["model"] = Model,
        ["seconds"] = Math.Round(Seconds, 3),
        ["disclaimer"] = Constants.Disclaimer(Language),
    };
}

/// <summary>
/// Reports, wherever they are asked for (the CLI's <c>report</c>, <c>POST /api/report</c>, the page's "Write report"):
/// a first turn on the image alone with the report request, then the report labelled and its boxes read.
/// No earlier turn of any chat reaches it, so the same image always gets the same report.
/// </summary>
public sealed class ReportWriter(IInferencePipeline pipeline, string modelName)
{
    /// <summary>The conversation a report is written in: the image, and nothing said before.</summary>
    public ChatSession Conversation(GrayImage image, string language)
    {
        var chat = new ChatSession(pipeline, language);
        chat.AddImage(image);
        return chat;
    }

    /// <summary>Writes the report of <paramref name="image"/> and reads back its findings and boxes.</summary>
    /// <param name="options">Decoding on top of the pipeline's defaults (null: the defaults).</param>
    public async Task<WrittenReport> WriteAsync(GrayImage image, string language, GenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var chat = Conversation(image, language);
        string report = await chat.AskAllAsync(pipeline.ReportRequest(language), options, cancellationToken);
        return new WrittenReport(report, language, ReportFindings.Read(report, language), chat.LastFinishReason, modelName, clock.Elapsed.TotalSeconds);
    }
}
