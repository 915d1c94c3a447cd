using TorchSharp;
using XrayVL.Benchmarks;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Benchmarks;

/// <summary>
/// The bench's split of a decoded token into kernel time and the rest: the kernel counters see exactly the weights a
/// token reads, so in bf16/int8/int4 every linear layer and the tied head go through the kernels, and in fp32 none does.
/// </summary>
[Collection(nameof(ProcessWideTorchState))]   // the kernel counters are process-wide; and building in bf16/int8/int4 sets torch's default dtype
public class DecodeMeasurementTests
{
    [Fact]
    public void Kernel_counters_see_every_weight_of_each_decoded_token_once()
    {
        using var scope = torch.NewDisposeScope();
        var config = new LanguageModelConfig
        {
            VocabSize = 96, HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = 2,
            MaxPositionEmbeddings = 64, TieWordEmbeddings = true,
        };
        var ids = torch.randint(0, config.VocabSize, [1, 12], ScalarType.Int64);
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            using var model = WeightFormats.CreateRandom(config, format);
            var measured = Bench.CachedDecodeMeasured(model, ids, 5);
            Assert.True(measured.Tokens >= 1 && measured.Seconds > 0);
            if (format == WeightFormat.Fp32)
            {
                Assert.Equal(0, measured.Kernels.Bytes);
                continue;
            }
            long norms = model.named_parameters().Where(p => p.name.Contains("norm", StringComparison.Ordinal)).Sum(p => p.parameter.numel() * p.parameter.element_size());
            Assert.True(norms > 0);
            Assert.Equal(measured.Tokens * (WeightFormats.DecodeBytesPerToken(model) - norms), measured.Kernels.Bytes);
            Assert.InRange(measured.KernelShare, double.Epsilon, 1.0);
            Assert.True(measured.KernelGBPerSecond > 0);
        }
    }
}
