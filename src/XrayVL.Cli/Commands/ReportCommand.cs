using System.CommandLine;
using System.Text.Json.Nodes;
using XrayVL.Imaging;
using XrayVL.Inference;

namespace XrayVL.Cli;

/// <summary>`xrayvl report IMAGE...`: one report per image.</summary>
public static class ReportCommand
{
    public static Command Create(CliIO io)
    {
        var images = new Argument<string[]>("images") { Description = "X-ray files (PNG, JPEG or DICOM)", Arity = ArgumentArity.OneOrMore };
        var model = CommonOptions.Model();
        var dtype = CommonOptions.DType();
        var lang = CommonOptions.Language();
        var json = CommonOptions.Json("Print one JSON object per image: image, report, language, labels, evidence, boxes, finish_reason, model, seconds, disclaimer");
        var beams = new Option<int>("--beams") { Description = "Beam search width (1 = greedy; R2Gen uses 3)", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var maxTokens = CommonOptions.MaxTokens();
        var command = new Command("report", "Write a report for each chest X-ray") { images, model, dtype, lang, json, beams, maxTokens };
        command.SetAction(async (parse, cancel) =>
        {
            bool asJson = parse.GetValue(json);
            // Read every image first: a bad file fails in a second, before the model loads.
            var loadedImages = parse.GetValue(images)!.Select(path => (Path: path, Image: ImageFile.Load(path))).ToList();
            using var loaded = ModelLocator.LoadPipeline(io, parse.GetValue(model), parse.GetValue(dtype)!);
            var pipeline = loaded.Pipeline;
            string language = CommonOptions.LanguageOf(parse, lang, pipeline.DefaultLanguage);
            var reports = new ReportWriter(pipeline, loaded.Name);
            // The decoding every front end uses (the model family's repetition rules and stop tokens), with this command's width and length.
            var options = pipeline.Decoding() with { NumBeams = parse.GetValue(beams), MaxNewTokens = parse.GetValue(maxTokens) };
            foreach (var (path, image) in loadedImages)
            {
                var written = await reports.WriteAsync(image, language, options, cancel);
                string report = written.Report;
                if (asJson)
                {
                    var record = new JsonObject { ["image"] = path };
                    foreach (var (key, value) in written.ToJson()) record[key] = value?.DeepClone();
                    io.Out.WriteLine(record.ToJsonString(Json.Line));
                }
                else
                {
                    if (loadedImages.Count > 1) io.Out.WriteLine($"== {path} ==");
                    io.Out.WriteLine(report.Length > 0 ? report : "(the model wrote nothing)");
                    io.Out.WriteLine($"[{App.DisclaimerIn(language)}]");
                    if (loadedImages.Count > 1) io.Out.WriteLine();
                    io.Err.WriteLine($"({loaded.Name}, {written.Seconds:0.00} s)");
                }
            }
            return 0;
        });
        return command;
    }
}
