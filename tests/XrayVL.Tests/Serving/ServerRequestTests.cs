using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Tests.Serving;

/// <summary>
/// What real clients and hostile inputs found: no answer about an image that was never sent, reports that do not
/// depend on the chat, 400 (not 500) for broken multipart bodies, OpenAI's answers to unknown models and unsupported
/// parameters, and error messages that stay short whatever the input.
/// </summary>
public class ServerRequestTests(DefaultServer fixture) : IClassFixture<DefaultServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private HttpClient Http => fixture.Live.Client;

    private static async Task<JsonObject> JsonOf(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!.AsObject();

    /// <summary>The "error" object of a JSON error answer with the expected status.</summary>
    private static async Task<JsonObject> ErrorOf(HttpResponseMessage response, HttpStatusCode expected)
    {
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(expected == response.StatusCode, $"{(int)response.StatusCode}: {body[..Math.Min(400, body.Length)]}");
        Assert.StartsWith("application/json", response.Content.Headers.ContentType?.ToString());
        return JsonNode.Parse(body)!["error"]!.AsObject();
    }

    private static string Message(JsonObject error) => error["message"]!.GetValue<string>();
    private static string? Param(JsonObject error) => error["param"]?.GetValue<string>();

    private Task<HttpResponseMessage> Complete(JsonObject body) => Http.PostAsync("/v1/chat/completions", LiveServer.Json(body), Ct);

    private static JsonObject TextOnly(string text) => new()
    {
        ["model"] = "xrayvl",
        ["max_tokens"] = 4,
        ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
    };

    // ---- 1: no image, no answer about one

    [Fact]
    public async Task AQuestionWithoutAnImageIsRefusedNamingWhatIsMissing()
    {
        var error = await ErrorOf(await Complete(TextOnly("Describe this chest X-ray.")), HttpStatusCode.BadRequest);
        Assert.Contains("no image arrived", Message(error));
        Assert.Contains("image/dicom", Message(error));                    // how to send a DICOM so that clients keep it
        Assert.Equal("messages", Param(error));

        // What Microsoft.Extensions.AI.OpenAI sends after dropping an application/dicom part: the text part alone.
        var dropped = TextOnly("x");
        dropped["messages"]![0]!["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = "Describe this chest X-ray." });
        Assert.Contains("no image arrived", Message(await ErrorOf(await Complete(dropped), HttpStatusCode.BadRequest)));

        // Images only in earlier turns count: a follow-up about the same X-ray is answered.
        var followUp = LiveServer.ChatRequest("Describe it.", ServingModel.PatternPng(80), maxTokens: 4);
        followUp["messages"]!.AsArray().Add(new JsonObject { ["role"] = "assistant", ["content"] = "ok" });
        followUp["messages"]!.AsArray().Add(new JsonObject { ["role"] = "user", ["content"] = "Any effusion?" });
        Assert.Equal(HttpStatusCode.OK, (await Complete(followUp)).StatusCode);

        // In-process too: the IChatClient refuses rather than describing an image it never saw.
        using var client = XrayChatClient.Create(ServingModel.Loaded);
        var refused = await Assert.ThrowsAsync<XrayVLException>(() => client.GetResponseAsync(
            [new ChatMessage(ChatRole.User, "Describe this chest X-ray.")], cancellationToken: Ct));
        Assert.Contains("no image arrived", refused.Message);
    }

    [Fact]
    public async Task ADicomSentAsImageDicomIsAnswered()
    {
        var pattern = ServingModel.Pattern(81, 40, 30);
        byte[] dicom = DicomWriter.WriteNative(pattern.Height, pattern.Width, pattern.Pixels.Select(p => (int)(p * 4000)).ToArray(),
            new DicomWriteOptions { BitsStored = 12 });
        // image/dicom is an image/* type, which the official clients pass through (application/dicom some drop).
        var response = await Complete(LiveServer.ChatRequest("Describe it.", dicom, maxTokens: 4, mediaType: "image/dicom"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(string.IsNullOrEmpty((await JsonOf(response))["choices"]![0]!["message"]!["content"]!.GetValue<string>()));
    }

    // ---- 2: a report is the image's, whatever was said before

    [Fact]
    public async Task TheReportOfAConversationDoesNotDependOnItsEarlierTurns()
    {
        byte[] png = await File.ReadAllBytesAsync(ServingModel.SampleImages[0], Ct);
        string id = (await JsonOf(await Http.PostAsync("/api/sessions", null, Ct)))["id"]!.GetValue<string>();
        Assert.Equal(HttpStatusCode.OK, (await Http.PostAsync($"/api/sessions/{id}/image", LiveServer.ImageForm(png), Ct)).StatusCode);

        async Task<JsonObject> Ask(JsonObject body)
        {
            body["max_tokens"] = 10;
            var response = await Http.PostAsync($"/api/sessions/{id}/messages", LiveServer.Json(body), Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = LiveServer.SseEvents(await response.Content.ReadAsStringAsync(Ct));
            return JsonNode.Parse(events[^2])!.AsObject();
        }
        async Task<string> Alone(string language)
        {
            var response = await Http.PostAsync("/api/report", LiveServer.ImageForm(png, "x.png", ("language", language), ("max_tokens", "10")), Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return (await JsonOf(response))["report"]!.GetValue<string>();
        }

        foreach (string question in new[] { "Is the heart enlarged?", "Any pleural effusion?", "Where is the opacity?" })
            await Ask(new JsonObject { ["text"] = question });
        foreach (string language in new[] { "en", "zh" })
        {
            var report = await Ask(new JsonObject { ["report"] = true, ["language"] = language });
            Assert.True(report["report"]!.GetValue<bool>());
            Assert.Equal(language, report["language"]!.GetValue<string>());
            Assert.Equal(await Alone(language), report["text"]!.GetValue<string>());
        }

        // The report added no turn: the chat is the three questions and their answers.
        var turns = (await JsonOf(await Http.GetAsync($"/api/sessions/{id}", Ct)))["turns"]!.AsArray();
        Assert.Equal(6, turns.Count);
        Assert.DoesNotContain(turns, t => t!["text"]!.GetValue<string>() == XrayVL.Data.InstructionPhrases.ReportRequest("en"));

        // A report before any image is a 400 naming the problem, as a question is.
        string fresh = (await JsonOf(await Http.PostAsync("/api/sessions", null, Ct)))["id"]!.GetValue<string>();
        var early = await Http.PostAsync($"/api/sessions/{fresh}/messages", LiveServer.Json(new JsonObject { ["report"] = true }), Ct);
        Assert.Contains("no image", Message(await ErrorOf(early, HttpStatusCode.BadRequest)));
    }

    // ---- 4: broken multipart bodies are the client's mistake

    [Fact]
    public async Task TruncatedOrGarbageMultipartBodiesGet400()
    {
        string id = (await JsonOf(await Http.PostAsync("/api/sessions", null, Ct)))["id"]!.GetValue<string>();
        byte[] png = ServingModel.PatternPng(82);
        string head = "--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n";
        var bodies = new Dictionary<string, byte[]>
        {
            ["truncated (no closing boundary)"] = [.. Encoding.ASCII.GetBytes(head), .. png[..(png.Length / 2)]],
            ["garbage"] = Encoding.ASCII.GetBytes("this is not a multipart body at all"),
            ["headers cut short"] = Encoding.ASCII.GetBytes("--xyz\r\nContent-Disposition: form-da"),
        };
        foreach (string path in new[] { "/api/report", $"/api/sessions/{id}/image" })
            foreach (var (what, bytes) in bodies)
            {
                var content = new ByteArrayContent(bytes);
                content.Headers.ContentType = MediaTypeHeaderValue.Parse("multipart/form-data; boundary=xyz");
                var response = await Http.PostAsync(path, content, Ct);
                var error = await ErrorOf(response, HttpStatusCode.BadRequest);
                Assert.Equal("bad_request", error["code"]!.GetValue<string>());
                Assert.True(Message(error).Contains("multipart") || Message(error).Contains("no image"), $"{path}, {what}: {Message(error)}");
            }
        Assert.DoesNotContain(fixture.Live.Logs.Lines, l => l.Contains(" 500 ") || l.Contains("IOException"));
    }

    // ---- 7: OpenAI's answers to what this server does not have

    [Fact]
    public async Task ModelsCanBeRetrievedAndUnknownModelsAre404ModelNotFound()
    {
        string served = ServingModel.Loaded.Name;
        foreach (string name in new[] { served, "xrayvl" })
        {
            var model = await JsonOf(await Http.GetAsync($"/v1/models/{name}", Ct));
            Assert.Equal(served, model["id"]!.GetValue<string>());
            Assert.Equal("model", model["object"]!.GetValue<string>());
        }
        var missing = await ErrorOf(await Http.GetAsync("/v1/models/gpt-4o", Ct), HttpStatusCode.NotFound);
        Assert.Equal("model_not_found", missing["code"]!.GetValue<string>());
        Assert.Contains(served, Message(missing));

        var request = LiveServer.ChatRequest("x", ServingModel.PatternPng(83), maxTokens: 2);
        request["model"] = "gpt-4o";
        var unknown = await ErrorOf(await Complete(request), HttpStatusCode.NotFound);
        Assert.Equal(("model_not_found", "model"), (unknown["code"]!.GetValue<string>(), Param(unknown)));
        Assert.Contains("gpt-4o", Message(unknown));
    }

    [Fact]
    public async Task UnsupportedParametersAre400NamingThemAndTheirOffValuesAreAccepted()
    {
        byte[] png = ServingModel.PatternPng(84);
        var asks = new Dictionary<string, JsonNode>
        {
            ["tools"] = new JsonArray(new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "f" } }),
            ["tool_choice"] = "required",
            ["response_format"] = new JsonObject { ["type"] = "json_object" },
            ["logprobs"] = true,
            ["top_logprobs"] = 3,
            ["logit_bias"] = new JsonObject { ["42"] = 10 },
            ["modalities"] = new JsonArray("text", "audio"),
            ["some_vendor_extension"] = 1,
        };
        foreach (var (name, value) in asks)
        {
            var request = LiveServer.ChatRequest("x", png, maxTokens: 2);
            request[name] = value.DeepClone();
            var error = await ErrorOf(await Complete(request), HttpStatusCode.BadRequest);
            Assert.Equal(name, Param(error));
            Assert.Contains($"\"{name}\"", Message(error));
        }

        // Several at once are all named.
        var several = LiveServer.ChatRequest("x", png, maxTokens: 2);
        several["tools"] = asks["tools"].DeepClone();
        several["logprobs"] = true;
        var both = Message(await ErrorOf(await Complete(several), HttpStatusCode.BadRequest));
        Assert.Contains("\"tools\"", both);
        Assert.Contains("\"logprobs\"", both);

        // Off values (what clients send by default) and the documented ignored parameters are accepted.
        var off = LiveServer.ChatRequest("x", png, maxTokens: 2);
        off["tools"] = new JsonArray();
        off["tool_choice"] = "none";
        off["response_format"] = new JsonObject { ["type"] = "text" };
        off["logprobs"] = false;
        off["frequency_penalty"] = 0.5;
        off["presence_penalty"] = 0.1;
        off["user"] = "someone";
        off["parallel_tool_calls"] = false;
        Assert.Equal(HttpStatusCode.OK, (await Complete(off)).StatusCode);
    }

    [Fact]
    public async Task AtMostTwoImagesPerRequest()
    {
        JsonObject WithImages(int count)
        {
            var request = LiveServer.ChatRequest("Frontal and lateral: describe.", ServingModel.PatternPng(85), maxTokens: 2);
            var parts = request["messages"]![0]!["content"]!.AsArray();
            for (int i = 1; i < count; i++) parts.Add(parts[1]!.DeepClone());
            return request;
        }
        Assert.Equal(HttpStatusCode.OK, (await Complete(WithImages(2))).StatusCode);
        var error = await ErrorOf(await Complete(WithImages(3)), HttpStatusCode.BadRequest);
        Assert.Equal("messages[0].content[3]", Param(error));
        Assert.Contains("at most 2 images", Message(error));
    }

    // ---- 8: short, precise errors

    [Fact]
    public async Task ErrorMessagesQuoteUserValuesBriefly()
    {
        string huge = new('x', 5 << 20);
        var request = LiveServer.ChatRequest("x", ServingModel.PatternPng(86), maxTokens: 2);
        request["language"] = huge;
        var response = await Complete(request);
        Assert.True(response.Content.Headers.ContentLength is < 2000, $"{response.Content.Headers.ContentLength} bytes of error");
        var error = await ErrorOf(response, HttpStatusCode.BadRequest);
        Assert.Equal("language", Param(error));
        Assert.Contains($"({huge.Length} characters)", Message(error));

        var form = await Http.PostAsync("/api/report", LiveServer.ImageForm(ServingModel.PatternPng(86), "x.png", ("language", new string('y', 60_000))), Ct);
        Assert.True(Message(await ErrorOf(form, HttpStatusCode.BadRequest)).Length < 300);

        var role = LiveServer.ChatRequest("x", ServingModel.PatternPng(86), maxTokens: 2);
        role["messages"]![0]!["role"] = new string('r', 100_000);
        Assert.True(Message(await ErrorOf(await Complete(role), HttpStatusCode.BadRequest)).Length < 300);
    }

    [Fact]
    public async Task TopKErrorsNameTheirParameter()
    {
        var request = LiveServer.ChatRequest("x", ServingModel.PatternPng(87), maxTokens: 2);
        request["top_k"] = -1;
        var error = await ErrorOf(await Complete(request), HttpStatusCode.BadRequest);
        Assert.Equal("top_k", Param(error));
        request["top_k"] = 1.5;
        Assert.Equal("top_k", Param(await ErrorOf(await Complete(request), HttpStatusCode.BadRequest)));
    }

    [Fact]
    public async Task AFormWithTooManyFieldsSaysTheLimit()
    {
        var fields = Enumerable.Range(0, 40).Select(i => ($"f{i}", "v")).ToArray();
        var response = await Http.PostAsync("/api/report", LiveServer.ImageForm(ServingModel.PatternPng(88), "x.png", fields), Ct);
        var message = Message(await ErrorOf(response, HttpStatusCode.BadRequest));
        Assert.Contains("more than 32 fields", message);
    }

    [Fact]
    public async Task ALongUrlGetsA414InTheJsonErrorShape()
    {
        var response = await Http.GetAsync("/v1/models?q=" + new string('a', 20_000), Ct);
        var error = await ErrorOf(response, (HttpStatusCode)414);
        Assert.Equal("uri_too_long", error["code"]!.GetValue<string>());
        Assert.Contains("8192", Message(error));
        Assert.Equal(HttpStatusCode.OK, (await Http.GetAsync("/v1/models?q=" + new string('a', 1000), Ct)).StatusCode);
    }

    [Fact]
    public async Task AChunkedSessionBodyIsRead()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/api/sessions")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes("{\"language\": \"zh\"}"))),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TransferEncodingChunked = true;
        var response = await Http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("zh", (await JsonOf(response))["language"]!.GetValue<string>());

        var bad = new HttpRequestMessage(HttpMethod.Post, "/api/sessions")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes("{\"language\": \"fr\"}"))),
        };
        bad.Headers.TransferEncodingChunked = true;
        Assert.Equal("language", Param(await ErrorOf(await Http.SendAsync(bad, Ct), HttpStatusCode.BadRequest)));
    }

    [Fact]
    public async Task TheFaviconIsServed()
    {
        var response = await Http.GetAsync("/favicon.ico", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/x-icon", response.Content.Headers.ContentType?.MediaType);
        byte[] icon = await response.Content.ReadAsByteArrayAsync(Ct);
        Assert.Equal(new byte[] { 0, 0, 1, 0 }, icon[..4]);                         // ICO header: reserved 0, type 1 (icon)
    }
}
