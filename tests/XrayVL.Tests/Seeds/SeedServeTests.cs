using System.Net;
using System.Text.Json.Nodes;
using XrayVL.Tests.Serving;

namespace XrayVL.Tests.Seeds;

/// <summary>`xrayvl serve` on imported seed models: the OpenAI-compatible chat and /api/report answer in the seeds' formats.</summary>
public sealed class SeedServeTests(SeedFixture seeds) : IClassFixture<SeedFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData("xraygpt")]
    [InlineData("minigpt_med")]
    public async Task ChatCompletionAndReportAnswer(string seed)
    {
        await using var live = await LiveServer.StartAsync(o => o with { Model = null, ModelDir = seeds.Folder(seed) });
        byte[] png = File.ReadAllBytes(SeedFixture.Seed(seed, "test_image.png"));
        var chat = await live.Client.PostAsync("/v1/chat/completions", LiveServer.Json(LiveServer.ChatRequest("[refer] the nodule", png, maxTokens: 5)), Ct);
        Assert.Equal(HttpStatusCode.OK, chat.StatusCode);
        var body = JsonNode.Parse(await chat.Content.ReadAsStringAsync(Ct))!;
        Assert.NotNull(body["choices"]![0]!["message"]!["content"]);
        var report = await live.Client.PostAsync("/api/report", LiveServer.ImageForm(png, "xray.png", ("max_tokens", "5")), Ct);
        Assert.Equal(HttpStatusCode.OK, report.StatusCode);
        Assert.DoesNotContain("###", JsonNode.Parse(await report.Content.ReadAsStringAsync(Ct))!["report"]!.GetValue<string>());
    }
}
