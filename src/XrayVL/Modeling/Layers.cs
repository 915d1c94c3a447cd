using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Factories for the layers every model file shares, so a change happens in one place.
/// Every linear is an <see cref="AdaptableLinear"/>: nn.Linear's keys (`weight` (out, in), `bias` (out)), and a slot for
/// a LoRA pair that <see cref="Lora.Inject"/> can attach later.
/// `device` null means the default (CPU); `torch.META` builds shapes without memory (parameter counts of large configs).
/// </summary>
public static class Layers
{
    public static nn.Module<Tensor, Tensor> Linear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null) =>
        new AdaptableLinear(inFeatures, outFeatures, hasBias, device);
}
