using System.CommandLine;
using Spectre.Console;
using XrayVL.IO;

namespace XrayVL.Cli;

/// <summary>`xrayvl import xrayglm`: an XrayGLM / VisualGLM-6B SwissArmyTransformer checkpoint → an XrayVL model folder.</summary>
public static class ImportXrayGlmCommand
{
    /// <summary>`import xrayglm CHECKPOINT_DIR OUT [--base VISUALGLM_DIR] [--lora merge|adapter] [--tokenizer FILE] [--num-image-tokens N]`.</summary>
    public static Command Create(CliIO io)
    {
        var checkpoint = new Argument<string>("checkpoint") { Description = "XrayGLM SAT checkpoint folder (latest, model_config.json, <iteration>/mp_rank_00_model_states.pt)" };
        var output = new Argument<string>("out") { Description = "Model folder to write (replaced if it exists)" };
        var baseDir = new Option<string?>("--base") { Description = "VisualGLM-6B SAT folder: fills in weights the checkpoint lacks; its ice_text.model is used when the checkpoint has none" };
        var lora = new Option<string>("--lora")
        {
            Description = "merge: fold XrayGLM's LoRA into the weights; adapter: keep base weights and write adapter/ (PEFT layout)",
            DefaultValueFactory = _ => "merge",
        }.AcceptOnlyFromAmong("merge", "adapter");
        var tokenizer = new Option<string?>("--tokenizer") { Description = "ice_text.model (THUDM/chatglm-6b); default: the one in the checkpoint or --base folder" };
        var imageTokens = new Option<int?>("--num-image-tokens") { Description = "Tokenizer id offset (tokenizer_config.json's num_image_tokens; 0 for the 130,528-token release)" };
        var command = new Command("xrayglm", "XrayGLM / VisualGLM-6B (SwissArmyTransformer checkpoint + ChatGLM-6B tokenizer)")
        {
            checkpoint, output, baseDir, lora, tokenizer, imageTokens,
        };
        command.SetAction(async (parse, cancel) =>
        {
            var options = new XrayGlmImportOptions
            {
                Lora = parse.GetValue(lora) == "adapter" ? SatLoraHandling.Adapter : SatLoraHandling.Merge,
                BaseDirectory = parse.GetValue(baseDir),
                TokenizerPath = parse.GetValue(tokenizer),
                NumImageTokens = parse.GetValue(imageTokens),
            };
            string source = parse.GetValue(checkpoint)!, target = parse.GetValue(output)!;
            XrayGlmImportResult result = null!;
            await io.Ui.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("converting", maxValue: 1);
                    var progress = new Progress<(long Done, long Total)>(p =>
                    {
                        task.MaxValue = Math.Max(1, p.Total);
                        task.Value = p.Done;
                    });
                    result = await Task.Run(() => VisualGlmFolder.Import(source, target, options, progress), cancel);
                    task.Value = task.MaxValue;
                });
            string loraText = result.LoraLayers.Count == 0 ? "no LoRA"
                : $"LoRA in {result.LoraLayers.Count} layers {(options.Lora == SatLoraHandling.Merge ? "merged" : "kept in adapter/")}";
            io.Out.WriteLine($"wrote {target}: {result.Tensors} tensors, {result.Bytes / 1e6:F1} MB, {loraText}" +
                             (result.FromBase > 0 ? $", {result.FromBase} tensors from --base" : "") + $"; tokenizer {result.Tokenizer}");
            return 0;
        });
        return command;
    }
}
