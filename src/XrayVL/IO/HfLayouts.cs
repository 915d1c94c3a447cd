using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// Key layouts of composed checkpoints, in one table. The module's own keys are transformers 4.40's LLaVA layout
/// (`vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.weight`); later
/// transformers versions write `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*` and a
/// top-level `lm_head.weight`. Each row maps a prefix of that newer layout to the module's.
/// </summary>
public static class HfLayouts
{
    private static readonly (string Newer, string Module)[] LlavaPrefixes =
    [
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ];

    /// <summary>
    /// The tensors under the module's keys: a file in the newer layout is renamed (all its keys, or it is refused as a
    /// mix of layouts), any other file is returned as it is.
    /// </summary>
    public static Dictionary<string, Tensor> ToModuleKeys(Dictionary<string, Tensor> tensors)
    {
        var rename = ModuleKeyOf(tensors.Keys);
        var renamed = new Dictionary<string, Tensor>(tensors.Count);
        foreach (var (key, tensor) in tensors) renamed[rename(key)] = tensor;
        return renamed;
    }

    /// <summary>
    /// The renaming <see cref="ToModuleKeys"/> applies to a file holding <paramref name="keys"/>, as a function of one key,
    /// so a loader can rename tensors it has not read yet.
    /// </summary>
    public static Func<string, string> ModuleKeyOf(IReadOnlyCollection<string> keys)
    {
        bool IsNewer(string key) => LlavaPrefixes.Any(p => key.StartsWith(p.Newer, StringComparison.Ordinal));
        int newer = keys.Count(IsNewer);
        if (newer == 0 || !keys.Any(k => k.StartsWith("model.vision_tower.", StringComparison.Ordinal) ||
                                         k.StartsWith("model.language_model.", StringComparison.Ordinal)))
            return key => key;
        if (newer != keys.Count)
        {
            string odd = keys.First(k => !IsNewer(k));
            throw new XrayVLException($"the weights mix two LLaVA key layouts ('{odd}' next to 'model.language_model.*')");
        }
        return key =>
        {
            var (from, to) = LlavaPrefixes.First(p => key.StartsWith(p.Newer, StringComparison.Ordinal));
            return to + key[from.Length..];
        };
    }
}
