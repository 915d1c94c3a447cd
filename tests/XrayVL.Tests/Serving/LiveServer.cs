using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using XrayVL.Server;

namespace XrayVL.Tests.Serving;

/// <summary>The real server (Kestrel) on 127.0.0.1 with a free port, the shared tiny model, and its log lines captured.</summary>
public sealed class LiveServer : IAsyncDisposable
{
    private readonly WebApplication app;

    private LiveServer(WebApplication app, Uri address, LogCapture logs)
    {
        this.app = app;
        Address = address;
        Logs = logs;
        // MaxResponseDrainSize 0: a response disposed mid-stream closes its connection at once, as a browser tab that is
        // closed does. By default .NET first drains up to 1 MB or 2 s of the rest, and on a fast machine that reads a
        // whole "abandoned" answer to its end.
        Client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) };
    }

    public Uri Address { get; }
    public HttpClient Client { get; }
    public LogCapture Logs { get; }
    public XrayServer Server => app.Services.GetRequiredService<XrayServer>();
    public IServiceProvider Services => app.Services;

    /// <summary>Starts a server; answers default to 12 tokens so that tests stay fast.</summary>
    public static async Task<LiveServer> StartAsync(Func<ServerOptions, ServerOptions>? configure = null)
    {
        var logs = new LogCapture();
        var options = new ServerOptions
        {
            Model = ServingModel.Loaded,
            Urls = ["http://127.0.0.1:0"],
            DefaultMaxTokens = 12,
            ConfigureLogging = logging => logging.AddProvider(logs),
        };
        var app = ServerApp.Build(configure?.Invoke(options) ?? options);
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new LiveServer(app, new Uri(address), logs);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await app.StopAsync();
        await app.DisposeAsync();
    }

    /// <summary>A chat completion request body: one user message with the text and the PNG as a data: URI.</summary>
    public static JsonObject ChatRequest(string text, byte[] image, int maxTokens = 12, bool stream = false, string mediaType = "image/png") => new()
    {
        ["model"] = "xrayvl",
        ["max_tokens"] = maxTokens,
        ["stream"] = stream,
        ["messages"] = new JsonArray(new JsonObject
        {
            ["role"] = "user",
            ["content"] = new JsonArray(
                new JsonObject { ["type"] = "text", ["text"] = text },
                new JsonObject { ["type"] = "image_url", ["image_url"] = new JsonObject { ["url"] = $"data:{mediaType};base64,{Convert.ToBase64String(image)}" } }),
        }),
    };

    public static StringContent Json(JsonNode body) => new(body.ToJsonString(), Encoding.UTF8, "application/json");

    public static MultipartFormDataContent ImageForm(byte[] bytes, string fileName = "xray.png", params (string Name, string Value)[] fields)
    {
        var form = new MultipartFormDataContent();
        var file = new ByteArrayContent(bytes);
        file.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        form.Add(file, "image", fileName);
        foreach (var (name, value) in fields) form.Add(new StringContent(value), name);
        return form;
    }

    /// <summary>The data payloads of a server-sent event stream, checking the framing: every event is one "data: " line and a blank line.</summary>
    public static List<string> SseEvents(string body)
    {
        Assert.EndsWith("\n\n", body);
        var events = body[..^2].Split("\n\n");
        return events.Select(e =>
        {
            Assert.StartsWith("data: ", e);
            Assert.DoesNotContain('\n', e);
            return e["data: ".Length..];
        }).ToList();
    }
}

/// <summary>Keeps every formatted log line (category, level, message, exception text) for the logging tests.</summary>
public sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<string> lines = new();

    public IReadOnlyList<string> Lines => [.. lines];

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, lines);

    public void Dispose() { }

    private sealed class Logger(string category, ConcurrentQueue<string> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            lines.Enqueue($"{category} {logLevel}: {formatter(state, exception)} {exception}");
    }
}
