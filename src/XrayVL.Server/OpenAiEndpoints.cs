using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>
/// The OpenAI-compatible surface: <c>POST /v1/chat/completions</c> (text and <c>image_url</c> parts with data: URIs;
/// <c>stream: true</c> as server-sent events), <c>GET /v1/models</c> and <c>GET /v1/models/{id}</c>. Requests become
/// Microsoft.Extensions.AI messages and go through the same <see cref="XrayChatClient"/> a .NET program would use in-process.
/// Every request parameter is honoured, ignored as documented (<see cref="Ignored"/>), or refused with a 400 naming it.
/// </summary>
internal static class OpenAiEndpoints
{
    /// <summary>The name any client may use for the served model, whatever its folder is called.</summary>
    public const string ModelAlias = "xrayvl";

    /// <summary>Parameters this server reads.</summary>
    private static readonly HashSet<string> Honoured = new(StringComparer.Ordinal)
    {
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "top_k", "seed", "max_tokens",
        "max_completion_tokens", "stop", "n", "language",
    };

    /// <summary>Parameters accepted and ignored: they change no answer of this model (penalties: a repetition penalty
    /// and a 4-gram ban are always on) or only concern OpenAI's own service.</summary>
    internal static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "frequency_penalty", "presence_penalty", "user", "metadata", "store", "service_tier", "parallel_tool_calls",
    };

    public static void Map(WebApplication app, XrayServer server)
    {
        app.MapGet("/v1/models", (HttpContext context) => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(ModelJson(server)),
        }).ExecuteAsync(context));
        app.MapGet("/v1/models/{id}", (HttpContext context, string id) =>
            Results.Json(IsServed(id, server) ? ModelJson(server) : throw ModelNotFound(id, server, "id")).ExecuteAsync(context));
        app.MapPost("/v1/chat/completions", (HttpContext context) => ChatCompletions(context, server));
    }

    private static JsonObject ModelJson(XrayServer server) => new()
    {
        ["id"] = server.ModelId,
        ["object"] = "model",
        ["created"] = server.Started.ToUnixTimeSeconds(),
        ["owned_by"] = "xrayvl",
    };

    private static bool IsServed(string name, XrayServer server) => name == server.ModelId || name == ModelAlias;

    /// <summary>OpenAI's answer to a model it does not have: 404 with code model_not_found.</summary>
    private static ApiException ModelNotFound(string name, XrayServer server, string param) =>
        new(StatusCodes.Status404NotFound, $"the model {ApiErrors.Quote(name)} does not exist: this server serves \"{server.ModelId}\" (also called \"{ModelAlias}\"); see GET /v1/models",
            param, code: "model_not_found");

    /// <summary>A parsed request: the messages, the decoding options, and how to answer.</summary>
    internal sealed record CompletionRequest(List<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage);

    private static async Task ChatCompletions(HttpContext context, XrayServer server)
    {
        var request = await ReadRequest(context, server);
        var client = server.ChatClient;
        var aborted = context.RequestAborted;
        if (!request.Stream)
        {
            var response = await client.GetResponseAsync(request.Messages, request.Options, aborted);
            var usage = response.Usage;
            await Results.Json(new JsonObject
            {
                ["id"] = response.ResponseId,
                ["object"] = "chat.completion",
                ["created"] = (response.CreatedAt ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds(),
                ["model"] = response.ModelId,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = response.Text },
                    ["logprobs"] = null,
                    ["finish_reason"] = FinishName(response.FinishReason),
                }),
                ["usage"] = UsageJson(usage),
            }).ExecuteAsync(context);
            return;
        }

        // The first update is awaited before any byte is sent, so a bad image or a full queue is still a plain 4xx/503.
        await using var updates = client.GetStreamingResponseAsync(request.Messages, request.Options, aborted).GetAsyncEnumerator(aborted);
        bool any = await updates.MoveNextAsync();
        await ServerSentEvents.StartAsync(context);
        try
        {
            await StreamChunks(context, request, updates, any);
        }
        catch (Exception e) when (!aborted.IsCancellationRequested)
        {
            // Too late for a status code: the error goes out as an event, as OpenAI's streams do.
            await ServerSentEvents.WriteAsync(context, ApiErrors.Body(ApiErrors.Describe(e)));
            throw;
        }
    }

    private static async Task StreamChunks(HttpContext context, CompletionRequest request, IAsyncEnumerator<ChatResponseUpdate> updates, bool any)
    {
        bool first = true;
        while (any)
        {
            var update = updates.Current;
            var delta = new JsonObject();
            if (first) delta["role"] = "assistant";
            string text = update.Text;
            if (text.Length > 0 || first) delta["content"] = text;
            first = false;
            var usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
            if (delta.Count > 0 || update.FinishReason is not null)
                await ServerSentEvents.WriteAsync(context, Chunk(update, delta, update.FinishReason is null ? null : FinishName(update.FinishReason)));
            if (usage is not null && request.IncludeUsage)
            {
                var usageChunk = Chunk(update, null, null);
                usageChunk["choices"] = new JsonArray();
                usageChunk["usage"] = UsageJson(usage);
                await ServerSentEvents.WriteAsync(context, usageChunk);
            }
            any = await updates.MoveNextAsync();
        }
        await ServerSentEvents.WriteDoneAsync(context);
    }

    private static JsonObject Chunk(ChatResponseUpdate update, JsonObject? delta, string? finish) => new()
    {
        ["id"] = update.ResponseId,
        ["object"] = "chat.completion.chunk",
        ["created"] = (update.CreatedAt ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds(),
        ["model"] = update.ModelId,
        ["choices"] = new JsonArray(new JsonObject
        {
            ["index"] = 0,
            ["delta"] = delta ?? new JsonObject(),
            ["logprobs"] = null,
            ["finish_reason"] = finish,
        }),
    };

    private static string FinishName(ChatFinishReason? reason) => reason == ChatFinishReason.Length ? "length" : "stop";

    private static JsonObject UsageJson(UsageDetails? usage) => new()
    {
        ["prompt_tokens"] = usage?.InputTokenCount ?? 0,
        ["completion_tokens"] = usage?.OutputTokenCount ?? 0,
        ["total_tokens"] = usage?.TotalTokenCount ?? 0,
    };

    /// <summary>Reads and checks the JSON body; every mistake is a 4xx naming the parameter at fault.</summary>
    internal static async Task<CompletionRequest> ReadRequest(HttpContext context, XrayServer server)
    {
        var options = server.Options;
        var http = context.Request;
        long limit = options.MaxUploadBytes * 4 / 3 + (1 << 20);
        if (http.ContentLength is long length && length > limit)
            throw new ApiException(StatusCodes.Status413PayloadTooLarge, $"the request is {length / 1048576.0:0.#} MiB, above the limit of {limit / 1048576.0:0.#} MiB");
        if (http.ContentType is { } type && !type.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) && !type.StartsWith("text/plain", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(StatusCodes.Status415UnsupportedMediaType, $"send the request as application/json, not {ApiErrors.Quote(type)}");
        JsonNode? root;
        try
        {
            root = await JsonNode.ParseAsync(http.Body, cancellationToken: context.RequestAborted);
        }
        catch (JsonException e)
        {
            throw new ApiException(StatusCodes.Status400BadRequest, $"the body is not valid JSON: {e.Message}");
        }
        if (root is not JsonObject body) throw new ApiException(StatusCodes.Status400BadRequest, "the body must be a JSON object");
        return Parse(body, server);
    }

    internal static CompletionRequest Parse(JsonObject body, XrayServer server)
    {
        var options = server.Options;
        CheckParameters(body);
        if (body["model"] is { } model && String(model, "model") is var name && !IsServed(name, server))
            throw ModelNotFound(name, server, "model");
        if (body["messages"] is not JsonArray messages || messages.Count == 0)
            throw Bad("messages must be a non-empty array", "messages");
        if (body["n"] is { } n && Integer(n, "n") != 1) throw Bad("only n = 1 is supported", "n");

        var chatOptions = new ChatOptions
        {
            Temperature = Number(body["temperature"], "temperature", 0, 2),
            TopP = Number(body["top_p"], "top_p", 0, 1),
            TopK = body["top_k"] is { } k ? NonNegative(Integer(k, "top_k"), "top_k") : null,
            Seed = body["seed"] is { } seed ? Integer(seed, "seed") : null,
            MaxOutputTokens = body["max_completion_tokens"] is { } mct ? Integer(mct, "max_completion_tokens")
                : body["max_tokens"] is { } mt ? Integer(mt, "max_tokens") : null,
            StopSequences = Stops(body["stop"]),
        };
        if (chatOptions.MaxOutputTokens is int max && (max < 1 || max > options.MaxOutputTokens))
            throw Bad($"max_tokens must be between 1 and {options.MaxOutputTokens}, got {max}", "max_tokens");
        if (chatOptions.TopP is 0) throw Bad("top_p must be above 0", "top_p");
        if (body["language"] is { } language)
        {
            string value = String(language, "language");
            if (value is not ("en" or "zh")) throw Bad($"language must be \"en\" or \"zh\", got {ApiErrors.Quote(value)}", "language");
            chatOptions.AdditionalProperties = new AdditionalPropertiesDictionary { [XrayChatClient.LanguageProperty] = value };
        }
        bool stream = body["stream"] is { } s && Bool(s, "stream");
        bool includeUsage = body["stream_options"] is JsonObject so && so["include_usage"] is { } iu && Bool(iu, "stream_options.include_usage");

        var result = new List<ChatMessage>();
        int images = 0;
        for (int i = 0; i < messages.Count; i++)
            result.Add(Message(messages[i], i, options, ref images));
        // Refused here rather than answered: without an image the model would describe one it never saw. A client that
        // dropped an image part it could not send (a media type it does not know) is told so.
        if (images == 0) throw Bad(XrayChatClient.NoImageMessage, "messages");
        return new CompletionRequest(result, chatOptions, stream, includeUsage);
    }

    /// <summary>
    /// Refuses, all named in one message, the parameters that ask for what this model cannot do (tools, structured
    /// output, log probabilities, other modalities) and any parameter OpenAI does not define either. Each is accepted at
    /// its "off" value (tools: [], response_format: {"type": "text"}, logprobs: false ...), as clients send those.
    /// </summary>
    private static void CheckParameters(JsonObject body)
    {
        var refused = new List<string>();
        foreach (var (name, value) in body)
        {
            if (Honoured.Contains(name) || Ignored.Contains(name)) continue;
            bool off = name switch
            {
                "tools" or "functions" => value is null || value is JsonArray { Count: 0 },
                "tool_choice" or "function_call" => value is null || (value is JsonValue v && v.TryGetValue(out string? c) && c is "none" or "auto"),
                "response_format" => value is null || (value is JsonObject f && f["type"] is JsonValue t && t.TryGetValue(out string? type) && type == "text"),
                "logprobs" => value is null || (value is JsonValue l && l.TryGetValue(out bool wanted) && !wanted),
                "top_logprobs" => value is null || (value is JsonValue n && n.TryGetValue(out double count) && count == 0),
                "logit_bias" => value is null || value is JsonObject { Count: 0 },
                "modalities" => value is null || (value is JsonArray m && m.All(x => x is JsonValue s && s.TryGetValue(out string? mode) && mode == "text")),
                "audio" or "prediction" or "web_search_options" or "reasoning_effort" => value is null,
                _ => false,
            };
            if (!off) refused.Add(name);
        }
        if (refused.Count == 0) return;
        string names = string.Join(", ", refused.Take(8).Select(ApiErrors.Quote)) + (refused.Count > 8 ? $" and {refused.Count - 8} more" : "");
        throw Bad($"unsupported parameter{(refused.Count > 1 ? "s" : "")} {names}: this server answers in text only, without tools, " +
            $"structured output or log probabilities (ignored: {string.Join(", ", Ignored.Order(StringComparer.Ordinal))}; see /openapi.json)", refused[0]);
    }

    private static int NonNegative(int value, string param) => value >= 0 ? value : throw Bad($"{param} must be 0 (off) or positive, got {value}", param);

    private static ChatMessage Message(JsonNode? node, int index, ServerOptions options, ref int images)
    {
        string at = $"messages[{index}]";
        if (node is not JsonObject message) throw Bad($"{at} must be an object", at);
        string role = message["role"] is { } r ? String(r, at + ".role") : throw Bad($"{at}.role is missing", at + ".role");
        var chatRole = role switch
        {
            "system" or "developer" => ChatRole.System,
            "user" => ChatRole.User,
            "assistant" => ChatRole.Assistant,
            _ => throw Bad($"{at}.role {ApiErrors.Quote(role)} is not supported (system, user, assistant)", at + ".role"),
        };
        var contents = new List<AIContent>();
        switch (message["content"])
        {
            case null:
                break;
            case JsonValue value when value.TryGetValue(out string? text):
                contents.Add(new TextContent(text));
                break;
            case JsonArray parts:
                for (int p = 0; p < parts.Count; p++)
                {
                    var part = Part(parts[p], $"{at}.content[{p}]", chatRole, options);
                    if (part is DataContent && ++images > options.MaxImages)
                        throw Bad($"{at}.content[{p}]: at most {options.MaxImages} images per request (a study's frontal and lateral views)", $"{at}.content[{p}]");
                    contents.Add(part);
                }
                break;
            default:
                throw Bad($"{at}.content must be a string or an array of parts", at + ".content");
        }
        return new ChatMessage(chatRole, contents);
    }

    private static AIContent Part(JsonNode? node, string at, ChatRole role, ServerOptions options)
    {
        if (node is not JsonObject part) throw Bad($"{at} must be an object", at);
        string type = part["type"] is { } t ? String(t, at + ".type") : throw Bad($"{at}.type is missing", at + ".type");
        switch (type)
        {
            case "text":
                return new TextContent(part["text"] is { } text ? String(text, at + ".text") : throw Bad($"{at}.text is missing", at + ".text"));
            case "image_url":
                if (role != ChatRole.User) throw Bad($"{at}: only user messages may carry images", at);
                string url = part["image_url"] switch
                {
                    JsonObject o when o["url"] is { } u => String(u, at + ".image_url.url"),
                    JsonValue v when v.TryGetValue(out string? u) => u,
                    _ => throw Bad($"{at}.image_url.url is missing", at + ".image_url"),
                };
                var (mediaType, bytes) = Uploads.ParseDataUri(url, options.MaxUploadBytes, at + ".image_url");
                Uploads.RequireImage(bytes, at);
                return new DataContent(bytes, mediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase) || mediaType == "application/dicom" ? mediaType : "application/octet-stream");
            default:
                throw Bad($"{at}.type {ApiErrors.Quote(type)} is not supported (text, image_url)", at + ".type");
        }
    }

    private static ApiException Bad(string message, string param) => new(StatusCodes.Status400BadRequest, message, param);

    private static string String(JsonNode node, string param) =>
        node is JsonValue v && v.TryGetValue(out string? s) ? s : throw Bad($"{param} must be a string", param);

    private static bool Bool(JsonNode node, string param) =>
        node is JsonValue v && v.TryGetValue(out bool b) ? b : throw Bad($"{param} must be true or false", param);

    private static int Integer(JsonNode node, string param)
    {
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue)
            return (int)d;
        throw Bad($"{param} must be an integer", param);
    }

    private static float? Number(JsonNode? node, string param, double min, double max)
    {
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d))
        {
            if (d < min || d > max) throw Bad($"{param} must be between {min} and {max}, got {d}", param);
            return (float)d;
        }
        throw Bad($"{param} must be a number", param);
    }

    private static List<string>? Stops(JsonNode? node)
    {
        switch (node)
        {
            case null:
                return null;
            case JsonValue v when v.TryGetValue(out string? s):
                return [s];
            case JsonArray a when a.Count <= 4:
                return a.Select((x, i) => x is null ? throw Bad($"stop[{i}] must be a string", "stop") : String(x, "stop")).ToList();
            default:
                throw Bad("stop must be a string or an array of up to 4 strings", "stop");
        }
    }
}

/// <summary>Server-sent events: <c>data: {json}\n\n</c> per event, flushed at once, then <c>data: [DONE]</c>.</summary>
internal static class ServerSentEvents
{
    public static Task StartAsync(HttpContext context)
    {
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        return response.StartAsync(context.RequestAborted);
    }

    public static async Task WriteAsync(HttpContext context, JsonNode payload)
    {
        await context.Response.WriteAsync("data: " + payload.ToJsonString(JsonOptions) + "\n\n", Encoding.UTF8, context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    public static async Task WriteDoneAsync(HttpContext context)
    {
        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    /// <summary>Chinese stays readable on the wire (as in the project's JSON files).</summary>
    public static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
