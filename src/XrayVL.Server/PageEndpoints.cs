using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Text;

namespace XrayVL.Server;

/// <summary>
/// The report API (<c>POST /api/report</c>: one image in, report + findings + boxes out) and the page's server-side
/// conversations (<c>/api/sessions/...</c>): each holds one X-ray and its turns, answers stream as server-sent events.
/// </summary>
internal static class PageEndpoints
{
    /// <summary>Longest side of the preview the page shows (the model sees its own, smaller square).</summary>
    public const int PreviewSide = 768;
    public const int MaxQuestionLength = 4000;

    public static void Map(WebApplication app, XrayServer server)
    {
        app.MapPost("/api/report", (HttpContext context) => Report(context, server));
        app.MapPost("/api/sessions", (HttpContext context) => CreateSession(context, server));
        app.MapGet("/api/sessions/{id}", (HttpContext context, string id) => Describe(context, Find(server, id)));
        app.MapDelete("/api/sessions/{id}", (string id) =>
            server.Sessions.Remove(id) ? Results.NoContent() : throw NotFound());
        app.MapPost("/api/sessions/{id}/image", (HttpContext context, string id) => UploadImage(context, server, Find(server, id)));
        app.MapGet("/api/sessions/{id}/image", (HttpContext context, string id) => Preview(context, Find(server, id)));
        app.MapPost("/api/sessions/{id}/reset", (HttpContext context, string id) => Reset(context, Find(server, id)));
        app.MapPost("/api/sessions/{id}/messages", (HttpContext context, string id) => Ask(context, server, Find(server, id)));
    }

    private static ApiException NotFound() =>
        new(StatusCodes.Status404NotFound, "this conversation does not exist or has expired; start a new one");

    private static WebSession Find(XrayServer server, string id) => server.Sessions.Get(id) ?? throw NotFound();

    private static async Task Report(HttpContext context, XrayServer server)
    {
        var started = Stopwatch.GetTimestamp();
        var (bytes, form) = await Uploads.ReadImageFormAsync(context, server.Options.MaxUploadBytes);
        // "language" as the page sends it; "lang" as the CLI spells its flag.
        string languageField = form.ContainsKey("language") || !form.ContainsKey("lang") ? "language" : "lang";
        string language = Language(form[languageField].ToString(), languageField, server);
        int maxTokens = MaxTokens(form["max_tokens"].ToString(), server.Options);
        var image = await Uploads.DecodeAsync(bytes, server, server.Pipeline.ModelSquare, context.RequestAborted);

        var written = await server.Reports.WriteAsync(image, language, server.Pipeline.Decoding() with { MaxNewTokens = maxTokens }, context.RequestAborted);
        var json = written.ToJson();
        json["seconds"] = Math.Round(Stopwatch.GetElapsedTime(started).TotalSeconds, 3);      // upload and decode included
        await Results.Json(json, ServerSentEvents.JsonOptions).ExecuteAsync(context);
    }

    private static async Task CreateSession(HttpContext context, XrayServer server)
    {
        // The body is optional ({"language": "zh"}); read whenever one is sent, with a length or chunked.
        var body = await ReadJsonObject(context, optional: true);
        string language = Language(body is null ? null : StringField(body, "language"), "language", server);
        string client = context.Connection.RemoteIpAddress?.ToString() ?? "unknown";
        var session = server.Sessions.Create(language, client);
        context.Response.StatusCode = StatusCodes.Status201Created;
        await Results.Json(new JsonObject
        {
            ["id"] = session.Id,
            ["language"] = session.Chat.Language,
            ["idle_timeout_seconds"] = (int)server.Sessions.IdleTimeout.TotalSeconds,
            ["model"] = server.ModelId,
        }, statusCode: StatusCodes.Status201Created).ExecuteAsync(context);
    }

    private static Task Describe(HttpContext context, WebSession session) => Results.Json(new JsonObject
    {
        ["id"] = session.Id,
        ["language"] = session.Chat.Language,
        ["image"] = ImageJson(session),
        // A copy first: an answer being written may add its turns meanwhile.
        ["turns"] = new JsonArray([.. session.Chat.Messages.ToArray().Select(m => (JsonNode)new JsonObject
        {
            ["role"] = m.Role == TurnRole.User ? "user" : "assistant",
            ["text"] = m.Text,
        })]),
    }, ServerSentEvents.JsonOptions).ExecuteAsync(context);

    private static JsonObject? ImageJson(WebSession session) => session.ModelImage is null ? null : new JsonObject
    {
        ["width"] = session.Width,
        ["height"] = session.Height,
        ["format"] = session.Format?.ToString().ToLowerInvariant(),
        ["preview"] = $"/api/sessions/{session.Id}/image",
    };

    /// <summary>A new X-ray starts the conversation afresh. Only the model-sized image and a preview PNG are kept.</summary>
    private static async Task UploadImage(HttpContext context, XrayServer server, WebSession session)
    {
        var (bytes, _) = await Uploads.ReadImageFormAsync(context, server.Options.MaxUploadBytes);
        var (modelImage, preview, format, width, height) = await Uploads.DecodeAsync(bytes, server,
            image => Shrink(image, server.Pipeline.ModelSquare), context.RequestAborted);
        await WithSession(session, () =>
        {
            session.Chat.Clear();
            session.Chat.AddImage(modelImage);
            session.ModelImage = modelImage;
            session.PreviewPng = preview;
            session.Format = format;
            (session.Width, session.Height) = (width, height);
            return Task.CompletedTask;
        });
        await Results.Json(ImageJson(session)).ExecuteAsync(context);
    }

    /// <summary>What a conversation keeps of an upload: the model's square, a preview PNG, the format and size.</summary>
    internal sealed record ShrunkImage(GrayImage ModelImage, byte[] PreviewPng, ImageFormat Format, int Width, int Height);

    internal static ShrunkImage Shrink(GrayImage image, Func<GrayImage, GrayImage> modelSquare) =>
        new(modelSquare(image), PngWriter.EncodeGray(Downscale(image, PreviewSide)), image.Source.Format, image.Width, image.Height);

    private static Task Preview(HttpContext context, WebSession session)
    {
        if (session.PreviewPng is not { } png) throw new ApiException(StatusCodes.Status404NotFound, "no image in this conversation yet");
        context.Response.Headers.CacheControl = "no-store";
        return Results.Bytes(png, "image/png").ExecuteAsync(context);
    }

    /// <summary>A new conversation about the same X-ray: the turns go, the image stays.</summary>
    private static async Task Reset(HttpContext context, WebSession session)
    {
        await WithSession(session, () =>
        {
            session.Chat.Clear();
            if (session.ModelImage is { } image) session.Chat.AddImage(image);
            return Task.CompletedTask;
        });
        await Describe(context, session);
    }

    /// <summary>
    /// Asks the conversation a question, or for the report of its image, and streams the answer:
    /// <c>data: {"type":"delta","text":...}</c> events, then one <c>{"type":"done", ...}</c> with the whole answer, its
    /// findings (for a report) and the boxes it wrote; an error after the stream began comes as <c>{"type":"error"}</c>.
    /// A report is written apart from the chat (<see cref="ReportWriter.Conversation"/>): the turns do not reach it and it adds none.
    /// </summary>
    private static async Task Ask(HttpContext context, XrayServer server, WebSession session)
    {
        var body = await ReadJsonObject(context, optional: false) ?? new JsonObject();
        bool report = body["report"] is JsonValue r && r.TryGetValue(out bool isReport) && isReport;
        string language = StringField(body, "language") is { } l ? Language(l, "language", server) : session.Chat.Language;
        string text = report ? server.Pipeline.ReportRequest(language)
            : body["text"] is JsonValue t && t.TryGetValue(out string? question) && !string.IsNullOrWhiteSpace(question) ? question.Trim()
            : throw new ApiException(StatusCodes.Status400BadRequest, "text is missing: ask a question, or send \"report\": true", "text");
        if (text.Length > MaxQuestionLength) throw new ApiException(StatusCodes.Status400BadRequest, $"the question is longer than {MaxQuestionLength} characters", "text");
        int maxTokens = body["max_tokens"] is JsonValue m && m.TryGetValue(out int max) ? MaxTokens(max.ToString(), server.Options) : server.Options.DefaultMaxTokens;
        var options = server.Pipeline.Decoding() with { MaxNewTokens = maxTokens };

        if (report)
        {
            var image = session.ModelImage
                ?? throw new ApiException(StatusCodes.Status400BadRequest, "no image yet: upload an X-ray before asking for its report", "report");
            await StreamAnswer(context, server.Reports.Conversation(image, language), text, options, report: true);
        }
        else
        {
            await WithSession(session, () =>
            {
                session.Chat.Language = language;
                return StreamAnswer(context, session.Chat, text, options, report: false);
            });
        }
        server.Sessions.Touch(session);
    }

    private static async Task StreamAnswer(HttpContext context, ChatSession chat, string text, GenerationOptions options, bool report)
    {
        var started = Stopwatch.GetTimestamp();
        var aborted = context.RequestAborted;
        await using var pieces = chat.AskAsync(text, options, aborted).GetAsyncEnumerator(aborted);
        bool any = await pieces.MoveNextAsync();                  // errors before the first piece are plain 4xx
        await ServerSentEvents.StartAsync(context);
        try
        {
            while (any)
            {
                await ServerSentEvents.WriteAsync(context, new JsonObject { ["type"] = "delta", ["text"] = pieces.Current });
                any = await pieces.MoveNextAsync();
            }
            string answer = chat.Messages[^1].Text;
            var done = new JsonObject
            {
                ["type"] = "done",
                ["text"] = answer,
                ["report"] = report,
                ["language"] = chat.Language,
                ["finish_reason"] = chat.LastFinishReason == FinishReason.Length ? "length" : "stop",
                ["boxes"] = ReportFindings.BoxesJson(GridBoxes.Parse(answer)),
                ["seconds"] = Math.Round(Stopwatch.GetElapsedTime(started).TotalSeconds, 3),
            };
            if (report)
            {
                var findings = ReportFindings.Read(answer, chat.Language);
                done["labels"] = findings.LabelsJson();
                done["evidence"] = findings.EvidenceJson();
            }
            await ServerSentEvents.WriteAsync(context, done);
            await ServerSentEvents.WriteDoneAsync(context);
        }
        catch (Exception e) when (!aborted.IsCancellationRequested)
        {
            var error = ApiErrors.Describe(e);
            await ServerSentEvents.WriteAsync(context, new JsonObject { ["type"] = "error", ["status"] = error.Status, ["message"] = error.Message });
            throw;
        }
    }

    /// <summary>Runs <paramref name="action"/> as the session's only writer; 409 while an answer is being written.</summary>
    private static async Task WithSession(WebSession session, Func<Task> action)
    {
        if (!await session.Busy.WaitAsync(0))
            throw new ApiException(StatusCodes.Status409Conflict, "an answer is still being written in this conversation; wait for it or start a new conversation");
        try
        {
            await action();
        }
        finally
        {
            session.Busy.Release();
        }
    }

    /// <summary>Largest JSON body of the page's endpoints (a question is at most 4000 characters).</summary>
    private const int MaxJsonBytes = 1 << 20;

    /// <summary>
    /// The JSON object of the body, read up to <see cref="MaxJsonBytes"/> whether its length is declared or it comes
    /// chunked; null for an empty body when <paramref name="optional"/>.
    /// </summary>
    private static async Task<JsonObject?> ReadJsonObject(HttpContext context, bool optional)
    {
        if (context.Request.ContentLength is > MaxJsonBytes) throw new ApiException(StatusCodes.Status413PayloadTooLarge, "the request is larger than 1 MiB");
        var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int n;
        while ((n = await context.Request.Body.ReadAsync(chunk, context.RequestAborted)) > 0)
        {
            if (buffer.Length + n > MaxJsonBytes) throw new ApiException(StatusCodes.Status413PayloadTooLarge, "the request is larger than 1 MiB");
            buffer.Write(chunk, 0, n);
        }
        if (buffer.Length == 0 && optional) return null;
        JsonNode? node;
        try { node = JsonNode.Parse(buffer.GetBuffer().AsSpan(0, (int)buffer.Length)); }
        catch (System.Text.Json.JsonException e) { throw new ApiException(StatusCodes.Status400BadRequest, $"the body is not valid JSON: {e.Message}"); }
        return node as JsonObject ?? throw new ApiException(StatusCodes.Status400BadRequest, "the body must be a JSON object");
    }

    private static string? StringField(JsonObject body, string name) => body[name] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        _ => throw new ApiException(StatusCodes.Status400BadRequest, $"{name} must be a string", name),
    };

    /// <summary>"en" or "zh" as sent; nothing sent: the model's own language (XrayGLM's is Chinese).</summary>
    private static string Language(string? value, string param, XrayServer server) => value switch
    {
        null or "" => server.Pipeline.DefaultLanguage,
        "en" or "zh" => value,
        _ => throw new ApiException(StatusCodes.Status400BadRequest, $"language must be \"en\" or \"zh\", got {ApiErrors.Quote(value)}", param),
    };

    private static int MaxTokens(string? value, ServerOptions options)
    {
        if (string.IsNullOrEmpty(value)) return options.DefaultMaxTokens;
        if (!int.TryParse(value, out int max) || max < 1 || max > options.MaxOutputTokens)
            throw new ApiException(StatusCodes.Status400BadRequest, $"max_tokens must be an integer between 1 and {options.MaxOutputTokens}", "max_tokens");
        return max;
    }

    private static GrayImage Downscale(GrayImage image, int side)
    {
        int longest = Math.Max(image.Width, image.Height);
        if (longest <= side) return image;
        double scale = (double)side / longest;
        return Preprocess.Resize(image, Math.Max(1, (int)Math.Round(image.Width * scale)), Math.Max(1, (int)Math.Round(image.Height * scale)));
    }
}
