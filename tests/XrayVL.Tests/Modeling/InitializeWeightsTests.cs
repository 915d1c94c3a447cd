using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class InitializeWeightsTests
{
    private static Dictionary<string, Tensor> Fresh(VisionLanguageConfig config, ulong seed, bool drawInBetween = false)
    {
        // Disposed here, its weights copied out: a module left to the collector disposes its parameters when finalized,
        // so a state dict of a dropped module breaks whenever a collection happens to run (parallel tests make it likely).
        using var model = new VisionLanguageModel(config);
        if (drawInBetween) randn(1000).Dispose();             // other users of the global generator change nothing
        using var generator = new torch.Generator(seed);
        model.InitializeWeights(generator);
        return model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
    }

    [Theory]
    [InlineData("clip_vision_model", "mlp2x_gelu")]
    [InlineData("resnet", "linear")]
    public void TheSameSeedGivesTheSameModelWhateverTheGlobalGeneratorDoes(string vision, string projector)
    {
        var config = TinyVisionLanguageModels.Config(projector, vision);
        var a = Fresh(config, 11);
        var b = Fresh(config, 11, drawInBetween: true);
        var c = Fresh(config, 12);
        foreach (var (name, t) in a)
        {
            if (!t.is_floating_point()) continue;
            Assert.True(t.eq(b[name]).all().item<bool>(), $"{name} differs for the same seed");
            bool constant = t.numel() == 1 || (t.max() - t.min()).item<float>() == 0;     // norms (1), biases (0), BN statistics
            if (!constant) Assert.False(t.eq(c[name]).all().item<bool>(), $"{name} equal for another seed");
        }
        // The distributions the constructors use: ViT matrices truncated at 2·0.02, projector U(±1/√in), LM N(0, 0.15).
        if (vision == "clip_vision_model")
            Assert.True(a["vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"].abs().max().item<float>() <= 0.04f + 1e-6f);
        var w = a["multi_modal_projector.linear_1.weight"];
        Assert.True(w.abs().max().item<float>() <= 1 / MathF.Sqrt(w.shape[1]) + 1e-6f);
        double std = a["language_model.model.layers.0.mlp.up_proj.weight"].std().item<float>();
        Assert.InRange(std, 0.13, 0.17);
    }
}
