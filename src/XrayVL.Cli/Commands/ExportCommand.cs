using System.CommandLine;
using XrayVL.IO;

namespace XrayVL.Cli;

/// <summary>`xrayvl export --format hf-llava MODEL OUT`: a folder transformers' LlavaForConditionalGeneration loads.</summary>
public static class ExportCommand
{
    public static Command Create(CliIO io)
    {
        var format = new Option<string>("--format")
        {
            Description = "Output format: hf-llava (transformers LlavaForConditionalGeneration, 4.40+)",
            DefaultValueFactory = _ => "hf-llava",
        }.AcceptOnlyFromAmong("hf-llava");
        var model = new Argument<string>("model") { Description = "Model folder to export" };
        var output = new Argument<string>("out") { Description = "Folder to write (replaced if it exists)" };
        var command = new Command("export", "Write a model in another system's format") { format, model, output };
        command.SetAction(parse =>
        {
            string source = ModelLocator.Resolve(parse.GetValue(model));
            string target = parse.GetValue(output)!;
            if (Path.GetFullPath(target).TrimEnd('/') == Path.GetFullPath(source).TrimEnd('/'))
                throw new XrayVLException($"{target}: the output folder is the model folder itself; choose another");
            var loaded = Checkpoint.Load(source);
            using (loaded.Model)
            {
                HfExport.WriteLlava(loaded.Model, target, loaded.Directory, loaded.Preprocess);
            }
            io.Out.WriteLine($"wrote {target} (transformers LlavaForConditionalGeneration, {HfConfigsVersion} key layout)");
            return 0;
        });
        return command;
    }

    private const string HfConfigsVersion = XrayVL.Modeling.HfConfigs.TransformersVersion;
}
