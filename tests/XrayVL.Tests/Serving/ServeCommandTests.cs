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
        var (code, _, err) = await Run("serve");
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("--model", err);

        (code, _, err) = await Run("serve", "--model", "/nonexistent-model", "--urls", "http://0.0.0.0:7860");
        Assert.Equal(1, code);
        Assert.Contains("not a loopback address", err);

        (code, _, err) = await Run("serve", "--model", "/nonexistent-model");
        Assert.Equal(1, code);
        Assert.Contains("/nonexistent-model: model folder not found", err);

        (code, var help, _) = await Run("serve", "--help");
        Assert.Equal(0, code);
        Assert.Contains("--api-key", help);
        Assert.Contains("127.0.0.1:7860", help);
    }
}
