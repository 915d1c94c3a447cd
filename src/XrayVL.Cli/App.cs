using System.CommandLine;
using System.Text.RegularExpressions;
using Spectre.Console;

namespace XrayVL.Cli;

/// <summary>Where a command reads and writes: the real console in `xrayvl`, string writers in tests.</summary>
public sealed record CliIO(TextWriter Out, TextWriter Err, TextReader In)
{
    /// <summary>Ctrl-C as a command that wants to handle it itself sees it (chat: stop the answer, not the program).</summary>
    public Interrupts Interrupts { get; init; } = new();

    /// <summary>Spectre console over <see cref="Err"/>: tables, progress bars and notices go to stderr so stdout stays pipeable.</summary>
    public IAnsiConsole Ui { get; } = AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Err),
        Ansi = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? AnsiSupport.Detect : AnsiSupport.No,
        ColorSystem = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        Interactive = ReferenceEquals(Err, Console.Error) && !Console.IsErrorRedirected ? InteractionSupport.Detect : InteractionSupport.No,
    });
}

/// <summary>
/// Ctrl-C for a command that handles it: the handler registered last is asked first and returns true when it dealt
/// with the interrupt (the process goes on). On the real console Console.CancelKeyPress raises it; tests raise it.
/// </summary>
public sealed class Interrupts
{
    private readonly List<Func<bool>> handlers = [];

    public IDisposable Handle(Func<bool> handler)
    {
        lock (handlers) handlers.Add(handler);
        return new Registration(() => { lock (handlers) handlers.Remove(handler); });
    }

    /// <summary>True when a handler dealt with the interrupt.</summary>
    public bool Raise()
    {
        Func<bool>[] current;
        lock (handlers) current = [.. handlers];
        for (int i = current.Length - 1; i >= 0; i--)
            if (current[i]()) return true;
        return false;
    }

    private sealed class Registration(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }
}

public static class App
{
    /// <summary>Commands that handle Ctrl-C themselves through <see cref="CliIO.Interrupts"/>.</summary>
    private static readonly HashSet<string> HandlesInterrupts = ["chat"];

    public static readonly string Disclaimer = Constants.Disclaimer("en");

    /// <summary>The disclaimer in the language of the output it accompanies ("en" or "zh").</summary>
    public static string DisclaimerIn(string language) => Constants.Disclaimer(language);

    /// <summary>The program's name in usage lines and hints. A RootCommand would take the name of the assembly that
    /// runs (XrayVL.Cli, or a test host), so the root is a plain command with the help and version options a RootCommand
    /// adds.</summary>
    public const string ProgramName = "xrayvl";

    public static Command BuildRoot(CliIO io)
    {
        var root = new Command(ProgramName, "XrayVL: chest X-ray vision-language models — build data, train, evaluate, report, chat, serve.")
        {
            new System.CommandLine.Help.HelpOption(), new VersionOption(),
        };
        foreach (var command in Commands.All(io)) root.Subcommands.Add(command);
        return root;
    }

    /// <summary>"xrayvl data build" for the command a parse reached.</summary>
    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result is not null; result = result.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, result.Command.Name);
        return string.Join(' ', names);
    }

    /// <summary>A parser message in a user's words: on one line, and with the kind of value a flag takes instead of a
    /// .NET type name ("Cannot parse argument 'x' for option '--beams' as expected type 'System.Int32'").</summary>
    internal static string UserMessage(string message)
    {
        message = Regex.Replace(message, @"\s*\n\s*", " ");
        static string Kind(string type) => type.TrimEnd('?') switch
        {
            "System.Int32" or "System.Int64" or "System.Nullable`1[System.Int32]" or "System.Nullable`1[System.Int64]" => "a whole number",
            "System.Double" or "System.Single" or "System.Nullable`1[System.Double]" or "System.Nullable`1[System.Single]" => "a number",
            "System.Boolean" => "true or false",
            _ => "another kind of value",
        };
        return Regex.Replace(message, @"Cannot parse argument '(?<value>.*)' for (?:option|argument) '(?<name>[^']*)' as expected type '(?<type>[^']*)'\.?",
            m => $"{m.Groups["name"].Value} takes {Kind(m.Groups["type"].Value)}, not '{m.Groups["value"].Value}'");
    }

    /// <summary>Parses and runs a command. User errors print one line and return 1; nothing prints a stack trace.</summary>
    /// <param name="interrupts">Where Ctrl-C arrives for commands that handle it (tests raise it; by default the console's).</param>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, TextReader stdin, CancellationToken cancel = default,
        Interrupts? interrupts = null)
    {
        var io = new CliIO(stdout, stderr, stdin) { Interrupts = interrupts ?? new Interrupts() };
        if (args.Length == 0) args = ["--help"];      // a bare `xrayvl` shows what it can do
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
                    stderr.WriteLine($"error: {UserMessage(error.Message)} (see `{command} --help`)");
                return 1;
            }
            if (HandlesInterrupts.Contains(parse.CommandResult.Command.Name))
            {
                // The command decides what Ctrl-C means; the parser must not also turn it into cancelling everything.
                config.ProcessTerminationTimeout = null;
                if (ReferenceEquals(stdin, Console.In))
                {
                    ConsoleCancelEventHandler handler = (_, e) => e.Cancel = io.Interrupts.Raise();
                    Console.CancelKeyPress += handler;
                    try { return await parse.InvokeAsync(config, cancel); }
                    finally { Console.CancelKeyPress -= handler; }
                }
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
