using System.CommandLine;
using XrayVL.IO;

namespace XrayVL.Cli;

/// <summary>
/// `xrayvl convert resnet18-onnx PATH OUT`: an ONNX ResNet (the ImageNet ResNet-18 of NuGet's
/// Microsoft.ML.DnnImageFeaturizer.ResNet18; PATH `nuget` is the copy restore fetched) → a vision-tower folder with
/// torchvision keys that recipes start the encoder from.
/// </summary>
public static class ConvertCommand
{
    public static Command Create(CliIO io)
    {
        var path = new Argument<string>("path") { Description = $"The .onnx file ('{PretrainedFiles.ResNet18OnnxWord}': the one NuGet restore fetched)" };
        var output = new Argument<string>("out") { Description = "Folder to write: config.json, model.safetensors, preprocessor_config.json" };
        var channels = new Option<int>("--channels")
        {
            Description = "3: RGB stem as trained (a gray image is repeated); 1: the stem's channels summed for gray input",
            DefaultValueFactory = _ => 3,
        }.AcceptOnlyFromAmong("1", "3");
        var prep = new Option<string?>("--preprocess")
        {
            Description = "The preprocessing ONNX holding the mean image (default: ../ResNetPrepOnnx/ResNetPreprocess.onnx beside PATH)",
        };
        var resnet = new Command("resnet18-onnx", "ONNX ResNet (basic blocks) → torchvision-keyed encoder weights") { path, output, channels, prep };
        resnet.SetAction(parse =>
        {
            string onnx = Resolve(parse.GetValue(path)!);
            string prepPath = parse.GetValue(prep)
                ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(onnx))!, "..", "ResNetPrepOnnx", "ResNetPreprocess.onnx");
            if (!File.Exists(prepPath))
                throw new XrayVLException($"{prepPath}: preprocessing ONNX not found; give its path with --preprocess");
            var graph = OnnxGraph.Read(onnx);
            float[] means = ResNetOnnx.MeansFromPreprocessGraph(OnnxGraph.Read(prepPath));
            using var converted = ResNetOnnx.Convert(graph, parse.GetValue(channels), means);
            string target = parse.GetValue(output)!;
            ResNetOnnx.Save(converted, target, new Dictionary<string, string> { ["format"] = "pt", ["source"] = Path.GetFileName(onnx) });
            long parameters = converted.Weights.Values.Sum(t => t.numel());
            io.Out.WriteLine($"wrote {target}: ResNet [{string.Join(",", converted.Config.Layers)}], {converted.Config.NumChannels} channel(s), " +
                             $"{parameters:N0} values from {graph.Producer} graph {Path.GetFileName(onnx)}");
            return 0;
        });
        return new Command("convert", "Turn pretrained weights of another format into this project's") { resnet };
    }

    /// <summary>`nuget` → the restored package file; anything else is a path that must exist.</summary>
    internal static string Resolve(string path)
    {
        string file = path == PretrainedFiles.ResNet18OnnxWord ? PretrainedFiles.ResNet18Onnx : path;
        return File.Exists(file) ? file : throw new XrayVLException($"{file}: file not found");
    }
}
