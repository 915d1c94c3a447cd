using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>
/// One web conversation: its chat (turns and image), the preview the page shows, and a gate so that one answer is
/// written at a time. Only the model-sized image is kept (see <see cref="Preprocess.ToModelSquare"/>), never the upload.
/// </summary>
public sealed class WebSession(string id, string client, ChatSession chat, DateTimeOffset now)
{
    public string Id { get; } = id;
    /// <summary>The address that opened it (sessions are bounded per address).</summary>
    internal string Client { get; } = client;
    public ChatSession Chat { get; } = chat;
    public SemaphoreSlim Busy { get; } = new(1, 1);
    public byte[]? PreviewPng { get; set; }
    public GrayImage? ModelImage { get; set; }
    public ImageFormat? Format { get; set; }
    public int Width { get; set; }
    public int Height { get; set; }
    internal DateTimeOffset LastUsed { get; set; } = now;
}

/// <summary>
/// The server's conversations, keyed by unguessable ids (128 random bits: knowing one gives no access to another),
/// forgotten after an idle time (sliding). Nobody can lock others out by opening many: a client address holds at most
/// <see cref="ServerOptions.MaxSessionsPerClient"/> (its own least recently used goes first), the table three quarters
/// full forgets conversations idle for <see cref="ServerOptions.SessionIdleTimeoutUnderPressure"/>, and a full table
/// forgets its least recently used conversation. Only when every open conversation is writing an answer is a new one
/// refused (503; Retry-After is the time a short answer takes). A forgotten conversation answers 404 and the page
/// starts a new one with the same image.
/// </summary>
public sealed class SessionStore : IDisposable
{
    /// <summary>Seconds to wait when every conversation is writing an answer: about one short answer.</summary>
    public const int BusyRetryAfterSeconds = 5;

    private readonly Dictionary<string, WebSession> sessions = new(StringComparer.Ordinal);
    private readonly object gate = new();
    private readonly IInferencePipeline pipeline;
    private readonly TimeProvider clock;
    private readonly ITimer sweeper;

    public SessionStore(IInferencePipeline pipeline, ServerOptions options)
    {
        this.pipeline = pipeline;
        clock = options.TimeProvider;
        IdleTimeout = options.SessionIdleTimeout;
        PressureIdleTimeout = options.SessionIdleTimeoutUnderPressure < IdleTimeout ? options.SessionIdleTimeoutUnderPressure : IdleTimeout;
        MaxSessions = options.MaxSessions;
        MaxPerClient = options.MaxSessionsPerClient;
        var period = TimeSpan.FromTicks(Math.Min(PressureIdleTimeout.Ticks, TimeSpan.FromMinutes(1).Ticks));
        sweeper = clock.CreateTimer(_ => Sweep(), null, period, period);
    }

    public TimeSpan IdleTimeout { get; }
    public TimeSpan PressureIdleTimeout { get; }
    public int MaxSessions { get; }
    public int MaxPerClient { get; }

    /// <summary>Conversations forgotten to make room (per client, or for a full table) since the start.</summary>
    public long Evicted { get; private set; }

    public int Count
    {
        get { lock (gate) return sessions.Count; }
    }

    /// <summary>A new empty conversation for <paramref name="client"/> (its address), making room as the class says.</summary>
    public WebSession Create(string language, string client)
    {
        string id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var session = new WebSession(id, client, new ChatSession(pipeline, language), clock.GetUtcNow());
        lock (gate)
        {
            SweepLocked(clock.GetUtcNow());
            var own = sessions.Values.Where(s => s.Client == client).ToList();
            if (own.Count >= MaxPerClient && LeastRecentlyUsedIdle(own) is { } oldest) Evict(oldest);
            if (sessions.Count >= MaxSessions && LeastRecentlyUsedIdle(sessions.Values) is { } lru) Evict(lru);
            if (sessions.Count >= MaxSessions)
                throw new ApiException(StatusCodes.Status503ServiceUnavailable,
                    $"all {sessions.Count} open conversations are writing answers; try again in a few seconds", retryAfterSeconds: BusyRetryAfterSeconds);
            sessions[id] = session;
        }
        return session;
    }

    private static WebSession? LeastRecentlyUsedIdle(IEnumerable<WebSession> candidates) =>
        candidates.Where(s => s.Busy.CurrentCount > 0).MinBy(s => s.LastUsed);

    private void Evict(WebSession session)
    {
        sessions.Remove(session.Id);
        Evicted++;
    }

    /// <summary>The session, its idle clock restarted; null when unknown or expired (an expired one is removed).</summary>
    public WebSession? Get(string id)
    {
        var now = clock.GetUtcNow();
        lock (gate)
        {
            if (!sessions.TryGetValue(id, out var session)) return null;
            if (Expired(session, now, CurrentIdleTimeout))
            {
                sessions.Remove(id);
                return null;
            }
            session.LastUsed = now;
            return session;
        }
    }

    /// <summary>Marks a session used now (at the end of a long answer, so the clock runs from the last activity).</summary>
    public void Touch(WebSession session)
    {
        lock (gate) session.LastUsed = clock.GetUtcNow();
    }

    public bool Remove(string id)
    {
        lock (gate) return sessions.Remove(id);
    }

    /// <summary>Removes every expired session that is not writing an answer right now.</summary>
    public void Sweep()
    {
        lock (gate) SweepLocked(clock.GetUtcNow());
    }

    private void SweepLocked(DateTimeOffset now)
    {
        var timeout = CurrentIdleTimeout;
        foreach (var (id, session) in sessions.Where(kv => Expired(kv.Value, now, timeout)).ToList())
            sessions.Remove(id);
    }

    /// <summary>The idle timeout now: shorter while the table is three quarters full (call under the lock).</summary>
    private TimeSpan CurrentIdleTimeout => sessions.Count * 4 >= MaxSessions * 3 ? PressureIdleTimeout : IdleTimeout;

    private static bool Expired(WebSession session, DateTimeOffset now, TimeSpan timeout) =>
        now - session.LastUsed > timeout && session.Busy.CurrentCount > 0;

    public void Dispose() => sweeper.Dispose();
}
