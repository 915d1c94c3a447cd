using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using XrayVL.Inference;
using XrayVL.Serving;

namespace XrayVL.Tests.Serving;

/// <summary>
/// A bounded load test on loopback: 60 chat completions at once (half streamed), each with its own image and question.
/// Every answer must come back 200 and equal the answer to the same request run alone — so no answer reached the wrong
/// client, and batching changed nothing — within a fixed time.
/// </summary>
public class LoadTests
{
    private const int Requests = 60;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task SixtyConcurrentChatsAllSucceedAndEachGetsItsOwnAnswer()
    {
        var work = Enumerable.Range(0, Requests)
            .Select(i => (Question: $"Question {i}: what is seen?", Image: ServingModel.PatternPng(1000 + i % 20), Stream: i % 2 == 1))
            .ToList();

        // Alone: the in-process client with one row, one request after another.
        var expected = new List<string>();
        using (var alone = XrayChatClient.Create(ServingModel.Loaded, new BatchSchedulerOptions { MaxBatch = 1 }))
            foreach (var (question, image, _) in work)
                expected.Add((await alone.GetResponseAsync(
                    [new ChatMessage(ChatRole.User, [new TextContent(question), new DataContent(image, "image/png")])],
                    new ChatOptions { MaxOutputTokens = 8 }, Ct)).Text);
        Assert.True(expected.Distinct().Count() > Requests / 3, "answers must differ enough for a mix-up to show");

        await using var live = await LiveServer.StartAsync(o => o with { MaxBatch = 8, MaxQueue = 128 });
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(90));
        var clock = Stopwatch.StartNew();
        var results = await Task.WhenAll(work.Select(async w =>
        {
            var response = await live.Client.PostAsync("/v1/chat/completions",
                LiveServer.Json(LiveServer.ChatRequest(w.Question, w.Image, maxTokens: 8, stream: w.Stream)), timeout.Token);
            string body = await response.Content.ReadAsStringAsync(timeout.Token);
            if (response.StatusCode != HttpStatusCode.OK) return (response.StatusCode, body);
            if (!w.Stream) return (response.StatusCode, JsonNode.Parse(body)!["choices"]![0]!["message"]!["content"]!.GetValue<string>());
            var events = LiveServer.SseEvents(body);
            Assert.Equal("[DONE]", events[^1]);
            return (response.StatusCode, string.Concat(events[..^1].Select(e => JsonNode.Parse(e)!["choices"]![0]!["delta"]!["content"]?.GetValue<string>() ?? "")));
        }));
        clock.Stop();

        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(expected, results.Select(r => r.Item2));
        var stats = live.Server.Pipeline.Stats;
        Assert.Equal(Requests, stats.Completed);
        Assert.Equal(0, stats.Failed + stats.Cancelled);
        Assert.InRange(stats.LargestBatch, 2, 8);
        Assert.True(stats.Steps < Requests * 9, $"{stats.Steps} steps for {Requests} answers of at most 8 tokens: no batching?");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(90));
    }
}
