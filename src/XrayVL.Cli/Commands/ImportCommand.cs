using System.CommandLine;
using Spectre.Console;
using XrayVL.IO;
using static TorchSharp.torch;

namespace XrayVL.Cli;

/// <summary>
/// `xrayvl import xraygpt|minigpt-med --config their.yaml | --eva FILE [--qformer FILE] --llama DIR --ckpt FILE --out DIR`:
/// a seed system's released checkpoint files as an XrayVL model folder.
/// </summary>
public static class ImportCommand
{
    public static Command Create(CliIO io)
    {
        var command = new Command("import", "Convert a seed system's released checkpoint files into an XrayVL model folder");
        command.Subcommands.Add(Family(io, "xraygpt", "xraygpt", "XrayGPT (MiniGPT-4: EVA ViT-g, BLIP-2 Q-Former, Vicuna)"));
        command.Subcommands.Add(Family(io, "minigpt-med", "minigpt_med", "MiniGPT-Med (MiniGPT-v2: EVA ViT-g at 448 px, LLaMA-2-chat + LoRA)"));
        command.Subcommands.Add(ImportXrayGlmCommand.Create(io));
        return command;
    }

    private static Command Family(CliIO io, string name, string family, string description)
    {
        var spec = SeedImport.Spec(family);
        var config = new Option<string?>("--config") { Description = "The seed's eval yaml (model: arch, llama_model, ckpt, ...); options below override it" };
        var eva = new Option<string?>("--eva") { Description = "EVA ViT-g weights (eva_vit_g.pth)" };
        var qformer = new Option<string?>("--qformer") { Description = "BLIP-2 Q-Former file (blip2_pretrained_flant5xxl.pth)" };
        var llama = new Option<string?>("--llama") { Description = "Hugging Face folder of the language model (config.json, weights, tokenizer.model)" };
        var ckpt = new Option<string?>("--ckpt") { Description = "The stage checkpoint ({\"model\": ...} with llama_proj" + (spec.HasLora ? " and LoRA" : "") + " weights)" };
        var imageSize = new Option<int?>("--image-size") { Description = $"Input size in pixels (default {spec.ImageSize}); EVA's positions are resized to it" };
        var evaHeads = new Option<int?>("--eva-heads") { Description = "EVA attention heads when EVA is not ViT-g's 1408 wide (default width / 88)" };
        var qformerHeads = new Option<int?>("--qformer-heads") { Description = "Q-Former attention heads when it is not BERT-base's 768 wide (default width / 64)" };
        var dtype = new Option<string>("--dtype")
        {
            Description = "Stored dtype: keep (each file's own; LoRA-merged layers float32), fp32, bf16 or fp16",
            DefaultValueFactory = _ => "keep",
        }.AcceptOnlyFromAmong("keep", "fp32", "bf16", "fp16");
        var output = new Option<string>("--out") { Description = "Model folder to write (replaced if it exists)", Required = true };
        var command = new Command(name, $"Import {description}") { config, eva, llama, ckpt, imageSize, evaHeads, dtype, output };
        if (spec.HasQFormer)
        {
            command.Options.Add(qformer);
            command.Options.Add(qformerHeads);
        }
        command.SetAction(async (parse, cancel) =>
        {
            ScalarType? stored = parse.GetValue(dtype) switch
            {
                "fp32" => ScalarType.Float32,
                "bf16" => ScalarType.BFloat16,
                "fp16" => ScalarType.Float16,
                _ => null,
            };
            var paths = new SeedImport.SeedPaths(parse.GetValue(eva), spec.HasQFormer ? parse.GetValue(qformer) : null, parse.GetValue(llama),
                parse.GetValue(ckpt), parse.GetValue(imageSize), parse.GetValue(evaHeads), spec.HasQFormer ? parse.GetValue(qformerHeads) : null, stored);
            SeedImportRequest request = parse.GetValue(config) is { } yaml
                ? SeedImport.FromYaml(yaml, family, paths)
                : new SeedImportRequest
                {
                    Family = family,
                    Eva = paths.Eva ?? throw new XrayVLException($"import {name}: give --config their.yaml, or --eva FILE"),
                    QFormer = paths.QFormer ?? (spec.HasQFormer ? throw new XrayVLException($"import {name}: give --config their.yaml, or --qformer FILE") : null),
                    Llama = paths.Llama ?? throw new XrayVLException($"import {name}: give --config their.yaml, or --llama DIR"),
                    Checkpoint = paths.Checkpoint ?? throw new XrayVLException($"import {name}: give --config their.yaml, or --ckpt FILE"),
                    ImageSize = paths.ImageSize,
                    EvaHeads = paths.EvaHeads,
                    QFormerHeads = paths.QFormerHeads,
                    DType = stored,
                };
            string outDir = parse.GetValue(output)!;
            SeedImport.ImportResult result = null!;
            await io.Ui.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("tensors", maxValue: 1);
                    var progress = new Progress<(int Done, int Total)>(p =>
                    {
                        task.MaxValue = Math.Max(1, p.Total);
                        task.Value = p.Done;
                    });
                    result = await Task.Run(() => SeedImport.Import(request, outDir, progress), cancel);
                    task.Value = task.MaxValue;
                });
            if (result.Ignored.Count > 0)
                io.Err.WriteLine($"ignored {result.Ignored.Count} stored tensors the {family} model does not use either " +
                                 $"(e.g. {string.Join(", ", result.Ignored.Take(3))})");
            io.Out.WriteLine($"wrote {result.Directory}: {result.Tensors} tensors, {result.Bytes / 1e6:F1} MB, prompt format {spec.Format.Name}");
            return 0;
        });
        return command;
    }
}
