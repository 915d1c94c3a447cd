using System.Text.Json;
using System.Text.Json.Nodes;
using XrayVL.IO;

namespace XrayVL.Text;

/// <summary>The Hugging Face tokenizer files beside the model files: tokenizer.json and tokenizer_config.json.</summary>
internal static class HfFiles
{
    public const string TokenizerJson = "tokenizer.json";
    public const string TokenizerConfigJson = "tokenizer_config.json";

    /// <summary>One added-token entry as both files spell it (tokenizer.json adds the "id").</summary>
    public static JsonObject AddedToken(int? id, string content)
    {
        var entry = new JsonObject();
        if (id is int i) entry["id"] = i;
        entry["content"] = content;
        entry["single_word"] = false;
        entry["lstrip"] = false;
        entry["rstrip"] = false;
        entry["normalized"] = false;
        entry["special"] = true;
        return entry;
    }

    /// <summary>
    /// Writes tokenizer_config.json: added tokens by id, the roles of the special tokens, and the chat template
    /// (<see cref="ChatTemplate.JinjaTemplate"/>) so that <c>apply_chat_template</c> renders what <see cref="ChatTemplate"/> does.
    /// </summary>
    public static void WriteTokenizerConfig(string directory, IReadOnlyList<(int Id, string Content)> added,
        string tokenizerClass, string eosToken, string padToken, string? bosToken = null, string? unkToken = null)
    {
        var decoder = new JsonObject();
        foreach (var (id, content) in added.OrderBy(a => a.Id)) decoder[id.ToString(System.Globalization.CultureInfo.InvariantCulture)] = AddedToken(null, content);
        var config = new JsonObject
        {
            ["tokenizer_class"] = tokenizerClass,
            ["added_tokens_decoder"] = decoder,
            ["additional_special_tokens"] = new JsonArray([.. new[] { SpecialTokens.ImStart, SpecialTokens.ImEnd, SpecialTokens.Image }
                .Select(s => (JsonNode?)JsonValue.Create(s))]),
            ["bos_token"] = bosToken,
            ["eos_token"] = eosToken,
            ["pad_token"] = padToken,
            ["unk_token"] = unkToken,
            ["add_bos_token"] = false,
            ["add_eos_token"] = false,
            ["add_prefix_space"] = false,
            ["clean_up_tokenization_spaces"] = false,
            ["split_special_tokens"] = false,
            ["model_max_length"] = 32768,
            ["chat_template"] = ChatTemplate.JinjaTemplate,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, TokenizerConfigJson), config.ToJsonString(Json.Options));
    }

    /// <summary>
    /// Added tokens (id, content) of a tokenizer folder: tokenizer_config.json's added_tokens_decoder when present,
    /// else tokenizer.json's added_tokens, else none.
    /// </summary>
    public static List<(int Id, string Content)> ReadAddedTokens(string directory)
    {
        var result = new List<(int, string)>();
        string configPath = Path.Combine(directory, TokenizerConfigJson);
        string tokenizerPath = Path.Combine(directory, TokenizerJson);
        if (File.Exists(configPath))
        {
            using var doc = Parse(configPath);
            if (doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
            {
                foreach (var entry in decoder.EnumerateObject())
                {
                    if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id))
                        throw new XrayVLException($"{configPath}: added_tokens_decoder key '{entry.Name}' is not a token id.");
                    result.Add((id, Content(entry.Value, configPath)));
                }
                return result;
            }
        }
        if (File.Exists(tokenizerPath))
        {
            using var doc = Parse(tokenizerPath);
            if (doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var entry in added.EnumerateArray())
                {
                    if (entry.ValueKind != JsonValueKind.Object || !entry.TryGetProperty("id", out var idElement) || !idElement.TryGetInt32(out int id) || id < 0)
                        throw new XrayVLException($"{tokenizerPath}: an added_tokens entry has no valid id.");
                    result.Add((id, Content(entry, tokenizerPath)));
                }
            }
        }
        return result;
    }

    /// <summary>
    /// tokenizer_config.json's `chat_template` (a string, or newer files' list of named templates: the "default" one)
    /// and the special-token strings templates refer to (bos_token, eos_token, pad_token, unk_token); null and empty
    /// when the file or the key is absent.
    /// </summary>
    public static (string? Template, Dictionary<string, string> Tokens) ReadChatTemplate(string directory)
    {
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        string path = Path.Combine(directory, TokenizerConfigJson);
        if (!File.Exists(path)) return (null, tokens);
        using var doc = Parse(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) return (null, tokens);
        foreach (string name in new[] { "bos_token", "eos_token", "pad_token", "unk_token" })
            if (root.TryGetProperty(name, out var token))
            {
                if (token.ValueKind == JsonValueKind.String) tokens[name] = token.GetString()!;
                else if (token.ValueKind == JsonValueKind.Object && token.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String)
                    tokens[name] = c.GetString()!;
            }
        if (!root.TryGetProperty("chat_template", out var template)) return (null, tokens);
        return template.ValueKind switch
        {
            JsonValueKind.String => (template.GetString(), tokens),
            JsonValueKind.Null => (null, tokens),
            JsonValueKind.Array => (template.EnumerateArray()
                .Where(t => t.ValueKind == JsonValueKind.Object && t.TryGetProperty("name", out var n) && n.GetString() == "default")
                .Select(t => t.TryGetProperty("template", out var body) ? body.GetString() : null)
                .FirstOrDefault() ?? throw new XrayVLException($"{path}: chat_template lists named templates but none named 'default'."), tokens),
            _ => throw new XrayVLException($"{path}: chat_template must be a string or a list of named templates."),
        };
    }

    /// <summary>Replaces the chat template of an existing tokenizer_config.json (a checkpoint keeps its own template).</summary>
    public static void WriteChatTemplate(string directory, string template)
    {
        string path = Path.Combine(directory, TokenizerConfigJson);
        var node = File.Exists(path) ? Json.ReadObject(path, "tokenizer config") : new JsonObject();
        node["chat_template"] = template;
        AtomicFile.WriteAllText(path, node.ToJsonString(Json.Options));
    }

    private static string Content(JsonElement entry, string path)
    {
        if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("content", out var content)
            && content.ValueKind == JsonValueKind.String && content.GetString() is { Length: > 0 } text)
            return text;
        throw new XrayVLException($"{path}: an added token has no 'content' string.");
    }

    private static JsonDocument Parse(string path)
    {
        return Json.ReadDocument(path, "tokenizer file");
    }
}
