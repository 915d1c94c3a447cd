using System.Text.Json;
using System.Text.Json.Nodes;
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
        if (!converted.Success) return "not valid JSON: " + first.TrimEnd('.');
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
        (e.Path is { Length: > 1 } p ? $" at {p}" : "") + (e.LineNumber is { } line ? $" (line {line + 1})" : "");

    /// <summary>Compact variant for one-object-per-line files (JSONL).</summary>
    public static readonly JsonSerializerOptions Line = new(Options) { WriteIndented = false };

    private static readonly JsonDocumentOptions DocumentOptions = new()
    {
        CommentHandling = JsonCommentHandling.Skip,                // hand-edited configs and recipes carry comments
        AllowTrailingCommas = true,
    };

    /// <summary>
    /// Reads a JSON file, or throws one <see cref="XrayVLException"/> that names the file and what it should hold
    /// (<paramref name="what"/>, e.g. "recipe"): not found, unreadable, or not valid JSON (with the parser's position).
    /// Comments and trailing commas are accepted. The caller disposes the document.
    /// </summary>
    public static JsonDocument ReadDocument(string path, string what)
    {
        byte[] bytes = ReadBytes(path, what);
        try { return JsonDocument.Parse(bytes, DocumentOptions); }
        catch (JsonException e) { throw Invalid(path, what, e); }
    }

    /// <summary><see cref="ReadDocument"/> for a file that must hold one JSON object, as a mutable node.</summary>
    public static JsonObject ReadObject(string path, string what)
    {
        byte[] bytes = ReadBytes(path, what);
        JsonNode? node;
        try { node = JsonNode.Parse(bytes, documentOptions: DocumentOptions); }
        catch (JsonException e) { throw Invalid(path, what, e); }
        return node as JsonObject ?? throw new XrayVLException($"{path}: not a valid {what} (not a JSON object)");
    }

    /// <summary><see cref="ReadDocument"/> deserialised to <typeparamref name="T"/> (<see cref="Options"/> unless told otherwise); null content is refused too.</summary>
    public static T Read<T>(string path, string what, JsonSerializerOptions? options = null) where T : class
    {
        byte[] bytes = ReadBytes(path, what);
        try { return JsonSerializer.Deserialize<T>(bytes, options ?? Options) ?? throw new XrayVLException($"{path}: not a valid {what} (null)"); }
        catch (JsonException e) { throw Invalid(path, what, e); }
    }

    private static byte[] ReadBytes(string path, string what)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: {what} file not found");
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new XrayVLException($"{path}: {what} file cannot be read ({e.Message})", e);
        }
    }

    private static XrayVLException Invalid(string path, string what, JsonException e) =>
        new($"{path}: not a valid {what}{Where(e)}: {Problem(e)}", e);
}
