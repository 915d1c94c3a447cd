using TorchSharp;
using XrayVL.Benchmarks;
using XrayVL.IO;
using XrayVL.Kernels;
using XrayVL.Modeling;
using XrayVL.Tests.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Tests.Benchmarks;

/// <summary>The GLM block as `bench --shape chatglm-6b` runs it, at a tiny size, in every weight format.</summary>
[Collection(nameof(ProcessWideTorchState))]   // loading in bf16/int8/int4 sets torch's process-wide default dtype while the model is built
public class GlmShapeBenchmarkTests
{
    [Fact]
    public void The_GLM_block_is_built_in_each_format_and_its_prefill_and_cached_decoding_run()
    {
        using var scope = torch.NewDisposeScope();
        var config = new GlmConfig { NumLayers = 2, HiddenSize = 64, NumAttentionHeads = 4, VocabSize = 200, InnerHiddenSize = 128 };
        Assert.Contains("chatglm-6b", ShapeBenchmark.ShapeNames);
        Assert.Equal(GlmDecoder.CountParameters(new GlmConfig()), ShapeBenchmark.CountParameters("chatglm-6b"));
        var ids = torch.randint(0, config.VocabSize, [1, 12], ScalarType.Int64);
        foreach (var format in Enum.GetValues<WeightFormat>())
        {
            using var model = ModelLoading.Build(format, languageModelOnly: false, () => new GlmDecoder(config));
            var linears = model.modules().OfType<AdaptableLinear>().ToList();
            Assert.Equal(2 * 4 + 1, linears.Count);   // per block: query_key_value, dense, dense_h_to_4h, dense_4h_to_h; the head
            Assert.All(linears, l => Assert.Equal(format.LinearQuantization(), l.Quantization));
            Assert.True(ShapeBenchmark.GlmPrefill(model, ids) > 0);
            Assert.True(ShapeBenchmark.GlmDecode(model, ids, 4) > 0);
        }
    }
}
