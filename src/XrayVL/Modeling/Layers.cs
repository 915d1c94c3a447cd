using TorchSharp;
using XrayVL.Kernels;
using static TorchSharp.torch;

namespace XrayVL.Modeling;

/// <summary>
/// Factories and initialisers every model file shares, so a change happens in one place.
/// Every linear is an <see cref="AdaptableLinear"/>: nn.Linear's keys (`weight` (out, in), `bias` (out)), and a slot for
/// a LoRA pair that <see cref="Lora.Inject"/> can attach later.
/// `device` null means the default (CPU); `torch.META` builds shapes without memory (parameter counts of large configs).
/// </summary>
public static class Layers
{
    public static nn.Module<Tensor, Tensor> Linear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null)
    {
        var kind = quantizeOnCreation.Value;
        if (kind == LinearQuantization.None || (quantizeLanguageModelOnly.Value && !insideLanguageModel.Value)
            || inFeatures % MatVec.GroupSize != 0)
            return new AdaptableLinear(inFeatures, outFeatures, hasBias, device);
        // Shapes on META (no memory), then the quantized storage drawn directly: no float weight ever exists, not even
        // one layer's, so neither a transient nor the allocator's leftovers of one add to the peak.
        var linear = new AdaptableLinear(inFeatures, outFeatures, hasBias, torch.META);
        linear.CreateQuantized(kind, device ?? torch.CPU);
        return linear;
    }

    private static readonly AsyncLocal<LinearQuantization> quantizeOnCreation = new();
    private static readonly AsyncLocal<bool> quantizeLanguageModelOnly = new();
    private static readonly AsyncLocal<bool> insideLanguageModel = new();

    /// <summary>
    /// While the returned scope is open, every linear made by <see cref="Linear"/> on this flow (with an input width
    /// divisible by 32) is stored as <paramref name="kind"/> as soon as it is created, so a large model is never whole in a
    /// float dtype (see WeightFormats.CreateRandom and ModelLoading). With <paramref name="languageModelOnly"/>, only the
    /// linears of a <see cref="LanguageModel"/> are (the vision tower and projector of a composed model stay float).
    /// </summary>
    public static IDisposable QuantizeLinearsOnCreation(LinearQuantization kind = LinearQuantization.Q8, bool languageModelOnly = false)
    {
        var (previousKind, previousScope) = (quantizeOnCreation.Value, quantizeLanguageModelOnly.Value);
        quantizeOnCreation.Value = kind;
        quantizeLanguageModelOnly.Value = languageModelOnly;
        return new Restore(() => (quantizeOnCreation.Value, quantizeLanguageModelOnly.Value) = (previousKind, previousScope));
    }

    /// <summary>Marks the layers created while the scope is open as a language model's (LanguageModel's constructor opens it).</summary>
    internal static IDisposable LanguageModelLayers()
    {
        bool previous = insideLanguageModel.Value;
        insideLanguageModel.Value = true;
        return new Restore(() => insideLanguageModel.Value = previous);
    }

    private static readonly AsyncLocal<bool> skipInitialisation = new();

    /// <summary>True while a <see cref="SkipInitialisation"/> scope is open on this flow.</summary>
    public static bool InitialisationSkipped => skipInitialisation.Value;

    /// <summary>
    /// While the returned scope is open, linears made by <see cref="Linear"/> (float or quantized) leave their weights
    /// uninitialised, and the language model and vision encoders skip their own initialisation: for a model whose every
    /// weight is about to be read from a file, drawing billions of random numbers first only costs time (the loaders of
    /// model folders and of VisualGLM-6B).
    /// </summary>
    public static IDisposable SkipInitialisation()
    {
        bool previous = skipInitialisation.Value;
        skipInitialisation.Value = true;
        return new Restore(() => skipInitialisation.Value = previous);
    }

    private sealed class Restore(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    /// <summary>
    /// Fills <paramref name="tensor"/> in place with N(0, std²) truncated to [low, high], by inverse-CDF sampling:
    /// u ~ U(Φ(low/std), Φ(high/std)), x = std·√2·erfinv(2u − 1).
    /// TorchSharp 0.107's nn.init.trunc_normal_ fills every element with the same value (measured), which makes a
    /// fresh ViT output exactly zero after its first LayerNorm; this replaces it.
    /// </summary>
    public static Tensor TruncatedNormal_(Tensor tensor, double std, double low, double high, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        static double Phi(double x) => 0.5 * (1 + TorchSharp.torch.tensor(x / Math.Sqrt(2), ScalarType.Float64).erf().item<double>());
        double lo = Phi(low / std), hi = Phi(high / std);
        var u = empty(tensor.shape, ScalarType.Float64).uniform_(2 * lo - 1, 2 * hi - 1, generator);
        var values = u.erfinv_().mul_(std * Math.Sqrt(2)).clamp_(low, high);
        tensor.copy_(values.to(tensor.dtype, tensor.device));
        return tensor;
    }
}
