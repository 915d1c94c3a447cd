using System.CommandLine;
using Spectre.Console;

namespace XrayVL.Cli;

/// <summary>Where a command reads and writes: the real console in `xrayvl`, string writers in tests.</summary>
public sealed record CliIO(TextWriter Out, TextWriter Err, TextReader In)
{
    /// <summary>Spectre console over <see cref="Err"/>: tables, progress bars and notices go to stderr so stdout stays pipeable.</summary>
    public IAnsiConsole Ui { get; } = AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Err),
        Ansi = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? AnsiSupport.Detect : AnsiSupport.No,
        ColorSystem = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        Interactive = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? InteractionSupport.Detect : InteractionSupport.No,
    });
}

public static class App
{
    public static readonly string Disclaimer = Constants.Disclaimer("en");

    /// <summary>The disclaimer in the language of the output it accompanies ("en" or "zh").</summary>
    public static string DisclaimerIn(string language) => Constants.Disclaimer(language);

    public static RootCommand BuildRoot(CliIO io)
    {
        var root = new RootCommand("XrayVL: chest X-ray vision-language models — build data, train, evaluate, report, chat, serve.");
        foreach (var command in Commands.All(io)) root.Subcommands.Add(command);
        return root;
    }

    /// <summary>"xrayvl data build" for the command a parse reached.</summary>
    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result is { Command: not RootCommand }; result = result.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, result.Command.Name);
        return string.Join(' ', ["xrayvl", .. names]);
    }

    /// <summary>Parses and runs a command. User errors print one line and return 1; nothing prints a stack trace.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, TextReader stdin, CancellationToken cancel = default)
    {
        var io = new CliIO(stdout, stderr, stdin);
        var root = BuildRoot(io);
        // Ctrl-C cancels the command's token; training then saves a checkpoint, so allow it time before the process is ended.
        var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = TimeSpan.FromMinutes(2) };
        try
        {
            var parse = root.Parse(args);
            // A mistyped command line: one line per error and where the usage is, instead of the whole help page.
            // (With no arguments at all the root's help is what a user wants.)
            if (parse.Errors.Count > 0 && args.Length > 0)
            {
                string command = CommandPath(parse);
                foreach (var error in parse.Errors)
                    stderr.WriteLine($"error: {System.Text.RegularExpressions.Regex.Replace(error.Message, @"\s*\n\s*", " ")} (see `{command} --help`)");
                return 1;
            }
            return await parse.InvokeAsync(config, cancel);
        }
        catch (XrayVLException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException)
        {
            // Most often libtorch failing to load: the innermost message names the missing library or symbol version.
            var inner = e;
            while (inner.InnerException != null) inner = inner.InnerException;
            stderr.WriteLine($"error: the native torch library could not be loaded: {inner.Message}");
            return 2;
        }
        catch (Exception e)
        {
            // A bug, not a user error (XrayVLBugException or anything unforeseen): still one line, with the exception
            // type to report it by and how to get the details.
            stderr.WriteLine($"internal error ({e.GetType().Name}): {e.Message}");
            stderr.WriteLine("this is a bug in XrayVL, not in your input: please report it with the command line you ran " +
                             "(XRAYVL_DEBUG=1 prints the stack trace)");
            if (Environment.GetEnvironmentVariable("XRAYVL_DEBUG") == "1") stderr.WriteLine(e);
            return 2;
        }
    }
}
