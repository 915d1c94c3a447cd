using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Factories for the layers every model file shares, so a later change (e.g. LoRA-capable linears) happens in one place.
/// State-dict keys follow nn.Linear: `weight` (out, in) and `bias` (out).
/// `device` null means the default (CPU); `torch.META` builds shapes without memory (parameter counts of large configs).
/// </summary>
public static class Layers
{
    public static nn.Module<Tensor, Tensor> Linear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null) =>
        nn.Linear(inFeatures, outFeatures, hasBias, device);
}
