using System.Text.Json;

namespace XrayVL.Data.Sources;

/// <summary>
/// A user's own data as JSONL. Each line is either a conversation record in the generic format
/// (<see cref="ConversationJsonl"/>: <c>{"images": [...], "conversations": [...]}</c>) or a manifest study line
/// (has "study_id" and no "conversations"). A conversation becomes a study that keeps its conversation (instruction
/// building passes it through); the first answer is taken as the report when the record's task is absent or "report".
/// Relative image paths are taken from the image folder, else from the JSONL file's folder.
/// </summary>
public sealed class JsonlSource : IReportSource
{
    public string Name => "jsonl";

    public SourceResult Read(SourceOptions options)
    {
        string path = options.Input;
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        string baseDir = options.Images ?? Path.GetDirectoryName(Path.GetFullPath(path))!;
        var result = new SourceResult(Name) { MaxListed = options.MaxListed, ImagesChecked = true };
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (line, text) in Manifest.ReadLines(path))
        {
            result.Records++;
            string where = $"{path}:{line}";
            bool isConversation;
            try
            {
                using var doc = JsonDocument.Parse(text);
                isConversation = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("conversations", out _);
            }
            catch (JsonException e) { throw new XrayVLException($"{where}: invalid JSON ({e.Message.Split('\n')[0]})", e); }

            Study study;
            if (isConversation)
            {
                var c = ConversationJsonl.Parse(text, where, $"jsonl-{line}");
                string? report = c.Task is "report" or "custom" && c.Turns.FirstOrDefault(t => t.Role == "assistant") is { } answer
                    ? answer.Text : null;
                study = new Study
                {
                    StudyId = c.Id,
                    PatientId = c.PatientId ?? c.StudyId ?? c.Id,
                    Images = c.Images.Select(i => new StudyImage(i)).ToList(),
                    Findings = report ?? "",
                    Language = options.Language ?? c.Language,
                    Split = c.Split,
                    Source = Name,
                    Conversations = c.Turns,
                    Meta = new Dictionary<string, string> { ["task"] = c.Task },
                };
            }
            else
            {
                study = Manifest.ParseLine(text, where);
                if (options.Language != null) study = study with { Language = options.Language };
            }
            if (!ids.Add(study.StudyId)) throw new XrayVLException($"{where}: id '{study.StudyId}' appears twice");

            var images = study.Images.Select(i =>
            {
                string full = Path.IsPathRooted(i.Path) ? i.Path : Path.GetFullPath(Path.Combine(baseDir, i.Path));
                return new ResolvedImage(i with { Path = full }, File.Exists(full));
            }).ToList();
            result.Add(study, images, options.KeepMissingImages);
        }
        return result;
    }
}
