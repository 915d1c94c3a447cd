using System.CommandLine;

namespace XrayVL.Cli;

/// <summary>The command list, in the order `xrayvl --help` shows them (one file per command in Commands/).</summary>
public static class Commands
{
    public static IEnumerable<Command> All(CliIO io) =>
    [
        ReportCommand.Create(io),
        ChatCommand.Create(io),
        ServeCommand.Create(io),
        TrainCommand.Create(io),
        InfoCommand.Create(io),
        ExportCommand.Create(io),
        ImportCommand.Create(io),
        LabelCommand.Create(io),
        DataCommand.Create(io),
        ScoreCommand.Create(io),
        EvalCommand.Create(io),
        BenchCommand.Create(io),
    ];
}
