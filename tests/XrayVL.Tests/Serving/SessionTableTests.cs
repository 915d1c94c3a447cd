using System.Net;
using System.Text.Json.Nodes;

namespace XrayVL.Tests.Serving;

/// <summary>
/// Nobody can lock others out of the page's conversations: a client holds a bounded number, a full table makes room
/// by forgetting its least recently used conversation, pressure shortens the idle time, and a 503 comes only when every
/// conversation is writing an answer, with a Retry-After that a retry then honours.
/// </summary>
public class SessionTableTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<(HttpStatusCode Status, string? Id)> Create(HttpClient http)
    {
        var response = await http.PostAsync("/api/sessions", null, Ct);
        if (response.StatusCode != HttpStatusCode.Created) return (response.StatusCode, null);
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!["id"]!.GetValue<string>());
    }

    [Fact]
    public async Task OneClientCannotFillTheTable()
    {
        await using var live = await LiveServer.StartAsync(o => o with { MaxSessions = 8, MaxSessionsPerClient = 3 });
        var http = live.Client;
        var ids = new List<string>();
        for (int i = 0; i < 40; i++)                                   // 5× the table, from one address
        {
            var (status, id) = await Create(http);
            Assert.Equal(HttpStatusCode.Created, status);
            ids.Add(id!);
            Assert.InRange(live.Server.Sessions.Count, 1, 3);
        }
        // This client's three most recent conversations are open; its older ones made room.
        foreach (string id in ids[^3..]) Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"/api/sessions/{id}", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"/api/sessions/{ids[0]}", Ct)).StatusCode);

        // Other visitors (other addresses) still get conversations.
        for (int i = 0; i < 5; i++) live.Server.Sessions.Create("en", $"10.0.0.{i}");
        Assert.Equal(8, live.Server.Sessions.Count);
    }

    [Fact]
    public async Task AFullTableForgetsItsLeastRecentlyUsedConversation()
    {
        var clock = new ManualClock();
        await using var live = await LiveServer.StartAsync(o => o with { MaxSessions = 4, TimeProvider = clock });
        var sessions = live.Server.Sessions;
        var open = new List<string>();
        for (int i = 0; i < 4; i++)
        {
            open.Add(sessions.Create("en", $"10.0.1.{i}").Id);
            clock.Advance(TimeSpan.FromSeconds(10));
        }
        Assert.NotNull(sessions.Get(open[0]));                        // the oldest is used again: now the second is the least recent
        clock.Advance(TimeSpan.FromSeconds(10));

        var (status, id) = await Create(live.Client);                 // a new visitor, the table full
        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Equal(4, sessions.Count);
        Assert.Null(sessions.Get(open[1]));
        foreach (string kept in new[] { open[0], open[2], open[3], id! }) Assert.NotNull(sessions.Get(kept));
    }

    [Fact]
    public async Task UnderPressureIdleConversationsAreForgottenSooner()
    {
        var clock = new ManualClock();
        await using var live = await LiveServer.StartAsync(o => o with
        {
            MaxSessions = 8, TimeProvider = clock, SessionIdleTimeout = TimeSpan.FromMinutes(30),
            SessionIdleTimeoutUnderPressure = TimeSpan.FromMinutes(2),
        });
        var sessions = live.Server.Sessions;
        var few = Enumerable.Range(0, 3).Select(i => sessions.Create("en", $"10.0.2.{i}").Id).ToList();
        clock.Advance(TimeSpan.FromMinutes(5));
        sessions.Sweep();
        Assert.Equal(3, sessions.Count);                              // 3 of 8: no pressure, 30 minutes apply

        var more = Enumerable.Range(3, 3).Select(i => sessions.Create("en", $"10.0.2.{i}").Id).ToList();
        sessions.Sweep();                                             // 6 of 8: pressure, 2 minutes apply
        Assert.Equal(3, sessions.Count);
        Assert.All(few, id => Assert.Null(sessions.Get(id)));         // idle 5 minutes: forgotten now
        Assert.All(more, id => Assert.NotNull(sessions.Get(id)));     // fresh: kept
    }

    [Fact]
    public async Task A503ComesOnlyWhenEveryConversationIsWritingAndSaysWhenToRetry()
    {
        await using var live = await LiveServer.StartAsync(o => o with { MaxSessions = 3 });
        var sessions = live.Server.Sessions;
        var held = Enumerable.Range(0, 3).Select(i => sessions.Create("en", $"10.0.3.{i}")).ToList();
        foreach (var session in held) Assert.True(session.Busy.Wait(0, Ct));     // each is writing an answer

        var response = await live.Client.PostAsync("/api/sessions", null, Ct);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var retryAfter = response.Headers.RetryAfter?.Delta;
        Assert.Equal(TimeSpan.FromSeconds(Server.SessionStore.BusyRetryAfterSeconds), retryAfter);
        Assert.Contains("writing answers", JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!["error"]!["message"]!.GetValue<string>());

        held[1].Busy.Release();                                               // one answer ends
        Assert.Equal(HttpStatusCode.Created, (await Create(live.Client)).Status);
        Assert.Null(sessions.Get(held[1].Id));                                // it made room; the busy ones stayed
        Assert.NotNull(sessions.Get(held[0].Id));
        Assert.NotNull(sessions.Get(held[2].Id));
        held[0].Busy.Release();
        held[2].Busy.Release();
    }
}
