using XrayVL.Modeling;

namespace XrayVL.Tests.Support;

/// <summary>A composed model small enough for unit tests: 32-px gray images, 16 patches, a 2-layer decoder.</summary>
public static class TinyVisionLanguageModels
{
    public const int Vocab = 120;
    public const int ImageToken = Vocab - 1;

    public static VisionLanguageConfig Config(string projector = "mlp2x_gelu", string vision = "clip_vision_model") => new()
    {
        VisionConfig = new VisionConfig
        {
            ModelType = vision, ImageSize = 32, NumChannels = 1, PatchSize = 8, HiddenSize = 32, IntermediateSize = 64,
            NumHiddenLayers = 2, NumAttentionHeads = 2, Layers = [1, 1, 1, 1], Width = 8,
        },
        TextConfig = TinyLanguageModels.Config(vocab: Vocab),
        ProjectorType = projector,
        ImageTokenIndex = ImageToken,
    };

    public static VisionLanguageModel Create(VisionLanguageConfig? config = null, int seed = 1)
    {
        var model = new VisionLanguageModel(config ?? Config());
        using var generator = new TorchSharp.torch.Generator((ulong)seed);
        model.LanguageModel.InitializeWeights(generator);
        model.eval();
        return model;
    }
}
