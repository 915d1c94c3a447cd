using System.Net;
using Microsoft.Extensions.Logging;
using XrayVL.Imaging;
using XrayVL.IO;

namespace XrayVL.Server;

/// <summary>Everything `xrayvl serve` can be told; each default with its reason.</summary>
public sealed record ServerOptions
{
    /// <summary>The model folder to load (ignored when <see cref="Model"/> is given).</summary>
    public string? ModelDir { get; init; }
    /// <summary>How <see cref="ModelDir"/>'s weights are held: fp32, bf16, int8 or int4 (see WeightFormats).</summary>
    public string DType { get; init; } = "fp32";
    /// <summary>An already loaded model (tests, or a host that loads once); the server does not dispose it.</summary>
    public LoadedModel? Model { get; init; }
    /// <summary>Gets (bytes read, bytes in all) while <see cref="ModelDir"/>'s weights load (the CLI's progress bar).</summary>
    public Action<long, long>? LoadProgress { get; init; }
    /// <summary>Loopback only by default: a research tool should not be reachable from the network by accident.</summary>
    public IReadOnlyList<string> Urls { get; init; } = ["http://127.0.0.1:7860"];
    /// <summary>Non-loopback addresses are refused unless this is set (and then an API key is advised).</summary>
    public bool AllowRemote { get; init; }
    /// <summary>When set, /v1/* and /api/* need <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }
    /// <summary>20 MiB: a chest radiograph as PNG or DICOM is a few MiB; far above that is not an X-ray we can use.</summary>
    public long MaxUploadBytes { get; init; } = 20L << 20;
    /// <summary>Pixel and side limits for decoded images (the byte limit is <see cref="MaxUploadBytes"/>).</summary>
    public long MaxPixels { get; init; } = ImageLimits.Default.MaxPixels;
    /// <summary>Rows decoded together; see <see cref="Serving.BatchSchedulerOptions.MaxBatch"/>.</summary>
    public int MaxBatch { get; init; } = 8;
    /// <summary>Requests waiting for a row before new ones get 503.</summary>
    public int MaxQueue { get; init; } = 256;
    /// <summary>A conversation left alone this long is forgotten (sliding: each use restarts the clock).</summary>
    public TimeSpan SessionIdleTimeout { get; init; } = TimeSpan.FromMinutes(30);
    /// <summary>Open conversations at most (each holds a small image and its turns); when full, the least recently used
    /// conversation that is not writing an answer makes room.</summary>
    public int MaxSessions { get; init; } = 512;
    /// <summary>Open conversations per client address (the page opens one per tab): a client over it loses its own least
    /// recently used one, so nobody can fill the table. Behind a reverse proxy every client has the proxy's address: raise it.</summary>
    public int MaxSessionsPerClient { get; init; } = 16;
    /// <summary>Under pressure (the table three quarters full) conversations idle this long are forgotten early.</summary>
    public TimeSpan SessionIdleTimeoutUnderPressure { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>Images one chat request may carry: a study's frontal and lateral views, as the model was trained on.</summary>
    public int MaxImages { get; init; } = 2;
    /// <summary>Memory that concurrent image decodes may hold together (see <see cref="Serving.DecodeBudget"/>).</summary>
    public long DecodeBudgetBytes { get; init; } = Serving.DecodeBudget.DefaultCapacityBytes;
    /// <summary>Longest answer a request may ask for.</summary>
    public int MaxOutputTokens { get; init; } = 1024;
    /// <summary>Answer length when a request does not say.</summary>
    public int DefaultMaxTokens { get; init; } = 256;
    /// <summary>The clock for session expiry (tests move it by hand).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
    /// <summary>Replaces the default console logging (one line per request: method, route, status, time).</summary>
    public Action<ILoggingBuilder>? ConfigureLogging { get; init; }

    public ImageLimits ImageLimits => new() { MaxBytes = MaxUploadBytes, MaxPixels = MaxPixels };

    /// <summary>Throws an XrayVLException naming the value at fault; refuses non-loopback addresses without AllowRemote.</summary>
    public ServerOptions Validate()
    {
        if (Model is null && string.IsNullOrWhiteSpace(ModelDir)) throw new XrayVLException("no model: give a model folder (--model DIR)");
        _ = Kernels.WeightFormats.Parse(DType);
        if (Urls.Count == 0) throw new XrayVLException("no address to listen on (--urls)");
        if (MaxUploadBytes < 1024) throw new XrayVLException($"max upload size {MaxUploadBytes} bytes is too small");
        if (MaxBatch < 1 || MaxQueue < 1 || MaxSessions < 1 || MaxSessionsPerClient < 1 || MaxImages < 1)
            throw new XrayVLException("max batch, queue, sessions, sessions per client and images must be at least 1");
        if (DecodeBudgetBytes < 1 << 20) throw new XrayVLException($"the decode budget of {DecodeBudgetBytes} bytes is below 1 MiB");
        if (SessionIdleTimeout <= TimeSpan.Zero || SessionIdleTimeoutUnderPressure <= TimeSpan.Zero) throw new XrayVLException("the session idle timeout must be positive");
        if (DefaultMaxTokens < 1 || DefaultMaxTokens > MaxOutputTokens) throw new XrayVLException($"default max tokens {DefaultMaxTokens} must be in 1..{MaxOutputTokens}");
        if (ApiKey is { } key && (key.Length < 8 || key.Any(char.IsWhiteSpace)))
            throw new XrayVLException("the API key must be at least 8 characters without spaces");
        foreach (var url in Urls)
        {
            if (!IsLoopback(url, out string host) && !AllowRemote)
                throw new XrayVLException($"--urls {url}: '{host}' is not a loopback address; pass --allow-remote to serve other machines (and set --api-key)");
        }
        return this;
    }

    /// <summary>True for http(s)://127.x.x.x, [::1] and localhost; false for anything else (0.0.0.0, *, +, names, LAN addresses).</summary>
    public static bool IsLoopback(string url, out string host)
    {
        host = url;
        if (!Uri.TryCreate(url.Replace("://*", "://wildcard.invalid").Replace("://+", "://wildcard.invalid"), UriKind.Absolute, out var uri)
            || uri.Scheme is not ("http" or "https"))
            throw new XrayVLException($"--urls {url}: not an http:// or https:// address");
        host = uri.Host;
        if (uri.IsLoopback) return true;
        return IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip);
    }
}
