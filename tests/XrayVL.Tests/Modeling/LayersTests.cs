using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class LayersTests
{
    [Fact]
    public void TruncatedNormalHasTheTruncatedDistributionsMoments()
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(7);
        var x = Layers.TruncatedNormal_(empty(200_000), std: 0.02, low: -0.04, high: 0.04, generator);
        // N(0, σ²) truncated at ±2σ has standard deviation σ·sqrt(1 − 2·2·φ(2)/(2Φ(2) − 1)) = 0.8796σ.
        Assert.InRange(x.std().item<float>(), 0.8796 * 0.02 * 0.99, 0.8796 * 0.02 * 1.01);
        Assert.InRange(x.mean().item<float>(), -2e-4, 2e-4);
        Assert.True(x.min().item<float>() >= -0.04 && x.max().item<float>() <= 0.04);
        // Not clamped: no pile-up of mass at the bounds.
        Assert.True(x.abs().gt(0.0399).sum().item<long>() < 200_000 * 0.002);
    }

    [Fact]
    public void FreshVisionTowerGivesNonConstantFeatures()
    {
        using var scope = NewDisposeScope();
        using var encoder = VisionEncoder.Create(Support.TinyVisionLanguageModels.Config().VisionConfig);
        var features = encoder.call(randn(2, 1, 32, 32));
        Assert.True(features.std().item<float>() > 0.1, "a constant-initialised ViT collapses to zeros after LayerNorm");
    }
}
