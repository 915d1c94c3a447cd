using System.CommandLine;
using System.Text;
using XrayVL.Data;
using XrayVL.Data.Labeler;

namespace XrayVL.Cli;

/// <summary>`xrayvl label [FILE|-]`: the 14 CheXpert observations of each report line.</summary>
public static class LabelCommand
{
    public static Command Create(CliIO io)
    {
        var file = new Argument<string>("file") { Description = "Reports, one per line ('-' or nothing: standard input)", DefaultValueFactory = _ => "-" };
        var lang = new Option<string>("--lang", "-l") { Description = "en, zh or auto (by script)", DefaultValueFactory = _ => "auto" }
            .AcceptOnlyFromAmong("en", "zh", "auto");
        var json = CommonOptions.Json("One JSON object per line: {\"labels\": {name: 1|0|-1|null}}");
        var command = new Command("label", "Label reports with the 14 CheXpert observations (positive 1, negative 0, uncertain -1)") { file, lang, json };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(file)!;
            if (path != "-" && !File.Exists(path)) throw new XrayVLException($"{path}: file not found");
            using var reportFile = path == "-" ? null : new StreamReader(path, Encoding.UTF8);   // standard input stays open
            Labeler.LabelLines(reportFile ?? io.In, io.Out, path == "-" ? "(stdin)" : path, parse.GetValue(lang)!, parse.GetValue(json));
            return 0;
        });
        return command;
    }
}
