using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using XrayVL.Benchmarks;
using XrayVL.IO;
using XrayVL.Kernels;

namespace XrayVL.Cli;

/// <summary>`xrayvl bench`: throughput of each pipeline stage and same-run ratios (KV cache vs recompute, bf16 vs fp32).</summary>
public static class BenchCommand
{
    public static Command Create(CliIO io)
    {
        var model = CommonOptions.Model();
        var image = new Option<string?>("--image") { Description = "Sample X-ray for decode and end-to-end figures (default: samples/iu-2_1.png)" };
        var json = CommonOptions.Json("Print the figures as JSON");
        var output = new Option<string?>("--out", "-o") { Description = "Also write the markdown table to this file" };
        var threads = new Option<int>("--threads") { Description = "Torch threads", DefaultValueFactory = _ => Math.Min(2, Environment.ProcessorCount) }.AtLeast(1);
        var repeats = new Option<int>("--repeats") { Description = "Measured repeats per figure (median reported)", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var languageModelOnly = new Option<bool>("--language-model-only")
        {
            Description = "Only decoding and prefill of a random ~20M-parameter decoder at context 256 (no model folder needed)",
        };
        var shape = new Option<string?>("--shape")
        {
            Description = $"Benchmark a published decoder shape with random weights (no model folder): {string.Join(", ", ShapeBenchmark.ShapeNames)}",
        }.AcceptOnlyFromAmong([.. ShapeBenchmark.ShapeNames]);
        var dtypes = CommonOptions.List("--dtype", "With --shape: dtypes to measure, each with its own peak RSS: fp32, bf16, int8, int4", ["fp32", "bf16", "int8"]);
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "With --shape: prompt length for prefill", DefaultValueFactory = _ => 128 };
        var decodeTokens = new Option<int>("--decode-tokens") { Description = "With --shape: tokens decoded per measurement", DefaultValueFactory = _ => 16 };
        var command = new Command("bench", "Measure throughput: image decode, vision encoder, prefill, decoding (KV cache vs recompute), fp32 vs bf16, seconds per report; or, with --shape, a published decoder shape per dtype against the memory-bandwidth roofline")
            { model, image, json, output, threads, repeats, languageModelOnly, shape, dtypes, promptTokens, decodeTokens };
        command.SetAction(parse =>
        {
            void Log(string step) => io.Err.WriteLine($"  measuring {step}...");
            if (parse.GetValue(shape) is { } shapeName)
            {
                var formats = CommonOptions.Values(parse, dtypes).Select(WeightFormats.Parse).Distinct().ToArray();
                var shapeReport = ShapeBenchmark.Run(shapeName, formats, new ShapeBenchmark.Options
                {
                    Threads = parse.GetValue(threads), Repeats = parse.GetValue(repeats),
                    PromptTokens = parse.GetValue(promptTokens), DecodeTokens = parse.GetValue(decodeTokens),
                }, Log);
                string table = shapeReport.ToMarkdown();
                if (parse.GetValue(output) is { } tablePath) AtomicFile.WriteAllText(tablePath, table);
                io.Out.WriteLine(parse.GetValue(json) ? JsonSerializer.Serialize(shapeReport, Json.Options) : table);
                return 0;
            }
            if (parse.GetValue(languageModelOnly))
            {
                var result = DecodeBenchmark.Run(threads: parse.GetValue(threads), repeats: parse.GetValue(repeats), log: Log);
                io.Out.WriteLine(parse.GetValue(json) ? JsonSerializer.Serialize(result, Json.Options) : result.ToString());
                return 0;
            }
            string sample = parse.GetValue(image) ?? RepositoryFiles.Sample();
            var loaded = ModelLocator.Load(parse.GetValue(model));
            var report = Bench.Run(loaded, sample, new Bench.Options { Threads = parse.GetValue(threads), Repeats = parse.GetValue(repeats) }, Log);
            string markdown = report.ToMarkdown();
            if (report.Warning is { } warning) io.Ui.MarkupLine($"[yellow]{Markup.Escape(warning)}[/]");
            if (parse.GetValue(output) is { } path) AtomicFile.WriteAllText(path, markdown);
            io.Out.WriteLine(parse.GetValue(json) ? JsonSerializer.Serialize(report, Json.Options) : markdown);
            return 0;
        });
        return command;
    }
}
