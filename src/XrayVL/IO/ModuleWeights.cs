using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>What <see cref="ModuleWeights.LoadInto"/> did: keys copied, and the keys that did not fit.</summary>
public sealed record LoadReport(
    IReadOnlyList<string> Loaded,
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> Unexpected,
    IReadOnlyList<string> ShapeMismatches)
{
    public bool IsComplete => Missing.Count == 0 && Unexpected.Count == 0 && ShapeMismatches.Count == 0;
}

/// <summary>
/// A module's weights as named tensors: its state dict saved to a safetensors file, or named tensors (from any reader)
/// copied into its parameters and buffers with a report of the keys that did not fit.
/// </summary>
public static class ModuleWeights
{
    /// <summary>Saves a module's state dict (parameters and buffers), keys prefixed with <paramref name="prefix"/> + "." when given.</summary>
    public static void SaveModule(string path, nn.Module module, string prefix = "", IReadOnlyDictionary<string, string>? metadata = null)
    {
        string keyPrefix = NormalisePrefix(prefix);
        var state = module.state_dict().ToDictionary(kv => keyPrefix + kv.Key, kv => kv.Value);
        SafeTensors.Save(path, state, metadata ?? new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// Copies the tensors whose keys are <paramref name="prefix"/> + "." + a state-dict key of <paramref name="module"/>
    /// into that parameter/buffer (cast to its dtype and device, without recording gradients).
    /// Keys outside the prefix are ignored. When <paramref name="strict"/>, any missing key, unexpected key under the prefix,
    /// or shape mismatch throws <see cref="XrayVLException"/> before anything is copied; otherwise mismatches are skipped and reported.
    /// </summary>
    public static LoadReport LoadInto(nn.Module module, IReadOnlyDictionary<string, Tensor> tensors, string prefix = "", bool strict = true)
    {
        string keyPrefix = NormalisePrefix(prefix);
        var targets = module.state_dict();
        var loaded = new List<string>();
        var missing = new List<string>();
        var mismatched = new List<string>();
        var copies = new List<(Tensor Target, Tensor Source)>();

        foreach (var (name, target) in targets)
        {
            if (!tensors.TryGetValue(keyPrefix + name, out var source))
            {
                missing.Add(keyPrefix + name);
                continue;
            }
            if (!source.shape.SequenceEqual(target.shape))
            {
                mismatched.Add($"{keyPrefix + name}: checkpoint {FormatShape(source.shape)} vs model {FormatShape(target.shape)}");
                continue;
            }
            copies.Add((target, source));
            loaded.Add(keyPrefix + name);
        }
        var unexpected = tensors.Keys
            .Where(k => k.StartsWith(keyPrefix, StringComparison.Ordinal) && !targets.ContainsKey(k[keyPrefix.Length..]))
            .Order(StringComparer.Ordinal).ToList();

        var report = new LoadReport(loaded, missing, unexpected, mismatched);
        if (strict && !report.IsComplete)
            throw new XrayVLException($"checkpoint does not fit {module.GetType().Name}{(keyPrefix.Length > 0 ? $" at '{prefix}'" : "")}: " + Describe(report));

        using (torch.no_grad())
        {
            foreach (var (target, source) in copies)
                target.copy_(source);
        }
        return report;
    }

    /// <summary>One line naming the first few missing/unexpected/mismatched keys of a report.</summary>
    public static string Describe(LoadReport report)
    {
        const int Shown = 5;
        static string List(IReadOnlyList<string> items) =>
            string.Join(", ", items.Take(Shown)) + (items.Count > Shown ? $", ... ({items.Count - Shown} more)" : "");
        var parts = new List<string>();
        if (report.Missing.Count > 0) parts.Add($"{report.Missing.Count} missing key(s): {List(report.Missing)}");
        if (report.Unexpected.Count > 0) parts.Add($"{report.Unexpected.Count} unexpected key(s): {List(report.Unexpected)}");
        if (report.ShapeMismatches.Count > 0) parts.Add($"{report.ShapeMismatches.Count} shape mismatch(es): {List(report.ShapeMismatches)}");
        return parts.Count == 0 ? "all keys match" : string.Join("; ", parts);
    }

    /// <summary>
    /// Copies (name, tensor) pairs into the module's parameters of the same name (cast to their dtype), disposing each
    /// source as soon as it is copied. Unknown names, shape mismatches and parameters left unfilled are errors.
    /// </summary>
    public static void StreamInto(nn.Module module, IEnumerable<(string Name, Tensor Tensor)> tensors, string source)
    {
        var targets = module.state_dict();
        var filled = new HashSet<string>();
        using var noGrad = torch.no_grad();
        foreach (var (name, tensor) in tensors)
        {
            using (tensor)
            {
                if (!targets.TryGetValue(name, out var target))
                    throw new XrayVLException($"{source}: '{name}' has no place in {module.GetType().Name}");
                if (!target.shape.SequenceEqual(tensor.shape))
                    throw new XrayVLException($"{source}: '{name}' is {FormatShape(tensor.shape)} but the model's is {FormatShape(target.shape)}");
                target.copy_(tensor);
                filled.Add(name);
            }
        }
        var missing = targets.Keys.Where(k => !filled.Contains(k)).ToList();
        if (missing.Count > 0)
            throw new XrayVLException($"{source}: {missing.Count} weight(s) of {module.GetType().Name} missing, e.g. {string.Join(", ", missing.Take(5))}");
    }

    public static string FormatShape(long[] shape) => "(" + string.Join(", ", shape) + ")";

    private static string NormalisePrefix(string prefix) =>
        prefix.Length == 0 || prefix.EndsWith('.') ? prefix : prefix + ".";
}
