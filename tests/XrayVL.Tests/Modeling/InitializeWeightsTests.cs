using TorchSharp;
using XrayVL.Modeling;
using XrayVL.Tests.Support;
using static TorchSharp.torch;

namespace XrayVL.Tests.Modeling;

public class InitializeWeightsTests
{
    // The models are kept (and disposed at the end): their state-dict tensors are the models' own parameters, which a
    // garbage collection of an unreachable model could release while the test still reads them.
    private static Dictionary<string, Tensor> Fresh(VisionLanguageConfig config, ulong seed, List<VisionLanguageModel> models, bool drawInBetween = false)
    {
        var model = new VisionLanguageModel(config);
        models.Add(model);
        if (drawInBetween) randn(1000).Dispose();             // other users of the global generator change nothing
        using var generator = new torch.Generator(seed);
        model.InitializeWeights(generator);
        return model.state_dict();
    }

    [Theory]
    [InlineData("clip_vision_model", "mlp2x_gelu")]
    [InlineData("resnet", "linear")]
    public void TheSameSeedGivesTheSameModelWhateverTheGlobalGeneratorDoes(string vision, string projector)
    {
        var config = TinyVisionLanguageModels.Config(projector, vision);
        var models = new List<VisionLanguageModel>();
        var a = Fresh(config, 11, models);
        var b = Fresh(config, 11, models, drawInBetween: true);
        var c = Fresh(config, 12, models);
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
        foreach (var model in models) model.Dispose();
    }
}
