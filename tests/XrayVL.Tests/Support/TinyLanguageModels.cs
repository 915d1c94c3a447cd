using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Support;

/// <summary>Small random decoders that run in milliseconds; seeded with their own generator (tests run in parallel).</summary>
public static class TinyLanguageModels
{
    /// <summary>hidden 64, 2 layers, 4 query heads over 2 key/value heads (GQA), vocabulary 100.</summary>
    public static LanguageModelConfig Config(string modelType = "llama", bool tied = true, int vocab = 100) => new()
    {
        ModelType = modelType, VocabSize = vocab, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2,
        NumAttentionHeads = 4, NumKeyValueHeads = 2, MaxPositionEmbeddings = 256, TieWordEmbeddings = tied,
        // Wider than HF's 0.02 so that random logits have clear winners (greedy comparisons do not hinge on ties).
        InitializerRange = 0.15,
    };

    public static LanguageModel Create(LanguageModelConfig config, int seed)
    {
        var model = new LanguageModel(config);
        using var generator = new torch.Generator((ulong)seed);
        model.InitializeWeights(generator);
        if (config.ProjectionBiases.Qkv || config.MlpBias)
        {
            // Non-zero biases so that they are exercised (HF initialises them to 0).
            using var noGrad = torch.no_grad();
            foreach (var (name, p) in model.named_parameters())
                if (name.EndsWith(".bias", StringComparison.Ordinal)) p.normal_(0, 0.1, generator);
        }
        model.eval();
        return model;
    }

    public static long[] RandomIds(int count, int vocab, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)random.Next(vocab)).ToArray();
    }

    /// <summary>(1, T) int64 tensor of the ids.</summary>
    public static Tensor Ids(IEnumerable<long> ids) => torch.tensor(ids.ToArray()).unsqueeze(0);

    public static double MaxAbsDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();
}
