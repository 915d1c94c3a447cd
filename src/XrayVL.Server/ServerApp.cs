using System.Diagnostics;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>What every endpoint shares: the model's pipeline, the chat client over it, the report writer, the sessions.</summary>
public sealed class XrayServer : IDisposable
{
    private readonly LoadedPipeline loaded;

    public XrayServer(ServerOptions options)
    {
        Options = options.Validate();
        var batching = new BatchSchedulerOptions { MaxBatch = options.MaxBatch, MaxQueue = options.MaxQueue };
        if (options.Model is { } given)
        {
            // A model the caller loaded (and disposes): the server owns only the scheduler it runs it with.
            var scheduler = new BatchScheduler(given.Model, given.Preprocess, batching);
            loaded = new LoadedPipeline(new InferencePipeline(given, scheduler), given.Name, scheduler);
        }
        else loaded = LoadedPipeline.Load(options.ModelDir!, WeightFormats.Parse(options.DType), batching, options.LoadProgress);
        Reports = new ReportWriter(Pipeline, ModelId);
        Decodes = new DecodeBudget(options.DecodeBudgetBytes);
        ChatClient = new XrayChatClient(Pipeline, ModelId, new XrayChatClientOptions
        {
            ImageLimits = options.ImageLimits,
            MaxOutputTokensLimit = options.MaxOutputTokens,
            DefaultMaxOutputTokens = options.DefaultMaxTokens,
            MaxImages = options.MaxImages,
            DecodeBudget = Decodes,
        });
        Sessions = new SessionStore(Pipeline, options);
        Started = options.TimeProvider.GetUtcNow();
    }

    public ServerOptions Options { get; }
    /// <summary>
    /// Every endpoint's way from a conversation to text, shared by all clients: through a batch scheduler for the
    /// LLaVA-family models, one generation at a time for XrayGLM.
    /// </summary>
    public IInferencePipeline Pipeline => loaded.Pipeline;
    /// <summary>Reports for /api/report and the page, written apart from any chat.</summary>
    public ReportWriter Reports { get; }
    /// <summary>Every image decode of every endpoint reserves its memory here.</summary>
    public DecodeBudget Decodes { get; }
    public XrayChatClient ChatClient { get; }
    public SessionStore Sessions { get; }
    public DateTimeOffset Started { get; }
    /// <summary>The model folder's name: what /v1/models lists and every answer names.</summary>
    public string ModelId => loaded.Name;

    public void Dispose()
    {
        Sessions.Dispose();
        ChatClient.Dispose();
        loaded.Dispose();
    }
}

/// <summary>
/// The web server: the page (/), the OpenAI-compatible API (/v1/chat/completions, /v1/models), the report API
/// (/api/report), the page's conversations (/api/sessions/...), /healthz and /openapi.json.
/// </summary>
public static class ServerApp
{
    /// <summary>Builds (does not start) the application. `xrayvl serve` runs it; tests start it on 127.0.0.1:0.</summary>
    public static WebApplication Build(ServerOptions options)
    {
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = [],
            ApplicationName = typeof(ServerApp).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = Environments.Production,
        });
        builder.WebHost.UseUrls([.. options.Urls]);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            // A chat request carries its image as base64 (4/3 of the bytes) plus the text.
            kestrel.Limits.MaxRequestBodySize = options.MaxUploadBytes * 4 / 3 + (1 << 20);
            // Kestrel answers a request line over its limit with an empty 414 before any middleware runs; with room up
            // to 1 MiB, this server's own check (MaxTargetLength) answers it with the JSON error instead.
            kestrel.Limits.MaxRequestLineSize = 1 << 20;
        });
        builder.Logging.ClearProviders();
        if (options.ConfigureLogging is { } configure) configure(builder.Logging);
        else builder.Logging.AddSimpleConsole(console => { console.SingleLine = true; console.TimestampFormat = "HH:mm:ss "; });
        // Request lines come from this server's own middleware (route patterns, never bodies or session ids).
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("System", LogLevel.Warning);

        var server = new XrayServer(options);
        builder.Services.AddSingleton(server);
        var app = builder.Build();
        app.Lifetime.ApplicationStopped.Register(server.Dispose);

        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("XrayVL.Server");
        app.Use((context, next) => LogAndAnswerErrors(context, next, log));
        app.Use(RefuseLongTargets);
        app.Use((context, next) => RequireApiKey(context, next, options.ApiKey));

        StaticAssets.Map(app);
        app.MapGet("/healthz", (HttpContext context) => Healthz(context, server));
        OpenAiEndpoints.Map(app, server);
        PageEndpoints.Map(app, server);
        app.MapFallback("/v1/{**rest}", NotFound);
        app.MapFallback("/api/{**rest}", NotFound);
        return app;
    }

    /// <summary>Longest path and query accepted (Kestrel's usual request-line limit); no endpoint needs more.</summary>
    public const int MaxTargetLength = 8192;

    private static Task RefuseLongTargets(HttpContext context, RequestDelegate next)
    {
        long length = (context.Request.Path.Value?.Length ?? 0) + (context.Request.QueryString.Value?.Length ?? 0);
        return length <= MaxTargetLength ? next(context)
            : ApiErrors.WriteAsync(context, StatusCodes.Status414UriTooLong, $"the URL is {length} characters long, above the limit of {MaxTargetLength}");
    }

    private static Task NotFound(HttpContext context) =>
        ApiErrors.WriteAsync(context, StatusCodes.Status404NotFound, $"no such endpoint: {context.Request.Method} {ApiErrors.Quote(context.Request.Path.Value ?? "")}; see /openapi.json");

    private static Task Healthz(HttpContext context, XrayServer server)
    {
        var stats = server.Pipeline.Stats;
        return Results.Json(new
        {
            status = "ok",
            model = server.ModelId,
            queued = stats.Queued,
            running = stats.Running,
            sessions = server.Sessions.Count,
            uptime_seconds = Math.Round((server.Options.TimeProvider.GetUtcNow() - server.Started).TotalSeconds),
        }).ExecuteAsync(context);
    }

    /// <summary>
    /// One log line per request: method, route pattern, status, milliseconds — no bodies, no query strings, no session
    /// ids. Failures become JSON errors; a 500 logs the exception's type only (messages may quote user input).
    /// </summary>
    private static async Task LogAndAnswerErrors(HttpContext context, RequestDelegate next, ILogger log)
    {
        long started = Stopwatch.GetTimestamp();
        string outcome = "";
        try
        {
            await next(context);
        }
        catch (Exception e) when (e is OperationCanceledException && context.RequestAborted.IsCancellationRequested)
        {
            outcome = " (client left)";
        }
        catch (Exception e)
        {
            var error = ApiErrors.Describe(e);
            if (error.Status >= 500 && error.Status != StatusCodes.Status503ServiceUnavailable)
                log.LogError("{Method} {Route} failed with {Exception}", context.Request.Method, RouteOf(context), e.GetType().FullName);
            if (!context.Response.HasStarted)
            {
                context.Response.Clear();
                await ApiErrors.WriteAsync(context, error);
            }
            else outcome = " (failed after the response started)";
        }
        finally
        {
            log.LogInformation("{Method} {Route} {Status}{Outcome} {Milliseconds:0} ms", context.Request.Method, RouteOf(context),
                context.Response.StatusCode, outcome, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }
    }

    private static string RouteOf(HttpContext context) =>
        context.GetEndpoint() is RouteEndpoint { RoutePattern.RawText: { } pattern } ? "/" + pattern.TrimStart('/') : "(no route)";

    private static Task RequireApiKey(HttpContext context, RequestDelegate next, string? apiKey)
    {
        if (apiKey is null) return next(context);
        var path = context.Request.Path;
        if (!path.StartsWithSegments("/v1") && !path.StartsWithSegments("/api")) return next(context);
        string header = context.Request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)
            && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[scheme.Length..].Trim()), Encoding.UTF8.GetBytes(apiKey)))
            return next(context);
        return ApiErrors.WriteAsync(context, StatusCodes.Status401Unauthorized,
            header.Length == 0 ? "this server needs an API key: send Authorization: Bearer KEY" : "the API key is not valid");
    }
}

/// <summary>The page and the OpenAPI description, embedded in the assembly (served from memory, whatever the working directory).</summary>
internal static class StaticAssets
{
    private const string Prefix = "wwwroot/";

    public static void Map(WebApplication app)
    {
        var assembly = typeof(StaticAssets).Assembly;
        foreach (string name in assembly.GetManifestResourceNames().Where(n => n.StartsWith(Prefix, StringComparison.Ordinal)))
        {
            byte[] bytes = Read(assembly, name);
            string file = name[Prefix.Length..];
            string type = ContentType(file);
            string etag = "\"" + Convert.ToHexStringLower(SHA256.HashData(bytes))[..16] + "\"";
            RequestDelegate serve = context =>
            {
                var headers = context.Response.Headers;
                headers.ETag = etag;
                headers.CacheControl = "no-cache";
                headers.XContentTypeOptions = "nosniff";
                headers["Referrer-Policy"] = "no-referrer";
                if (type.StartsWith("text/html", StringComparison.Ordinal))
                {
                    headers.ContentSecurityPolicy = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";
                    headers.XFrameOptions = "DENY";
                }
                if (context.Request.Headers.IfNoneMatch == etag)
                {
                    context.Response.StatusCode = StatusCodes.Status304NotModified;
                    return Task.CompletedTask;
                }
                context.Response.ContentType = type;
                return context.Response.Body.WriteAsync(bytes, context.RequestAborted).AsTask();
            };
            app.MapGet("/" + file, serve);
            if (file == "index.html") app.MapGet("/", serve);
        }
    }

    public static byte[] Read(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream(name) ?? throw new InvalidOperationException($"resource {name} is missing");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    private static string ContentType(string file) => Path.GetExtension(file) switch
    {
        ".html" => "text/html; charset=utf-8",
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".json" => "application/json; charset=utf-8",
        ".svg" => "image/svg+xml",
        ".png" => "image/png",
        ".ico" => "image/x-icon",
        _ => "application/octet-stream",
    };
}
