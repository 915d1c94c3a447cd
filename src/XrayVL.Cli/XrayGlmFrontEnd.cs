using System.Diagnostics;
using System.CommandLine;
using System.Text.Json.Nodes;
using TorchSharp;
using XrayVL.Imaging;
using XrayVL.Inference;
using XrayVL.IO;

namespace XrayVL.Cli;

/// <summary>
/// `report` and `chat` for a model folder written by `xrayvl import xrayglm` (config.json model_type "visualglm"): the
/// same command lines, spoken in XrayGLM's prompt format (Chinese unless --lang says otherwise, as XrayGLM's CLI).
/// </summary>
public static class XrayGlmFrontEnd
{
    /// <summary>The model folder the command would use, when it holds a VisualGLM model; else null.</summary>
    public static string? Resolve(string? modelOption)
    {
        string dir = ModelLocator.Resolve(modelOption);
        return VisualGlmFolder.IsVisualGlm(dir) ? dir : null;
    }

    /// <summary>--lang as given; "zh" when the user did not give it (XrayGLM answers in Chinese).</summary>
    public static string Language(ParseResult parse, Option<string> lang) =>
        parse.GetResult(lang) is { Implicit: false } ? parse.GetValue(lang)! : "zh";

    public static XrayGlmChat Load(string dir, string dtype) => new(VisualGlmFolder.Load(dir, dtype switch
    {
        "fp32" => torch.ScalarType.Float32,
        "bf16" => torch.ScalarType.BFloat16,
        _ => throw new XrayVLException($"--dtype {dtype} is not available for VisualGLM models (fp32 or bf16)"),
    }));

    public static async Task<int> ReportAsync(CliIO io, string dir, string dtype, string language, bool asJson,
        IReadOnlyList<(string Path, GrayImage Image)> images, int maxTokens, CancellationToken cancel)
    {
        var chat = Load(dir, dtype);
        using (chat.Loaded)
        {
            var options = XrayGlmChat.Decoding(maxTokens);
            foreach (var (path, image) in images)
            {
                var clock = Stopwatch.StartNew();
                var reason = FinishReason.Stop;
                var text = new System.Text.StringBuilder();
                await foreach (var piece in chat.AnswerAsync([], XrayGlmChat.ReportRequest(language), image, options, r => reason = r, cancel))
                    text.Append(piece);
                string report = text.ToString().Trim();
                var written = new WrittenReport(report, language, ReportFindings.Read(report, language), reason, chat.Name, clock.Elapsed.TotalSeconds);
                if (asJson)
                {
                    var record = new JsonObject { ["image"] = path };
                    foreach (var (key, value) in written.ToJson()) record[key] = value?.DeepClone();
                    io.Out.WriteLine(record.ToJsonString(Json.Line));
                    continue;
                }
                if (images.Count > 1) io.Out.WriteLine($"== {path} ==");
                io.Out.WriteLine(report.Length > 0 ? report : "(the model wrote nothing)");
                io.Out.WriteLine($"[{App.DisclaimerIn(language)}]");
                if (images.Count > 1) io.Out.WriteLine();
                io.Err.WriteLine($"({chat.Name}, {written.Seconds:0.00} s)");
            }
        }
        return 0;
    }

    private const string Help = "Commands: /image PATH (a new X-ray starts a new conversation, as in XrayGLM), /clear, /exit";

    public static async Task<int> ChatAsync(CliIO io, string dir, string dtype, string language, GrayImage? firstImage,
        int maxTokens, double temperature, int? seed, CancellationToken cancel)
    {
        var chat = Load(dir, dtype);
        using (chat.Loaded)
        {
            var options = XrayGlmChat.Decoding(maxTokens, temperature, seed);
            var history = new List<(string Question, string Answer)>();
            GrayImage? image = firstImage;
            io.Err.WriteLine($"XrayVL chat — model {chat.Name} (XrayGLM prompt format). {App.DisclaimerIn(language)}");
            io.Err.WriteLine(Help);
            while (true)
            {
                cancel.ThrowIfCancellationRequested();
                io.Out.Write("you> ");
                io.Out.Flush();
                string? line = await Task.Run(io.In.ReadLine, CancellationToken.None).WaitAsync(cancel);
                if (line is null) break;
                line = line.Trim();
                if (line.Length == 0) continue;
                if (line is "/exit" or "/quit") break;
                if (line == "/clear")
                {
                    history.Clear();
                    io.Err.WriteLine("(new conversation)");
                    continue;
                }
                if (line.StartsWith("/image ", StringComparison.Ordinal))
                {
                    try
                    {
                        image = ImageFile.Load(line[7..].Trim());
                        history.Clear();
                        io.Err.WriteLine($"(image: {line[7..].Trim()}; new conversation)");
                    }
                    catch (XrayVLException e) { io.Err.WriteLine($"error: {e.Message}"); }
                    continue;
                }
                if (line.StartsWith('/'))
                {
                    io.Err.WriteLine(Help);
                    continue;
                }
                io.Out.Write("xrayvl> ");
                var answer = new System.Text.StringBuilder();
                try
                {
                    await foreach (var piece in chat.AnswerAsync(history, line, image, options, null, cancel))
                    {
                        answer.Append(piece);
                        io.Out.Write(piece);
                        io.Out.Flush();
                    }
                    history.Add((line, answer.ToString()));
                }
                catch (XrayVLException e)
                {
                    io.Err.WriteLine($"error: {e.Message}");
                }
                io.Out.WriteLine();
            }
        }
        return 0;
    }
}
