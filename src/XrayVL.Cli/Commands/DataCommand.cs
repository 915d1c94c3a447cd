using System.CommandLine;
using XrayVL.Data;
using XrayVL.Data.Sources;

namespace XrayVL.Cli;

/// <summary>`xrayvl data build|instructions`: turn public report sources into a manifest, and a manifest into conversations.</summary>
public static class DataCommand
{
    public static Command Create(CliIO io)
    {
        var command = new Command("data", "Build datasets: manifests from report sources, instruction sets from manifests");
        command.Subcommands.Add(Build(io));
        command.Subcommands.Add(InstructionsCommand(io));
        return command;
    }

    private static Command Build(CliIO io)
    {
        var source = new Option<string>("--source", "-s")
        {
            Description = "iu-csv | openi-xml | xrayglm | r2gen | mimic | covid | kermany | nih14 | jsonl", Required = true,
        }.AcceptOnlyFromAmong([.. XrayVL.Data.Sources.ReportSources.Names]);
        var input = new Option<string>("--input", "-i") { Description = "The source's file or folder (see docs/data.md)", Required = true };
        var images = new Option<string?>("--images") { Description = "Image folder (images not found there are counted and listed)" };
        var splitFile = new Option<string?>("--split-file") { Description = "Official split: R2Gen annotation.json, or MIMIC's split CSV" };
        var projections = new Option<string?>("--projections") { Description = "IU iu_projections.csv (default: beside the input)" };
        var language = new Option<string?>("--language") { Description = "Override the language (en, zh)" }.AcceptOnlyFromAmong("en", "zh");
        var seed = new Option<int>("--seed") { Description = "Seed of the patient-level split", DefaultValueFactory = _ => 42 };
        var keepMissing = new Option<bool>("--keep-missing-images") { Description = "Keep images that are not on disk" };
        var templated = new Option<bool>("--templated-reports")
        {
            Description = "Write reports from the labels of studies that have none (en and zh, as training's templated_reports), so `eval --tasks report` can score report writing on a label-only collection",
        };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (manifest.jsonl, summary.json)", Required = true };
        var command = new Command("build", "Build a manifest (JSONL of studies) from a report source")
            { source, input, images, splitFile, projections, language, seed, keepMissing, templated, output };
        command.SetAction(parse =>
        {
            var options = new SourceOptions
            {
                Input = parse.GetValue(input)!,
                Images = parse.GetValue(images),
                SplitFile = parse.GetValue(splitFile),
                Projections = parse.GetValue(projections),
                Language = parse.GetValue(language),
                KeepMissingImages = parse.GetValue(keepMissing),
            };
            var result = DatasetBuilder.Build(parse.GetValue(source)!, options, parse.GetValue(output)!, new BuildOptions { Seed = parse.GetValue(seed) });
            io.Out.WriteLine(result.ToText());
            if (parse.GetValue(templated))
            {
                var studies = Manifest.Read(result.ManifestPath);
                var completed = TemplatedReports.Complete(studies);
                Manifest.Write(result.ManifestPath, completed);
                io.Out.WriteLine($"reports written from labels for {completed.Count - studies.Count:N0} studies, each in English and Chinese: {completed.Count:N0} studies in {result.ManifestPath}");
            }
            return 0;
        });
        return command;
    }

    private static Command InstructionsCommand(CliIO io)
    {
        var manifest = new Argument<string>("manifest") { Description = "manifest.jsonl from `xrayvl data build`" };
        var output = new Option<string>("--out", "-o") { Description = "Output JSONL of conversations", Required = true };
        var seed = new Option<int>("--seed") { Description = "Seed for phrasings and question choice", DefaultValueFactory = _ => 0 };
        var languages = CommonOptions.List("--languages", "Conversation languages: en, zh", ["en", "zh"]);
        var tasks = CommonOptions.List("--tasks", $"Tasks: {string.Join(", ", Instructions.Tasks)}", [.. Instructions.Tasks]);
        var command = new Command("instructions", "Build training conversations (report, VQA, findings, grounding, multi-turn) from a manifest")
            { manifest, output, seed, languages, tasks };
        command.SetAction(parse =>
        {
            string[] taskNames = CommonOptions.Values(parse, tasks), languageNames = CommonOptions.Values(parse, languages);
            var unknown = taskNames.Except(Instructions.Tasks).ToList();
            if (unknown.Count > 0) throw new XrayVLException($"--tasks: unknown task(s) {string.Join(", ", unknown)} (tasks: {string.Join(", ", Instructions.Tasks)})");
            var unknownLanguages = languageNames.Except(["en", "zh"]).ToList();
            if (unknownLanguages.Count > 0) throw new XrayVLException($"--languages: unknown language(s) {string.Join(", ", unknownLanguages)} (en, zh)");
            var options = new InstructionOptions { Seed = parse.GetValue(seed), Languages = languageNames, Tasks = taskNames };
            var summary = Instructions.BuildFile(parse.GetValue(manifest)!, parse.GetValue(output)!, options);
            io.Out.WriteLine(summary.ToTable());
            return 0;
        });
        return command;
    }
}
