using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using XrayVL.Data;
using XrayVL.Data.Labeler;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Tests.Serving;

/// <summary>One server for the tests that do not need special settings.</summary>
public sealed class DefaultServer : IAsyncLifetime
{
    public LiveServer Live { get; private set; } = null!;

    public async ValueTask InitializeAsync() => Live = await LiveServer.StartAsync();

    public async ValueTask DisposeAsync() => await Live.DisposeAsync();
}

public class ServerApiTests(DefaultServer fixture) : IClassFixture<DefaultServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private HttpClient Http => fixture.Live.Client;

    private static async Task<JsonObject> JsonOf(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!.AsObject();

    /// <summary>The error body of a 4xx answer: OpenAI's shape, a one-line message.</summary>
    private static async Task<string> ErrorOf(HttpResponseMessage response, HttpStatusCode expected)
    {
        Assert.Equal(expected, response.StatusCode);
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString());
        var error = (await JsonOf(response))["error"]!.AsObject();
        // A string naming the error, as OpenAI's typed clients expect.
        string code = expected switch
        {
            HttpStatusCode.BadRequest => "bad_request",
            HttpStatusCode.NotFound => "not_found",
            HttpStatusCode.UnsupportedMediaType => "unsupported_media_type",
            HttpStatusCode.RequestEntityTooLarge => "payload_too_large",
            HttpStatusCode.Unauthorized => "invalid_api_key",
            HttpStatusCode.Conflict => "conversation_busy",
            _ => throw new ArgumentOutOfRangeException(nameof(expected)),
        };
        Assert.Equal(code, error["code"]!.GetValue<string>());
        string message = error["message"]!.GetValue<string>();
        Assert.DoesNotContain('\n', message);
        return message;
    }

    /// <summary>What the in-process IChatClient answers for the same question and image (the reference for the HTTP API).</summary>
    private static async Task<string> InProcessAnswer(string question, byte[] png, int maxTokens)
    {
        using var client = XrayChatClient.Create(ServingModel.Loaded);
        var response = await client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new TextContent(question), new DataContent(png, "image/png")])],
            new ChatOptions { MaxOutputTokens = maxTokens }, Ct);
        return response.Text;
    }

    [Fact]
    public async Task ChatCompletionsAnswerAsTheInProcessClientDoes()
    {
        byte[] png = ServingModel.PatternPng(61);
        var response = await Http.PostAsync("/v1/chat/completions", LiveServer.Json(LiveServer.ChatRequest("What is shown?", png)), Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await JsonOf(response);
        Assert.Equal("chat.completion", body["object"]!.GetValue<string>());
        Assert.Equal(ServingModel.Loaded.Name, body["model"]!.GetValue<string>());
        var choice = body["choices"]![0]!;
        Assert.Equal("assistant", choice["message"]!["role"]!.GetValue<string>());
        Assert.Equal(await InProcessAnswer("What is shown?", png, 12), choice["message"]!["content"]!.GetValue<string>());
        Assert.Contains(choice["finish_reason"]!.GetValue<string>(), new[] { "stop", "length" });
        var usage = body["usage"]!;
        Assert.Equal(usage["prompt_tokens"]!.GetValue<int>() + usage["completion_tokens"]!.GetValue<int>(), usage["total_tokens"]!.GetValue<int>());
        Assert.InRange(usage["completion_tokens"]!.GetValue<int>(), 1, 12);
    }

    [Fact]
    public async Task StreamingSendsServerSentEventsEndingWithDone()
    {
        byte[] png = ServingModel.PatternPng(62);
        var request = LiveServer.ChatRequest("Describe it.", png, stream: true);
        request["stream_options"] = new JsonObject { ["include_usage"] = true };
        var response = await Http.PostAsync("/v1/chat/completions", LiveServer.Json(request), Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/event-stream", response.Content.Headers.ContentType?.ToString());
        var events = LiveServer.SseEvents(await response.Content.ReadAsStringAsync(Ct));
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonNode.Parse(e)!.AsObject()).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c["object"]!.GetValue<string>()));
        Assert.All(chunks, c => Assert.Equal(chunks[0]["id"]!.GetValue<string>(), c["id"]!.GetValue<string>()));
        Assert.Equal("assistant", chunks[0]["choices"]![0]!["delta"]!["role"]!.GetValue<string>());
        var withChoices = chunks.Where(c => c["choices"]!.AsArray().Count == 1).ToList();
        string text = string.Concat(withChoices.Select(c => c["choices"]![0]!["delta"]!["content"]?.GetValue<string>() ?? ""));
        Assert.Equal(await InProcessAnswer("Describe it.", png, 12), text);
        Assert.True(withChoices.Count >= 3, "the answer should arrive in several chunks");
        Assert.NotNull(withChoices[^1]["choices"]![0]!["finish_reason"]?.GetValue<string>());
        Assert.All(withChoices[..^1], c => Assert.Null(c["choices"]![0]!["finish_reason"]));
        var usageChunk = chunks[^1];
        Assert.Empty(usageChunk["choices"]!.AsArray());
        Assert.InRange(usageChunk["usage"]!["completion_tokens"]!.GetValue<int>(), 1, 12);
    }

    [Fact]
    public async Task ModelsHealthPageAndOpenApiAreServed()
    {
        var models = await JsonOf(await Http.GetAsync("/v1/models", Ct));
        Assert.Equal("list", models["object"]!.GetValue<string>());
        Assert.Equal(ServingModel.Loaded.Name, models["data"]![0]!["id"]!.GetValue<string>());

        var health = await JsonOf(await Http.GetAsync("/healthz", Ct));
        Assert.Equal("ok", health["status"]!.GetValue<string>());
        Assert.Equal(ServingModel.Loaded.Name, health["model"]!.GetValue<string>());

        var page = await Http.GetAsync("/", Ct);
        Assert.StartsWith("text/html", page.Content.Headers.ContentType?.ToString());
        Assert.Contains("not a medical device", await page.Content.ReadAsStringAsync(Ct));
        Assert.Contains("default-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Equal(HttpStatusCode.OK, (await Http.GetAsync("/app.js", Ct)).StatusCode);
        var notFound = await Http.GetAsync("/api/nothing-here", Ct);
        Assert.Contains("no such endpoint", await ErrorOf(notFound, HttpStatusCode.NotFound));
    }

    [Fact]
    public async Task TheOpenApiDescriptionIsValidJsonAndMatchesTheEndpoints()
    {
        var response = await Http.GetAsync("/openapi.json", Ct);
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString());
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct));
        var root = document.RootElement;
        Assert.Equal("3.1.0", root.GetProperty("openapi").GetString());

        var described = new HashSet<string>();
        foreach (var path in root.GetProperty("paths").EnumerateObject())
            foreach (var operation in path.Value.EnumerateObject().Where(o => o.Name != "parameters"))
            {
                described.Add($"{operation.Name.ToUpperInvariant()} {path.Name}");
                Assert.True(operation.Value.GetProperty("responses").EnumerateObject().Any());
            }
        // Every API route the server maps (not the page's files, not the 404 fallbacks) is described, and nothing else.
        var mapped = fixture.Live.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>()
            .Where(e => e.RoutePattern.RawText is { } p && !p.Contains("**") && (p.StartsWith("/v1") || p.StartsWith("/api") || p is "/healthz" or "/openapi.json"))
            .SelectMany(e => e.Metadata.GetMetadata<HttpMethodMetadata>()!.HttpMethods.Select(m => $"{m} {e.RoutePattern.RawText}"))
            .ToHashSet();
        Assert.Equal(mapped.Order(), described.Order());

        // Every $ref points at something that exists.
        var refs = new List<string>();
        void Collect(JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                {
                    if (p.Name == "$ref") refs.Add(p.Value.GetString()!);
                    else Collect(p.Value);
                }
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var item in e.EnumerateArray()) Collect(item);
        }
        Collect(root);
        Assert.NotEmpty(refs);
        foreach (var reference in refs)
        {
            var node = root;
            foreach (var part in reference.TrimStart('#', '/').Split('/')) node = node.GetProperty(part);
        }
    }

    [Fact]
    public async Task ReportAnswersWithTheReportItsFindingsAndBoxes()
    {
        string path = ServingModel.SampleImages[0];
        byte[] bytes = await File.ReadAllBytesAsync(path, Ct);
        var response = await Http.PostAsync("/api/report", LiveServer.ImageForm(bytes, "no-extension", ("language", "en"), ("max_tokens", "10")), Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await JsonOf(response);
        string report = body["report"]!.GetValue<string>();
        Assert.Contains("not a medical device", body["disclaimer"]!.GetValue<string>());

        // The CLI's spelling of the language field works too, and the disclaimer follows the language.
        var zh = await JsonOf(await Http.PostAsync("/api/report", LiveServer.ImageForm(bytes, "no-extension", ("lang", "zh"), ("max_tokens", "4")), Ct));
        Assert.Equal("zh", zh["language"]!.GetValue<string>());
        Assert.Contains("不是医疗器械", zh["disclaimer"]!.GetValue<string>());

        var loaded = ServingModel.Loaded;
        var chat = new ChatSession(new InferencePipeline(loaded));
        chat.AddImage(ImageFile.Load(path));
        string expected = await chat.AskAllAsync(InstructionPhrases.ReportRequest("en"), InferencePipeline.Decoding(ServingModel.Loaded.Tokenizer) with { MaxNewTokens = 10 }, Ct);
        Assert.Equal(expected, report);

        var labels = body["labels"]!.AsObject();
        Assert.Equal(Observations.Names.Order(), labels.Select(kv => kv.Key).Order());
        Assert.Equal(Labeler.Default.Label(report, "en").ToDictionary(), labels.ToDictionary(kv => kv.Key, kv => kv.Value?.GetValue<int?>()));
        Assert.Equal(GridBoxes.Parse(report).Count, body["boxes"]!.AsArray().Count);
        Assert.Equal(loaded.Name, body["model"]!.GetValue<string>());
        Assert.True(body["seconds"]!.GetValue<double>() >= 0);
        Assert.Equal("en", body["language"]!.GetValue<string>());
    }

    [Fact]
    public async Task DicomIdentifyingTagsAreNeverReturned()
    {
        var pattern = ServingModel.Pattern(63, 40, 30);
        byte[] dicom = DicomWriter.WriteNative(pattern.Height, pattern.Width, pattern.Pixels.Select(p => (int)(p * 4000)).ToArray(),
            new DicomWriteOptions { BitsStored = 12, PatientName = "DOE^JOHN", PatientId = "PID-90210", PatientBirthDate = "19451231" });
        string[] secrets = ["DOE", "JOHN", "PID-90210", "19451231"];

        var report = await Http.PostAsync("/api/report", LiveServer.ImageForm(dicom, "scan.png", ("max_tokens", "6")), Ct);
        Assert.Equal(HttpStatusCode.OK, report.StatusCode);
        string reportText = await report.Content.ReadAsStringAsync(Ct);

        var session = await JsonOf(await Http.PostAsync("/api/sessions", null, Ct));
        string id = session["id"]!.GetValue<string>();
        var upload = await Http.PostAsync($"/api/sessions/{id}/image", LiveServer.ImageForm(dicom, "DOE^JOHN.dcm"), Ct);
        Assert.Equal(HttpStatusCode.OK, upload.StatusCode);
        var info = await JsonOf(upload);
        Assert.Equal("dicom", info["format"]!.GetValue<string>());
        Assert.Equal((40, 30), (info["width"]!.GetValue<int>(), info["height"]!.GetValue<int>()));
        byte[] preview = await Http.GetByteArrayAsync(info["preview"]!.GetValue<string>(), Ct);
        var decoded = ImageFile.Decode(preview, "preview");
        Assert.Equal((40, 30, ImageFormat.Png), (decoded.Width, decoded.Height, decoded.Source.Format));
        string described = await Http.GetStringAsync($"/api/sessions/{id}", Ct);

        foreach (string secret in secrets)
        {
            Assert.DoesNotContain(secret, reportText);
            Assert.DoesNotContain(secret, info.ToJsonString());
            Assert.DoesNotContain(secret, described);
            Assert.DoesNotContain(secret, System.Text.Encoding.Latin1.GetString(preview));
            Assert.DoesNotContain(fixture.Live.Logs.Lines, line => line.Contains(secret));
        }
    }

    [Fact]
    public async Task MalformedRequestsGetA4xxWithAClearMessage()
    {
        var badJson = await Http.PostAsync("/v1/chat/completions", new StringContent("{\"messages\": [", System.Text.Encoding.UTF8, "application/json"), Ct);
        Assert.Contains("not valid JSON", await ErrorOf(badJson, HttpStatusCode.BadRequest));
        var notObject = await Http.PostAsync("/v1/chat/completions", LiveServer.Json(new JsonArray()), Ct);
        Assert.Contains("JSON object", await ErrorOf(notObject, HttpStatusCode.BadRequest));
        var noMessages = await Http.PostAsync("/v1/chat/completions", LiveServer.Json(new JsonObject { ["model"] = "xrayvl" }), Ct);
        Assert.Contains("messages", await ErrorOf(noMessages, HttpStatusCode.BadRequest));

        byte[] png = ServingModel.PatternPng(64);
        var hot = LiveServer.ChatRequest("x", png);
        hot["temperature"] = 5;
        Assert.Contains("temperature", await ErrorOf(await Http.PostAsync("/v1/chat/completions", LiveServer.Json(hot), Ct), HttpStatusCode.BadRequest));
        var tooLong = LiveServer.ChatRequest("x", png, maxTokens: 100_000);
        Assert.Contains("max_tokens", await ErrorOf(await Http.PostAsync("/v1/chat/completions", LiveServer.Json(tooLong), Ct), HttpStatusCode.BadRequest));
        var notImage = LiveServer.ChatRequest("x", "%PDF-1.4 not an x-ray"u8.ToArray());
        Assert.Contains("not a supported image", await ErrorOf(await Http.PostAsync("/v1/chat/completions", LiveServer.Json(notImage), Ct), HttpStatusCode.UnsupportedMediaType));
        var link = LiveServer.ChatRequest("x", png);
        link["messages"]![0]!["content"]![1]!["image_url"]!["url"] = "https://example.org/xray.png";
        Assert.Contains("data: URI", await ErrorOf(await Http.PostAsync("/v1/chat/completions", LiveServer.Json(link), Ct), HttpStatusCode.BadRequest));
        var corrupt = LiveServer.ChatRequest("x", png[..(png.Length / 2)]);
        Assert.Contains("image", await ErrorOf(await Http.PostAsync("/v1/chat/completions", LiveServer.Json(corrupt), Ct), HttpStatusCode.BadRequest));

        var textUpload = await Http.PostAsync("/api/report", LiveServer.ImageForm("just text, named .png"u8.ToArray(), "xray.png"), Ct);
        Assert.Contains("not a supported image", await ErrorOf(textUpload, HttpStatusCode.UnsupportedMediaType));
        var jsonToReport = await Http.PostAsync("/api/report", LiveServer.Json(new JsonObject()), Ct);
        Assert.Contains("multipart/form-data", await ErrorOf(jsonToReport, HttpStatusCode.UnsupportedMediaType));
        var noFile = new MultipartFormDataContent { { new StringContent("en"), "language" } };
        Assert.Contains("no image", await ErrorOf(await Http.PostAsync("/api/report", noFile, Ct), HttpStatusCode.BadRequest));
        var badLanguage = LiveServer.ImageForm(png, "x.png", ("language", "fr"));
        Assert.Contains("language", await ErrorOf(await Http.PostAsync("/api/report", badLanguage, Ct), HttpStatusCode.BadRequest));

        Assert.Contains("expired", await ErrorOf(await Http.GetAsync("/api/sessions/0123456789abcdef0123456789abcdef", Ct), HttpStatusCode.NotFound));
        var session = (await JsonOf(await Http.PostAsync("/api/sessions", null, Ct)))["id"]!.GetValue<string>();
        var noImageYet = await Http.PostAsync($"/api/sessions/{session}/messages", LiveServer.Json(new JsonObject { ["text"] = "hello" }), Ct);
        Assert.Contains("no image", await ErrorOf(noImageYet, HttpStatusCode.BadRequest));
        var empty = await Http.PostAsync($"/api/sessions/{session}/messages", LiveServer.Json(new JsonObject { ["text"] = " " }), Ct);
        Assert.Contains("text", await ErrorOf(empty, HttpStatusCode.BadRequest));
    }

    [Fact]
    public async Task ConversationsAreIsolatedFromEachOther()
    {
        var (a, b) = (ServingModel.PatternPng(65), ServingModel.PatternPng(66));
        async Task<string> NewSession(byte[] image)
        {
            string id = (await JsonOf(await Http.PostAsync("/api/sessions", LiveServer.Json(new JsonObject { ["language"] = "en" }), Ct)))["id"]!.GetValue<string>();
            Assert.Equal(HttpStatusCode.OK, (await Http.PostAsync($"/api/sessions/{id}/image", LiveServer.ImageForm(image), Ct)).StatusCode);
            return id;
        }
        string idA = await NewSession(a), idB = await NewSession(b);
        Assert.NotEqual(idA, idB);
        Assert.Matches("^[0-9a-f]{32}$", idA);

        async Task<JsonObject> Ask(string id, string text)
        {
            var response = await Http.PostAsync($"/api/sessions/{id}/messages", LiveServer.Json(new JsonObject { ["text"] = text }), Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = LiveServer.SseEvents(await response.Content.ReadAsStringAsync(Ct));
            Assert.Equal("[DONE]", events[^1]);
            var parsed = events[..^1].Select(e => JsonNode.Parse(e)!.AsObject()).ToList();
            var done = parsed[^1];
            Assert.Equal("done", done["type"]!.GetValue<string>());
            Assert.Equal(done["text"]!.GetValue<string>(), string.Concat(parsed[..^1].Select(p => p["text"]!.GetValue<string>())).Trim());
            return done;
        }
        // Both conversations at once, two turns each.
        var firstTurns = await Task.WhenAll(Ask(idA, "First question?"), Ask(idB, "First question?"));
        var secondTurns = await Task.WhenAll(Ask(idA, "Second question for A?"), Ask(idB, "Second question for B?"));

        // Each equals its conversation alone (ChatSession on the model-sized image).
        async Task<List<string>> Alone(byte[] image, string second)
        {
            var chat = new ChatSession(new InferencePipeline(ServingModel.Loaded));
            chat.AddImage(Preprocess.ToModelSquare(ImageFile.Decode(image, "x"), ServingModel.Loaded.Preprocess));
            var options = InferencePipeline.Decoding(ServingModel.Loaded.Tokenizer) with { MaxNewTokens = 12 };
            return [await chat.AskAllAsync("First question?", options, Ct), await chat.AskAllAsync(second, options, Ct)];
        }
        Assert.Equal(await Alone(a, "Second question for A?"), [firstTurns[0]["text"]!.GetValue<string>(), secondTurns[0]["text"]!.GetValue<string>()]);
        Assert.Equal(await Alone(b, "Second question for B?"), [firstTurns[1]["text"]!.GetValue<string>(), secondTurns[1]["text"]!.GetValue<string>()]);

        var viewA = await JsonOf(await Http.GetAsync($"/api/sessions/{idA}", Ct));
        var turnsA = viewA["turns"]!.AsArray().Select(t => t!["text"]!.GetValue<string>()).ToList();
        Assert.Equal(4, turnsA.Count);
        Assert.Contains("Second question for A?", turnsA);
        Assert.DoesNotContain("Second question for B?", turnsA);
        Assert.NotEqual(await Http.GetByteArrayAsync($"/api/sessions/{idA}/image", Ct), await Http.GetByteArrayAsync($"/api/sessions/{idB}/image", Ct));

        // A new conversation keeps the image and forgets the turns; deleting forgets the conversation.
        var reset = await JsonOf(await Http.PostAsync($"/api/sessions/{idA}/reset", null, Ct));
        Assert.Empty(reset["turns"]!.AsArray());
        Assert.NotNull(reset["image"]);
        Assert.Equal(HttpStatusCode.NoContent, (await Http.DeleteAsync($"/api/sessions/{idA}", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Http.GetAsync($"/api/sessions/{idA}", Ct)).StatusCode);
        Assert.Equal(4, (await JsonOf(await Http.GetAsync($"/api/sessions/{idB}", Ct)))["turns"]!.AsArray().Count);
    }

    [Fact]
    public async Task ReportsThroughTheSessionCarryFindingsAndLogsHoldNoContent()
    {
        string id = (await JsonOf(await Http.PostAsync("/api/sessions", null, Ct)))["id"]!.GetValue<string>();
        await Http.PostAsync($"/api/sessions/{id}/image", LiveServer.ImageForm(await File.ReadAllBytesAsync(ServingModel.SampleImages[1], Ct)), Ct);
        var response = await Http.PostAsync($"/api/sessions/{id}/messages", LiveServer.Json(new JsonObject { ["report"] = true, ["language"] = "zh" }), Ct);
        var events = LiveServer.SseEvents(await response.Content.ReadAsStringAsync(Ct));
        var done = JsonNode.Parse(events[^2])!.AsObject();
        Assert.True(done["report"]!.GetValue<bool>());
        Assert.Equal("zh", done["language"]!.GetValue<string>());
        Assert.Equal(14, done["labels"]!.AsObject().Count);
        // A report is written apart from the chat: it adds no turn.
        Assert.Empty((await JsonOf(await Http.GetAsync($"/api/sessions/{id}", Ct)))["turns"]!.AsArray());

        string answer = done["text"]!.GetValue<string>();
        var lines = fixture.Live.Logs.Lines;
        Assert.Contains(lines, l => l.Contains("POST /api/sessions/{id}/messages 200"));
        Assert.DoesNotContain(lines, l => l.Contains(id));
        if (answer.Length >= 6) Assert.DoesNotContain(lines, l => l.Contains(answer));
        Assert.DoesNotContain(lines, l => l.Contains(InstructionPhrases.ReportRequest("zh")));
    }
}
