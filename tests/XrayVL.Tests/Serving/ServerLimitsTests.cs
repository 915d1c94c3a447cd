using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using XrayVL.Imaging;
using XrayVL.Server;

namespace XrayVL.Tests.Serving;

/// <summary>Servers with special settings: upload limits, an API key, a hand-moved clock, one row at a time.</summary>
public class ServerLimitsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<string> ErrorOf(HttpResponseMessage response, HttpStatusCode expected)
    {
        Assert.Equal(expected, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!["error"]!["message"]!.GetValue<string>();
    }

    [Fact]
    public async Task UploadsAboveTheByteOrPixelLimitsGet413()
    {
        await using var live = await LiveServer.StartAsync(o => o with { MaxUploadBytes = 16 * 1024, MaxPixels = 10_000 });
        var http = live.Client;
        var noise = new Random(1);
        var big = new float[200 * 200];
        for (int i = 0; i < big.Length; i++) big[i] = (float)noise.NextDouble();
        byte[] largeFile = PngWriter.EncodeGray(new GrayImage(200, 200, big));               // incompressible: about 40 KB
        Assert.True(largeFile.Length > 16 * 1024);
        Assert.Contains("limit", await ErrorOf(await http.PostAsync("/api/report", LiveServer.ImageForm(largeFile), Ct), HttpStatusCode.RequestEntityTooLarge));
        Assert.Contains("limit", await ErrorOf(await http.PostAsync("/v1/chat/completions", LiveServer.Json(LiveServer.ChatRequest("x", largeFile)), Ct), HttpStatusCode.RequestEntityTooLarge));

        byte[] manyPixels = PngWriter.EncodeGray(new GrayImage(150, 150, new float[150 * 150]));   // small file, 22 500 pixels
        Assert.True(manyPixels.Length < 16 * 1024);
        Assert.Contains("megapixels", await ErrorOf(await http.PostAsync("/api/report", LiveServer.ImageForm(manyPixels), Ct), HttpStatusCode.RequestEntityTooLarge));
        Assert.Equal(HttpStatusCode.OK, (await http.PostAsync("/api/report", LiveServer.ImageForm(ServingModel.PatternPng(70), "x", ("max_tokens", "3")), Ct)).StatusCode);
    }

    [Fact]
    public async Task AnApiKeyGuardsTheApiButNotThePageOrHealth()
    {
        const string key = "s3cret-key-for-tests";
        await using var live = await LiveServer.StartAsync(o => o with { ApiKey = key });
        var http = live.Client;
        var missing = await http.GetAsync("/v1/models", Ct);
        Assert.Contains("API key", await ErrorOf(missing, HttpStatusCode.Unauthorized));
        Assert.Equal("Bearer", missing.Headers.WwwAuthenticate.Single().Scheme);
        var wrong = new HttpRequestMessage(HttpMethod.Post, "/api/sessions") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", "not-the-key") } };
        Assert.Contains("not valid", await ErrorOf(await http.SendAsync(wrong, Ct), HttpStatusCode.Unauthorized));
        var right = new HttpRequestMessage(HttpMethod.Get, "/v1/models") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", key) } };
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(right, Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/healthz", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/", Ct)).StatusCode);
        Assert.DoesNotContain(live.Logs.Lines, l => l.Contains(key));
    }

    [Fact]
    public async Task IdleConversationsExpireAndUseKeepsThemAlive()
    {
        var clock = new ManualClock();
        await using var live = await LiveServer.StartAsync(o => o with { TimeProvider = clock, SessionIdleTimeout = TimeSpan.FromMinutes(10) });
        var http = live.Client;
        string id = JsonNode.Parse(await (await http.PostAsync("/api/sessions", null, Ct)).Content.ReadAsStringAsync(Ct))!["id"]!.GetValue<string>();
        string other = JsonNode.Parse(await (await http.PostAsync("/api/sessions", null, Ct)).Content.ReadAsStringAsync(Ct))!["id"]!.GetValue<string>();
        clock.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"/api/sessions/{id}", Ct)).StatusCode);    // used: the clock restarts
        clock.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"/api/sessions/{id}", Ct)).StatusCode);    // 6 min idle: still there
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"/api/sessions/{other}", Ct)).StatusCode);   // 12 min idle: gone
        clock.Advance(TimeSpan.FromMinutes(11));
        live.Server.Sessions.Sweep();
        Assert.Equal(0, live.Server.Sessions.Count);
        Assert.Contains("expired", await ErrorOf(await http.GetAsync($"/api/sessions/{id}", Ct), HttpStatusCode.NotFound));
    }

    [Fact]
    public async Task AClientThatLeavesMidStreamFreesItsRow()
    {
        await using var live = await LiveServer.StartAsync(o => o with { Model = ServingModel.Slow, MaxBatch = 1, MaxOutputTokens = 900 });
        var http = live.Client;
        byte[] png = ServingModel.PatternPng(71);

        // A long answer through the page's conversation endpoint ...
        string id = JsonNode.Parse(await (await http.PostAsync("/api/sessions", null, Ct)).Content.ReadAsStringAsync(Ct))!["id"]!.GetValue<string>();
        await http.PostAsync($"/api/sessions/{id}/image", LiveServer.ImageForm(png), Ct);
        var request = new HttpRequestMessage(HttpMethod.Post, $"/api/sessions/{id}/messages")
        {
            Content = LiveServer.Json(new JsonObject { ["text"] = "Tell me everything.", ["max_tokens"] = 900 }),
        };
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        var stream = await response.Content.ReadAsStreamAsync(Ct);
        var buffer = new byte[256];
        Assert.True(await stream.ReadAsync(buffer, Ct) > 0);                               // the answer is streaming

        // ... blocks its conversation (409) and, with one row, every other request while it runs.
        var concurrent = await http.PostAsync($"/api/sessions/{id}/messages", LiveServer.Json(new JsonObject { ["text"] = "again" }), Ct);
        Assert.Contains("still being written", await ErrorOf(concurrent, HttpStatusCode.Conflict));

        response.Dispose();                                                                  // the client leaves
        var other = await http.PostAsync("/v1/chat/completions", LiveServer.Json(LiveServer.ChatRequest("short", png, maxTokens: 4)), Ct);
        Assert.Equal(HttpStatusCode.OK, other.StatusCode);
        var stats = live.Server.Pipeline.Stats;
        Assert.True(stats.Cancelled == 1, $"{stats}: the long answer was not abandoned mid-way");
        Assert.Equal(1, stats.Completed);
        Assert.True(stats.Steps < 500, $"{stats.Steps} steps: the abandoned answer kept its row");

        // The conversation kept no trace of the abandoned answer, and the server logged that the client left.
        Assert.Empty(JsonNode.Parse(await http.GetStringAsync($"/api/sessions/{id}", Ct))!["turns"]!.AsArray());
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!live.Logs.Lines.Any(l => l.Contains("/api/sessions/{id}/messages 200 (client left)")) && DateTime.UtcNow < deadline) await Task.Delay(20, Ct);
        Assert.Contains(live.Logs.Lines, l => l.Contains("/api/sessions/{id}/messages 200 (client left)"));
    }

    [Fact]
    public void NonLoopbackAddressesAreRefusedUnlessAllowed()
    {
        var options = new ServerOptions { Model = ServingModel.Loaded };
        Assert.Contains("--allow-remote", Assert.Throws<XrayVLException>(() => (options with { Urls = ["http://0.0.0.0:7860"] }).Validate()).Message);
        Assert.Throws<XrayVLException>(() => (options with { Urls = ["http://*:7860"] }).Validate());
        Assert.Throws<XrayVLException>(() => (options with { Urls = ["http://192.168.1.20:7860"] }).Validate());
        (options with { Urls = ["http://localhost:7860", "http://[::1]:7861", "http://127.0.0.2:1"] }).Validate();
        (options with { Urls = ["http://0.0.0.0:7860"], AllowRemote = true }).Validate();
        Assert.Contains("no model", Assert.Throws<XrayVLException>(() => new ServerOptions().Validate()).Message);
        Assert.Throws<XrayVLException>(() => (options with { ApiKey = "short" }).Validate());
    }
}
