using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Factories for the layers every model file shares, so a later change (e.g. LoRA-capable linears) happens in one place.
/// State-dict keys follow nn.Linear: `weight` (out, in) and `bias` (out).
/// </summary>
public static class Layers
{
    public static nn.Module<Tensor, Tensor> Linear(long inFeatures, long outFeatures, bool hasBias = true) =>
        nn.Linear(inFeatures, outFeatures, hasBias);
}
