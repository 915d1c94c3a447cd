using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using XrayVL.IO;

namespace XrayVL.Data;

/// <summary>
/// A training conversation in a neutral form: turns with roles "user"/"assistant", each with the number of images it
/// carries (the chat template places them), plus the image paths. The lead's ChatTemplate maps it to tokens.
/// </summary>
public sealed record TrainingConversation
{
    public required string Id { get; init; }
    /// <summary>"report", "vqa", "findings", "grounding", "multi_turn", or the task a user's file names ("custom" when none).</summary>
    public required string Task { get; init; }
    public required string Language { get; init; }
    public IReadOnlyList<string> Images { get; init; } = [];
    public required IReadOnlyList<ConversationTurn> Turns { get; init; }
    public string? StudyId { get; init; }
    public string? PatientId { get; init; }
    public string? Split { get; init; }
}

/// <summary>
/// The generic conversation JSONL, one record per line (LLaVA's shape, with a list of images):
/// <c>{"id", "task", "language", "study_id", "patient_id", "split", "images": [...], "conversations": [{"from": "human", "value": "&lt;image&gt;\n..."}, {"from": "gpt", "value": "..."}]}</c>.
/// Only images and conversations are required; "from" may also be "user"/"assistant" (or "role"/"content" keys);
/// an "image" string is read as a one-image list. Each &lt;image&gt; placeholder in a turn counts one image of that turn.
/// </summary>
public static class ConversationJsonl
{
    public const string ImagePlaceholder = "<image>";

    public static int Write(string path, IEnumerable<TrainingConversation> conversations) =>
        AtomicFile.WriteLines(path, conversations.Select(ToLine));

    public static string ToLine(TrainingConversation c)
    {
        var turns = new JsonArray();
        foreach (var t in c.Turns)
        {
            var sb = new StringBuilder();
            for (int i = 0; i < t.Images; i++) sb.Append(ImagePlaceholder).Append('\n');
            sb.Append(t.Text);
            turns.Add(new JsonObject { ["from"] = t.Role == "user" ? "human" : "gpt", ["value"] = sb.ToString() });
        }
        var o = new JsonObject
        {
            ["id"] = c.Id,
            ["task"] = c.Task,
            ["language"] = c.Language,
        };
        if (c.StudyId != null) o["study_id"] = c.StudyId;
        if (c.PatientId != null) o["patient_id"] = c.PatientId;
        if (c.Split != null) o["split"] = c.Split;
        o["images"] = new JsonArray(c.Images.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray());
        o["conversations"] = turns;
        return o.ToJsonString(Json.Line);
    }

    public static List<TrainingConversation> Read(string path) =>
        Manifest.ReadLines(path).Select(l => Parse(l.Text, $"{path}:{l.Line}", $"line{l.Line}")).ToList();

    /// <summary>Parses one record; <paramref name="where"/> ("file:line") prefixes errors, <paramref name="fallbackId"/> names records without an id.</summary>
    public static TrainingConversation Parse(string json, string where, string fallbackId)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException e) { throw new XrayVLException($"{where}: invalid JSON ({e.Message.Split('\n')[0]})", e); }
        if (node is not JsonObject o) throw new XrayVLException($"{where}: expected a JSON object");

        var images = new List<string>();
        if (o["images"] is JsonArray arr)
        {
            foreach (var i in arr)
            {
                images.Add(i is JsonValue v && v.TryGetValue(out string? s) && !string.IsNullOrWhiteSpace(s)
                    ? s : throw new XrayVLException($"{where}: images must be a list of paths"));
            }
        }
        else if (o["image"] is JsonValue single && single.TryGetValue(out string? one)) images.Add(one);
        else if (o["images"] != null || o["image"] != null) throw new XrayVLException($"{where}: images must be a list of paths");

        if (o["conversations"] is not JsonArray conv || conv.Count == 0)
            throw new XrayVLException($"{where}: no conversations list");
        var turns = new List<ConversationTurn>();
        foreach (var t in conv)
        {
            if (t is not JsonObject turn) throw new XrayVLException($"{where}: a conversation turn is not an object");
            string from = Str(turn, "from") ?? Str(turn, "role") ?? throw new XrayVLException($"{where}: a turn has no 'from'");
            string value = Str(turn, "value") ?? Str(turn, "content") ?? throw new XrayVLException($"{where}: a turn has no 'value'");
            string role = from.ToLowerInvariant() switch
            {
                "human" or "user" => "user",
                "gpt" or "assistant" or "model" or "bot" => "assistant",
                _ => throw new XrayVLException($"{where}: unknown turn role '{from}' (human/user or gpt/assistant)"),
            };
            int count = 0;
            int at;
            while ((at = value.IndexOf(ImagePlaceholder, StringComparison.Ordinal)) >= 0)
            {
                count++;
                int end = at + ImagePlaceholder.Length;
                if (end < value.Length && value[end] == '\n') end++;
                value = value[..at] + value[end..];
            }
            turns.Add(new ConversationTurn(role, value.Trim(), count));
        }
        int placed = turns.Sum(t => t.Images);
        if (placed > images.Count)
            throw new XrayVLException($"{where}: {placed} <image> placeholders but {images.Count} images");
        if (placed < images.Count)
        {
            // Images without placeholders go with the first user turn (LLaVA files often omit the placeholder).
            int first = turns.FindIndex(t => t.Role == "user");
            if (first < 0) throw new XrayVLException($"{where}: images but no user turn");
            turns[first] = turns[first] with { Images = turns[first].Images + images.Count - placed };
        }
        string id = Str(o, "id") ?? fallbackId;
        string text = string.Concat(turns.Select(t => t.Text));
        return new TrainingConversation
        {
            Id = id,
            Task = Str(o, "task") ?? "custom",
            Language = Str(o, "language") ?? Labeler.Labeler.DetectLanguage(text),
            Images = images,
            Turns = turns,
            StudyId = Str(o, "study_id"),
            PatientId = Str(o, "patient_id"),
            Split = Splits.NormalizeName(Str(o, "split")),
        };
    }

    private static string? Str(JsonObject o, string key) =>
        o[key] is JsonValue v && v.TryGetValue(out string? s) ? s : o[key] is JsonValue n ? n.ToJsonString() : null;
}
