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

    /// <summary>
    /// What is wrong, in the words of the file's author: System.Text.Json names .NET types and members ("could not be
    /// converted to System.Nullable`1[System.Int64]", "could not be mapped to any .NET member contained in type
    /// 'XrayVL.Training.StageRecipe'"); this says "expected a whole number" or "unknown field 'stepz'". The place is given
    /// by <see cref="Where"/>.
    /// </summary>
    public static string Problem(JsonException e)
    {
        string first = e.Message.Split('\n')[0];
        first = System.Text.RegularExpressions.Regex.Replace(first, @"\s*Path: .*$", "");
        var property = System.Text.RegularExpressions.Regex.Match(first, "^The JSON property '(?<name>[^']*)' could not be mapped");
        if (property.Success) return $"unknown field '{property.Groups["name"].Value}'";
        var converted = System.Text.RegularExpressions.Regex.Match(first, @"could not be converted to (?<type>\S+?)\.?$");
        if (!converted.Success) return first.TrimEnd('.');
        string type = converted.Groups["type"].Value;
        string inner = System.Text.RegularExpressions.Regex.Match(type, @"^System\.Nullable`1\[(?<t>.*)\]$") is { Success: true } n ? n.Groups["t"].Value : type;
        return "expected " + inner switch
        {
            "System.Int32" or "System.Int64" => "a whole number",
            "System.Double" or "System.Single" => "a number",
            "System.String" => "text",
            "System.Boolean" => "true or false",
            _ when inner.Contains("List`1") || inner.EndsWith("[]", StringComparison.Ordinal) => "a list",
            _ when inner.Contains("Dictionary`2") || inner.StartsWith("XrayVL.", StringComparison.Ordinal) => "an object",
            _ => "another kind of value",
        };
    }

    /// <summary>" at $.stages[0].steps (line 3)" for a JSON error, or "" when it has no place.</summary>
    public static string Where(JsonException e) =>
        (e.Path is { Length: > 0 } p ? $" at {p}" : "") + (e.LineNumber is { } line ? $" (line {line + 1})" : "");

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
