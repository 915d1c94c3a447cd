using TorchSharp;
using static TorchSharp.torch;

namespace XrayVL.Training;

/// <summary>
/// A padded batch: ids and labels (B, T) padded on the right (labels <see cref="Constants.IgnoreIndex"/> there), the
/// images of every row in reading order, and token counts. Right padding needs no attention mask for a causal model:
/// padding comes after every real token, so no real position ever attends to it.
/// </summary>
public sealed class Batch : IDisposable
{
    public required Tensor Ids { get; init; }
    public required Tensor Labels { get; init; }
    public required IReadOnlyList<string> Images { get; init; }
    /// <summary>Positions the loss counts (labels[1..] not ignored): the weight of this batch in an accumulated step.</summary>
    public required long LearnedTokens { get; init; }
    /// <summary>Non-padding positions (for tokens/s).</summary>
    public required long Tokens { get; init; }

    public static Batch Collate(IReadOnlyList<TrainSample> samples, int padId, Device device)
    {
        if (samples.Count == 0) throw new ArgumentException("a batch needs at least one sample", nameof(samples));
        int length = samples.Max(s => s.Ids.Length);
        var ids = new long[samples.Count * length];
        var labels = new long[samples.Count * length];
        long learned = 0, tokens = 0;
        for (int b = 0; b < samples.Count; b++)
        {
            var s = samples[b];
            for (int t = 0; t < length; t++)
            {
                bool real = t < s.Ids.Length;
                ids[b * length + t] = real ? s.Ids[t] : padId;
                labels[b * length + t] = real ? s.Labels[t] : Constants.IgnoreIndex;
                if (real && t > 0 && s.Labels[t] != Constants.IgnoreIndex) learned++;
            }
            tokens += s.Ids.Length;
        }
        return new Batch
        {
            Ids = torch.tensor(ids, [samples.Count, length], ScalarType.Int64, device),
            Labels = torch.tensor(labels, [samples.Count, length], ScalarType.Int64, device),
            Images = samples.SelectMany(s => s.Images).ToList(),
            LearnedTokens = learned,
            Tokens = tokens,
        };
    }

    public void Dispose()
    {
        Ids.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// The order samples are drawn in: epoch e is a permutation of all samples seeded by (seed, stage, e), and sample number
/// k of the stage (counting from 0 over all epochs) is permutation(k / N)[k mod N]. The order is a pure function of the
/// position, so a resumed run draws exactly the batches an uninterrupted one would.
/// </summary>
public sealed class SampleOrder(int count, int seed, int stageIndex)
{
    private readonly Dictionary<long, int[]> permutations = [];

    public int Count { get; } = count > 0 ? count : throw new XrayVLException("the stage has no training samples");

    /// <summary>The sample index drawn at position <paramref name="k"/> of the stage.</summary>
    public int this[long k]
    {
        get
        {
            long epoch = k / Count;
            if (!permutations.TryGetValue(epoch, out var perm))
            {
                if (permutations.Count > 4) permutations.Clear();
                perm = Enumerable.Range(0, Count).ToArray();
                new Random(Seeds.Mix(seed, stageIndex, epoch, 0x0A7D)).Shuffle(perm);
                permutations[epoch] = perm;
            }
            return perm[(int)(k % Count)];
        }
    }

    /// <summary>The epoch (from 0) position <paramref name="k"/> falls in.</summary>
    public long EpochOf(long k) => k / Count;
}

/// <summary>Derived seeds: stable across runs and platforms (FNV-1a over the parts), unlike HashCode.Combine.</summary>
public static class Seeds
{
    public static int Mix(params long[] parts)
    {
        ulong h = 14695981039346656037;
        foreach (long part in parts)
            for (int i = 0; i < 8; i++)
            {
                h ^= (byte)(part >> (8 * i));
                h *= 1099511628211;
            }
        return (int)(h & 0x7fffffff);
    }

    /// <summary>A stable number for a name (FNV-1a over its UTF-16 code units).</summary>
    public static long Of(string text)
    {
        ulong h = 14695981039346656037;
        foreach (char c in text)
        {
            h ^= c;
            h *= 1099511628211;
        }
        return (long)(h >> 1);
    }
}
