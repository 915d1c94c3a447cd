using System.Text;
using System.Text.Json;
using XrayVL.IO;

namespace XrayVL.Data;

/// <summary>The manifest: one <see cref="Study"/> per line (JSONL, <see cref="Json.Line"/> conventions).</summary>
public static class Manifest
{
    /// <summary>
    /// Writes studies to a temporary file beside <paramref name="path"/> and renames it over the target at the end: when
    /// anything fails midway (the studies enumerable included) the temporary file is removed and the target is untouched.
    /// Returns the number of lines written.
    /// </summary>
    public static int Write(string path, IEnumerable<Study> studies) =>
        AtomicFile.WriteLines(path, studies.Select(s => JsonSerializer.Serialize(s, Json.Line)));

    public static List<Study> Read(string path) =>
        ReadLines(path).Select(l => ParseLine(l.Text, $"{path}:{l.Line}")).ToList();

    /// <summary>One manifest line, validated; <paramref name="where"/> ("file:line") starts every error message.</summary>
    public static Study ParseLine(string text, string where)
    {
        Study? study;
        try { study = JsonSerializer.Deserialize<Study>(text, Json.Line); }
        catch (JsonException e) { throw new XrayVLException($"{where}: invalid manifest line ({FirstLine(e.Message)})", e); }
        if (study == null) throw new XrayVLException($"{where}: null instead of a study");
        if (string.IsNullOrWhiteSpace(study.StudyId)) throw new XrayVLException($"{where}: empty study_id");
        if (string.IsNullOrWhiteSpace(study.PatientId)) throw new XrayVLException($"{where}: empty patient_id");
        if (study.Images == null) throw new XrayVLException($"{where}: images is null");
        if (study.Images.Any(i => i == null || string.IsNullOrWhiteSpace(i.Path))) throw new XrayVLException($"{where}: an image has no path");
        if (study.Labels != null)
        {
            foreach (var (name, value) in study.Labels)
            {
                if (!Observations.TryParse(name, out _)) throw new XrayVLException($"{where}: unknown label '{name}'");
                if (value is not (null or 1 or 0 or -1)) throw new XrayVLException($"{where}: label '{name}' is {value}, not 1, 0, -1 or null");
            }
        }
        return study;
    }

    /// <summary>The non-blank lines of a UTF-8 text file with their 1-based line numbers.</summary>
    internal static IEnumerable<(int Line, string Text)> ReadLines(string path)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: file not found");
        int n = 0;
        foreach (string line in File.ReadLines(path, Encoding.UTF8))
        {
            n++;
            if (!string.IsNullOrWhiteSpace(line)) yield return (n, line);
        }
    }

    private static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
