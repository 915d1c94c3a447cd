using XrayVL.Cli;

namespace XrayVL.Tests.Serving;

public class ServeCommandTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        int code = await App.RunAsync(args, stdout, stderr, new StringReader(""), TestContext.Current.CancellationToken);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task ServeNeedsAModelAndRefusesNonLoopbackAddresses()
    {
        var (code, _, err) = await Run("serve", "--model", "/nonexistent-model");
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("/nonexistent-model: model folder not found", err);

        // Checked before the model loads.
        (code, _, err) = await Run("serve", "--model", ServingModel.Loaded.Directory, "--urls", "http://0.0.0.0:7860");
        Assert.Equal(1, code);
        Assert.Contains("not a loopback address", err);

        (code, var help, _) = await Run("serve", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--api-key", help);
        Assert.Contains("127.0.0.1:7860", help);
    }

    [Fact]
    public async Task ServeLoadsTheModelFolderAnswersAndStopsWhenCancelled()
    {
        var stderr = new StringWriter();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var serving = App.RunAsync(["serve", "--model", ServingModel.Loaded.Directory, "--urls", "http://127.0.0.1:0", "--api-key", "cli-test-key"],
            new StringWriter(), TextWriter.Synchronized(stderr), new StringReader(""), stop.Token);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        string? address = null;
        while (address is null && DateTime.UtcNow < deadline && !serving.IsCompleted)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
            var match = System.Text.RegularExpressions.Regex.Match(stderr.ToString(), @"at (http://127\.0\.0\.1:\d+)");
            if (match.Success) address = match.Groups[1].Value;
        }
        Assert.True(address is not null, stderr.ToString());
        Assert.Contains(App.Disclaimer, stderr.ToString());
        Assert.Contains("API key required", stderr.ToString());
        using (var http = new HttpClient { BaseAddress = new Uri(address) })
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("/healthz", TestContext.Current.CancellationToken)).StatusCode);
            Assert.Equal(System.Net.HttpStatusCode.Unauthorized, (await http.GetAsync("/v1/models", TestContext.Current.CancellationToken)).StatusCode);
        }
        await stop.CancelAsync();
        Assert.Equal(0, await serving.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
    }
}
