using System.Security.Cryptography;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;
using XrayVL.Serving;

namespace XrayVL.Server;

/// <summary>
/// One web conversation: its chat (turns and image), the preview the page shows, and a gate so that one answer is
/// written at a time. Only the model-sized image is kept (see <see cref="Preprocess.ToModelSquare"/>), never the upload.
/// </summary>
public sealed class WebSession(string id, ChatSession chat, DateTimeOffset now)
{
    public string Id { get; } = id;
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
/// forgotten after an idle time (sliding). Expired sessions are dropped when touched and by a periodic sweep.
/// </summary>
public sealed class SessionStore : IDisposable
{
    private readonly Dictionary<string, WebSession> sessions = new(StringComparer.Ordinal);
    private readonly object gate = new();
    private readonly LoadedModel model;
    private readonly BatchScheduler scheduler;
    private readonly TimeProvider clock;
    private readonly ITimer sweeper;

    public SessionStore(LoadedModel model, BatchScheduler scheduler, TimeSpan idleTimeout, int maxSessions, TimeProvider clock)
    {
        this.model = model;
        this.scheduler = scheduler;
        this.clock = clock;
        IdleTimeout = idleTimeout;
        MaxSessions = maxSessions;
        var period = TimeSpan.FromTicks(Math.Min(idleTimeout.Ticks, TimeSpan.FromMinutes(1).Ticks));
        sweeper = clock.CreateTimer(_ => Sweep(), null, period, period);
    }

    public TimeSpan IdleTimeout { get; }
    public int MaxSessions { get; }

    public int Count
    {
        get { lock (gate) return sessions.Count; }
    }

    /// <summary>A new empty conversation; <see cref="SchedulerBusyException"/> when too many are open.</summary>
    public WebSession Create(string language)
    {
        Sweep();
        string id = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var session = new WebSession(id, new ChatSession(model, scheduler, language), clock.GetUtcNow());
        lock (gate)
        {
            if (sessions.Count >= MaxSessions)
                throw new SchedulerBusyException($"too many open conversations ({sessions.Count}); try again later");
            sessions[id] = session;
        }
        return session;
    }

    /// <summary>The session, its idle clock restarted; null when unknown or expired (an expired one is removed).</summary>
    public WebSession? Get(string id)
    {
        var now = clock.GetUtcNow();
        lock (gate)
        {
            if (!sessions.TryGetValue(id, out var session)) return null;
            if (Expired(session, now))
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
        var now = clock.GetUtcNow();
        lock (gate)
            foreach (var (id, session) in sessions.Where(kv => Expired(kv.Value, now)).ToList())
                sessions.Remove(id);
    }

    private bool Expired(WebSession session, DateTimeOffset now) =>
        now - session.LastUsed > IdleTimeout && session.Busy.CurrentCount > 0;

    public void Dispose() => sweeper.Dispose();
}
