using System.Diagnostics;
using TorchSharp;
using XrayVL.Modeling;
using static TorchSharp.torch;

namespace XrayVL.Benchmarks;

/// <summary>Encoder throughput on this machine (a figure to report, e.g. from `xrayvl bench`; never asserted by tests).</summary>
public static class VisionBenchmark
{
    /// <summary>Median and best batch times; on a shared machine the best is the steadier figure.</summary>
    public sealed record Result(string ModelType, ScalarType Dtype, int BatchSize, double MedianBatchMilliseconds, double BestBatchMilliseconds)
    {
        public double ImagesPerSecond => BatchSize * 1000.0 / MedianBatchMilliseconds;
        public double BestImagesPerSecond => BatchSize * 1000.0 / BestBatchMilliseconds;
        public override string ToString() =>
            $"{ModelType} {Dtype} batch {BatchSize}: median {MedianBatchMilliseconds:F1} ms/batch ({ImagesPerSecond:F1} images/s), " +
            $"best {BestBatchMilliseconds:F1} ms ({BestImagesPerSecond:F1} images/s)";
    }

    /// <summary>
    /// Median wall time of `iterations` inference forwards of random images at the configured size, after one warm-up,
    /// for an encoder with fresh weights in `dtype` (Float32 or BFloat16).
    /// </summary>
    public static Result Measure(VisionConfig config, ScalarType dtype, int batchSize = 8, int iterations = 5, int featureLayer = -1)
    {
        using var scope = NewDisposeScope();
        using var encoder = VisionEncoder.Create(config, featureLayer);
        encoder.to(dtype);
        encoder.eval();
        using var _ = no_grad();
        var pixels = randn(batchSize, config.NumChannels, config.ImageSize, config.ImageSize);
        encoder.call(pixels).Dispose(); // warm-up: first calls pick kernels and allocate
        var times = new List<double>();
        for (int i = 0; i < iterations; i++)
        {
            var watch = Stopwatch.StartNew();
            encoder.call(pixels).Dispose();
            times.Add(watch.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return new Result(config.ModelType, dtype, batchSize, times[times.Count / 2], times[0]);
    }
}
