using XrayVL.Cli;

namespace XrayVL.Tests.Cli;

/// <summary>Runs `xrayvl` in-process with captured output.</summary>
public static class CliRunner
{
    public sealed record Result(int ExitCode, string Out, string Err);

    public static Result RunWithInput(string stdin, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = App.RunAsync(args, output, error, new StringReader(stdin)).GetAwaiter().GetResult();
        return new Result(code, output.ToString(), error.ToString());
    }

    public static Result Run(params string[] args) => RunWithInput("", args);
}
