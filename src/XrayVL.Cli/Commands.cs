using System.CommandLine;

namespace XrayVL.Cli;

/// <summary>The command list, in the order `xrayvl --help` shows them.</summary>
public static class Commands
{
    public static IEnumerable<Command> All(CliIO io) =>
    [
        ServeCommand.Create(io),
    ];
}
