using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using XrayVL.IO;

namespace XrayVL.Cli;

/// <summary>`xrayvl info --model DIR`: the architecture, parameter counts and files of a checkpoint.</summary>
public static class InfoCommand
{
    public static Command Create(CliIO io)
    {
        var model = CommonOptions.Model();
        var json = CommonOptions.Json();
        var command = new Command("info", "Show a model's architecture and parameter counts") { model, json };
        command.SetAction(parse =>
        {
            var loaded = ModelLocator.Load(parse.GetValue(model));
            var c = loaded.Config;
            var m = loaded.Model;
            long Count(TorchSharp.torch.nn.Module module) => module.parameters().Sum(p => p.numel());
            // The finding hint's classifier and embedding count with the projector: they make the image's positions too.
            long vision = Count(m.VisionTower), projector = Count(m.Projector) + (m.FindingHint is { } h ? Count(h) : 0),
                 language = Count(m.LanguageModel);
            long bytesOnDisk = Directory.EnumerateFiles(loaded.Directory).Sum(f => new FileInfo(f).Length);
            var v = c.VisionConfig;
            var t = c.TextConfig;
            string visionText = v.IsVit
                ? $"ViT ({v.ModelType}): image {v.ImageSize}px × {v.NumChannels} ch, patch {v.PatchSize}, hidden {v.HiddenSize}, {v.NumHiddenLayers} layers, {v.NumAttentionHeads} heads"
                : $"ResNet: image {v.ImageSize}px × {v.NumChannels} ch, {v.Block} blocks [{string.Join(",", v.Layers)}], width {v.Width}";
            string projectorText = $"{c.ProjectorType}: {m.VisionTower.OutputDim} → {t.HiddenSize}, {m.TokensPerImage} tokens per image " +
                $"(feature layer {c.VisionFeatureLayer}, {c.VisionFeatureSelectStrategy})" +
                (c.FindingHint ? "; the last is the finding hint (14 classifier decisions → embedding)" : "");
            string languageText = $"{t.ModelType}: hidden {t.HiddenSize}, {t.NumHiddenLayers} layers, {t.NumAttentionHeads} heads / " +
                $"{t.NumKeyValueHeads} kv heads, SwiGLU {t.IntermediateSize}, vocab {t.VocabSize}, context {t.MaxPositionEmbeddings}" +
                (t.TieWordEmbeddings ? ", tied embeddings" : "");
            if (parse.GetValue(json))
            {
                var record = new
                {
                    model = loaded.Name, directory = loaded.Directory,
                    vision = visionText, projector = projectorText, language_model = languageText,
                    parameters = new { vision, projector, language_model = language, total = vision + projector + language },
                    tokenizer = new { kind = loaded.Tokenizer.Kind, vocab_size = loaded.Tokenizer.VocabSize },
                    bytes_on_disk = bytesOnDisk,
                };
                io.Out.WriteLine(JsonSerializer.Serialize(record, Json.Options));
                return 0;
            }
            var table = new Table().AddColumns("part", "architecture", "parameters");
            table.AddRow("vision encoder", Markup.Escape(visionText), $"{vision:N0}");
            table.AddRow("projector", Markup.Escape(projectorText), $"{projector:N0}");
            table.AddRow("language model", Markup.Escape(languageText), $"{language:N0}");
            table.AddRow("total", "", $"{vision + projector + language:N0}");
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(io.Out), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
            console.Profile.Width = 160;
            console.WriteLine($"model {loaded.Name} ({loaded.Directory}), {bytesOnDisk / 1e6:0.0} MB on disk");
            console.WriteLine($"tokenizer: {loaded.Tokenizer.Kind}, {loaded.Tokenizer.VocabSize} tokens; images {loaded.Preprocess.ImageSize}px");
            console.Write(table);
            return 0;
        });
        return command;
    }
}
