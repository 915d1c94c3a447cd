using System.Diagnostics;
using System.Runtime.InteropServices;

namespace XrayVL.Text;

/// <summary>Settings for <see cref="BpeTrainer"/>.</summary>
/// <param name="VocabSize">Total vocabulary, special tokens included: 256 byte tokens + merges + specials. 6000 suits a few MB of reports.</param>
/// <param name="MinFrequency">A pair seen fewer times than this is never merged: rarer merges would only memorise single reports.</param>
public sealed record BpeTrainerOptions(int VocabSize = 6000, int MinFrequency = 2);

/// <summary>
/// Trains a GPT-2-style byte-level BPE: text is cut into pre-tokens by <see cref="ByteLevel.PreTokenizer"/>, equal
/// pre-tokens are counted once with their frequency, and the most frequent adjacent pair is merged until the vocabulary
/// is full. Pair counts are kept up to date incrementally: a merge touches only the words that contain the pair
/// (an index from pair to words), and a max-heap with lazy deletion picks the next pair. The special tokens of
/// <see cref="SpecialTokens.All"/> take the last ids, after the merges.
/// </summary>
public static class BpeTrainer
{
    /// <summary>Trains on <paramref name="texts"/>; special tokens inside the texts are cut out and never merged into.</summary>
    public static ByteLevelBpeModel Train(IEnumerable<string> texts, BpeTrainerOptions? options = null)
    {
        options ??= new BpeTrainerOptions();
        int specialCount = SpecialTokens.All.Count;
        if (options.VocabSize < 256 + specialCount)
            throw new XrayVLException($"BPE vocab_size {options.VocabSize} is too small: it needs at least {256 + specialCount} (256 bytes + {specialCount} special tokens).");
        if (options.MinFrequency < 1)
            throw new XrayVLException($"BPE min_frequency {options.MinFrequency} must be at least 1.");

        // 1. Count pre-tokens: the corpus becomes a much smaller set of distinct words with frequencies.
        var wordFrequency = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in texts)
        {
            foreach (var (segment, isSpecial) in SpecialTokenSplitter.Split(text, SpecialTokens.All))
            {
                if (isSpecial) continue;
                foreach (var match in ByteLevel.PreTokenizer.EnumerateMatches(segment))
                {
                    ref int count = ref CollectionsMarshal.GetValueRefOrAddDefault(
                        wordFrequency, segment.Substring(match.Index, match.Length), out _);
                    count++;
                }
            }
        }

        // 2. Base vocabulary: one token per byte, in GPT-2's order.
        var tokens = new List<string>(options.VocabSize);
        var tokenIds = new Dictionary<string, int>(StringComparer.Ordinal);
        var baseIdOfByte = new int[256];
        foreach (byte b in ByteLevel.BaseByteOrder)
        {
            baseIdOfByte[b] = tokens.Count;
            string spelling = ByteLevel.ByteToChar(b).ToString();
            tokenIds[spelling] = tokens.Count;
            tokens.Add(spelling);
        }

        var words = new List<int>[wordFrequency.Count];
        var frequencies = new long[wordFrequency.Count];
        int w = 0;
        foreach (var (word, frequency) in wordFrequency)
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(word);
            var symbols = new List<int>(bytes.Length);
            foreach (byte b in bytes) symbols.Add(baseIdOfByte[b]);
            words[w] = symbols;
            frequencies[w] = frequency;
            w++;
        }

        // 3. Initial pair counts and the pair → words index.
        var pairCounts = new Dictionary<long, long>();
        var pairWords = new Dictionary<long, HashSet<int>>();
        for (w = 0; w < words.Length; w++)
        {
            var symbols = words[w];
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                long pair = Pack(symbols[i], symbols[i + 1]);
                CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, pair, out _) += frequencies[w];
                IndexWord(pairWords, pair, w);
            }
        }

        var heap = new PriorityQueue<long, PairRank>(pairCounts.Count);
        foreach (var (pair, count) in pairCounts) heap.Enqueue(pair, new PairRank(count, pair));

        // 4. Merge the most frequent pair until the vocabulary is full.
        int targetTokens = options.VocabSize - specialCount;
        var merges = new List<(int Left, int Right)>();
        var deltas = new Dictionary<long, long>();
        while (tokens.Count < targetTokens && heap.TryDequeue(out long best, out PairRank rank))
        {
            long current = pairCounts.GetValueOrDefault(best);
            if (current != rank.Count)
            {
                // Stale entry: the pair lost occurrences to earlier merges. Re-queue it with its true count.
                if (current > 0) heap.Enqueue(best, new PairRank(current, best));
                continue;
            }
            if (current < options.MinFrequency) break;

            var (left, right) = Unpack(best);
            string merged = tokens[left] + tokens[right];
            if (!tokenIds.TryGetValue(merged, out int mergedId))
            {
                // Different pairs can spell the same string ("ab"+"c", "a"+"bc"): they share one id.
                mergedId = tokens.Count;
                tokenIds[merged] = mergedId;
                tokens.Add(merged);
            }
            merges.Add((left, right));

            deltas.Clear();
            foreach (int wordIndex in pairWords[best])
            {
                var symbols = words[wordIndex];
                if (!ContainsPair(symbols, left, right)) continue; // the index keeps words that lost the pair
                long frequency = frequencies[wordIndex];
                for (int i = 0; i + 1 < symbols.Count; i++)
                    CollectionsMarshal.GetValueRefOrAddDefault(deltas, Pack(symbols[i], symbols[i + 1]), out _) -= frequency;
                MergeInPlace(symbols, left, right, mergedId);
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    long pair = Pack(symbols[i], symbols[i + 1]);
                    CollectionsMarshal.GetValueRefOrAddDefault(deltas, pair, out _) += frequency;
                    if (symbols[i] == mergedId || symbols[i + 1] == mergedId) IndexWord(pairWords, pair, wordIndex);
                }
            }
            pairWords.Remove(best);

            foreach (var (pair, delta) in deltas)
            {
                if (delta == 0) continue;
                ref long count = ref CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, pair, out _);
                count += delta;
                Debug.Assert(count >= 0);
                if (count == 0) pairCounts.Remove(pair);
                else if (delta > 0) heap.Enqueue(pair, new PairRank(count, pair)); // decreases are fixed lazily on dequeue
            }
        }

        var mergeStrings = merges.Select(m => (tokens[m.Left], tokens[m.Right])).ToList();
        return new ByteLevelBpeModel(tokens.Concat(SpecialTokens.All).ToList(), mergeStrings, SpecialTokens.All);
    }

    private static void IndexWord(Dictionary<long, HashSet<int>> pairWords, long pair, int word)
    {
        ref HashSet<int>? set = ref CollectionsMarshal.GetValueRefOrAddDefault(pairWords, pair, out _);
        (set ??= []).Add(word);
    }

    private static bool ContainsPair(List<int> symbols, int left, int right)
    {
        for (int i = 0; i + 1 < symbols.Count; i++)
            if (symbols[i] == left && symbols[i + 1] == right) return true;
        return false;
    }

    /// <summary>Replaces each non-overlapping (left, right), scanning left to right, by <paramref name="merged"/>.</summary>
    private static void MergeInPlace(List<int> symbols, int left, int right, int merged)
    {
        int write = 0;
        for (int read = 0; read < symbols.Count; read++)
        {
            if (read + 1 < symbols.Count && symbols[read] == left && symbols[read + 1] == right)
            {
                symbols[write++] = merged;
                read++;
            }
            else symbols[write++] = symbols[read];
        }
        symbols.RemoveRange(write, symbols.Count - write);
    }

    internal static long Pack(int left, int right) => ((long)left << 32) | (uint)right;

    internal static (int Left, int Right) Unpack(long pair) => ((int)(pair >> 32), (int)(uint)pair);

    /// <summary>Heap order: highest count first; ties go to the pair of smaller ids, so training is deterministic.</summary>
    private readonly record struct PairRank(long Count, long Pair) : IComparable<PairRank>
    {
        public int CompareTo(PairRank other)
        {
            int byCount = other.Count.CompareTo(Count);
            return byCount != 0 ? byCount : Pair.CompareTo(other.Pair);
        }
    }
}
