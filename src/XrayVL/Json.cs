using System.Text.Json;
using System.Text.Json.Serialization;

namespace XrayVL;

/// <summary>The project's JSON conventions: HF-style snake_case keys, indented files, UTF-8 text kept readable (Chinese unescaped).</summary>
public static class Json
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Compact variant for one-object-per-line files (JSONL).</summary>
    public static readonly JsonSerializerOptions Line = new(Options) { WriteIndented = false };

    /// <summary>Writes text to a temporary file beside <paramref name="path"/> and renames it over: readers never see half a file.</summary>
    public static void WriteAllTextAtomic(string path, string text)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string tmp = full + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(tmp, text, new System.Text.UTF8Encoding(false));
        File.Move(tmp, full, overwrite: true);
    }
}
