using XrayVL.Benchmarks;
using XrayVL.IO;
using XrayVL.Modeling;
using XrayVL.Tests.Cli;
using XrayVL.Tests.Modeling;
using XrayVL.Tests.Support;

namespace XrayVL.Tests.Benchmarks;

[Collection(nameof(ProcessWideTorchState))]   // `bench` sets torch's process-wide thread count while it measures
public class BenchTests
{
    [Fact]
    public void ForwardFlopsCountsProjectionsAttentionAndTheLastLogits()
    {
        // d 4, 1 layer, 2 heads of 2, 1 kv head, ff 8, vocab 10, 3 tokens — by hand:
        // projections per token: q 4·4 + k,v 2·4·2 + o 4·4 + mlp 3·4·8 = 16 + 16 + 16 + 96 = 144 → 2·144·3 = 864
        // attention: causal pairs 3·4/2 = 6, QKᵀ and AV: 2·2·6·2·2 = 96;  lm head on the last position: 2·4·10 = 80
        var c = new LanguageModelConfig { VocabSize = 10, HiddenSize = 4, IntermediateSize = 8, NumHiddenLayers = 1, NumAttentionHeads = 2, NumKeyValueHeads = 1 };
        Assert.Equal(864 + 96 + 80, Bench.ForwardFlops(c, 3));
    }

    [Fact]
    public void BenchMeasuresEveryStageWithPositiveFiguresAndSameRunRatios()
    {
        var loaded = Checkpoint.Load(TinyCheckpoint.Directory);
        var report = Bench.Run(loaded, SharedData.File("iu-xray", "images", "2_1.png"),
            new Bench.Options { Threads = 1, Repeats = 1, Contexts = [24, 48], DecodeTokens = 4, RecomputeTokens = 2, ReportTokens = 4 });
        Assert.All(report.Figures, f => Assert.True(f.Value > 0 && double.IsFinite(f.Value), f.Name));
        foreach (string expected in new[] { "image decode + preprocess", "vision encoder + projector (fp32)", "prefill, context 48 (fp32)",
                     "decode with KV cache, context 24 (fp32)", "decode by full recompute, context 48 (fp32)", "report end to end (fp32)",
                     "plain 2048² matmul (bf16)", "decode with KV cache, context 48 (bf16)" })
            Assert.Contains(report.Figures, f => f.Name == expected);
        Assert.Contains("KV cache vs full recompute, context 48", report.Ratios.Keys);
        Assert.Contains("LM forward bf16 vs fp32, context 48", report.Ratios.Keys);
        Assert.Contains("| ratio (same run) | min / **median** / max |", report.ToMarkdown());
        Assert.Equal(TorchSharp.torch.ScalarType.Float32, loaded.Model.LanguageModel.DType);   // restored after the bf16 figures
    }

    [Fact]
    public void BenchCommandWritesMarkdown()
    {
        string output = Path.Combine(TempDir.Create("xrayvl-bench"), "bench.md");
        var r = CliRunner.Run("bench", "--model", TinyCheckpoint.Directory, "--image", SharedData.File("iu-xray", "images", "2_1.png"),
            "--repeats", "1", "--threads", "1", "--out", output);
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("tokens/s", File.ReadAllText(output));
    }
}
