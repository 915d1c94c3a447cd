using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Tests.Support;

/// <summary>
/// Outputs of other people's code kept in ../shared/reference: a folder of raw little-endian arrays (NAME.bin, f32 or
/// i64) described by manifest.json ({name: {shape, dtype}}, or a plain number for scalars).
/// </summary>
public sealed class ReferenceOutputs
{
    private readonly string dir;
    private readonly JsonElement manifest;

    public ReferenceOutputs(string dir)
    {
        this.dir = dir;
        manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json"))).RootElement.Clone();
    }

    /// <summary>../shared/reference, beside ../shared/data.</summary>
    public static string Root => Path.Combine(Path.GetDirectoryName(SharedData.Root)!, "reference");

    public bool Has(string name) => manifest.TryGetProperty(name, out _);

    public double Scalar(string name) => manifest.GetProperty(name).GetDouble();

    /// <summary>The named array as a CPU tensor (float32 or int64).</summary>
    public Tensor Tensor(string name)
    {
        var entry = manifest.GetProperty(name);
        long[] shape = [.. entry.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64())];
        string dtype = entry.GetProperty("dtype").GetString()!;
        byte[] bytes = File.ReadAllBytes(Path.Combine(dir, name + ".bin"));
        return dtype switch
        {
            "f32" => torch.tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray()).reshape(shape),
            "i64" => torch.tensor(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(bytes).ToArray()).reshape(shape),
            _ => throw new InvalidDataException($"{dir}/{name}: dtype {dtype}"),
        };
    }

    /// <summary>max |a − b| / max |b|: one relative figure for a whole output.</summary>
    public static double RelativeError(Tensor actual, Tensor expected)
    {
        using var scope = torch.NewDisposeScope();
        Assert.Equal(expected.shape, actual.shape);
        var e = expected.to(ScalarType.Float64);
        double scale = Math.Max(e.abs().max().item<double>(), 1e-12);
        return (actual.to(ScalarType.Float64) - e).abs().max().item<double>() / scale;
    }
}
