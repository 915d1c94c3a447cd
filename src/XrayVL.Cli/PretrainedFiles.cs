using System.Reflection;

namespace XrayVL.Cli;

/// <summary>
/// Files of weight packages that restore fetches into the NuGet folder (PackageDownload in XrayVL.Cli.csproj) rather than
/// the repository: their paths are written into this assembly's metadata at build time.
/// </summary>
public static class PretrainedFiles
{
    /// <summary>The word that stands for the restored file on the command line and in recipes (<c>${resnet18_onnx}</c>).</summary>
    public const string ResNet18OnnxWord = "nuget";

    /// <summary>ResNet18.onnx of Microsoft.ML.DnnImageFeaturizer.ResNet18, as restored for this build.</summary>
    public static string ResNet18Onnx =>
        typeof(PretrainedFiles).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "ResNet18Onnx")?.Value
        ?? throw new XrayVLException("this build does not name the ResNet-18 ONNX file; run `dotnet restore` on src/XrayVL.Cli");
}
