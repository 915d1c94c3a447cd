using XrayVL.Evaluation;
using static XrayVL.Tests.Evaluation.BleuTests;

namespace XrayVL.Tests.Evaluation;

public class CiderTests
{
    [Fact]
    public void TwoItemCorpusByHand()
    {
        // N = 2 items → log N = ln 2. Document frequencies from the references: a:2, b:1, d:1, "a b":1, "a d":1.
        // Weights tf·(ln 2 − ln max(1, df)): a → 0, b → ln2, d → ln2, unseen c → ln2 (df 0 → max 1), bigrams → ln2.
        // Item A "a b" vs "a b": order 1: dot = 0·0 + ln2·ln2, norms ln2·ln2 → 1; order 2 likewise 1; orders 3, 4: no
        //   n-grams → 0. Same length → no penalty. Score = 10·(1 + 1 + 0 + 0)/4 = 5.
        // Item B "a c" vs "a d": no shared n-gram with non-zero weight → 0. Corpus = 2.5.
        var (score, perItem) = Cider.Corpus([T("a b"), T("a c")], [Refs("a b"), Refs("a d")]);
        Assert.Equal(5.0, perItem[0], 12);
        Assert.Equal(0.0, perItem[1], 12);
        Assert.Equal(2.5, score, 12);
    }

    [Fact]
    public void ClippingAndGaussianLengthPenaltyByHand()
    {
        // N = 3 → L = ln 3; every reference n-gram has df 1, so every weight is tf·L.
        // Item 1 "x x y" vs "x y z":
        //   order 1: candidate {x: 2L, y: L}, reference {x: L, y: L, z: L};
        //            clipped dot = min(2L, L)·L + min(L, L)·L = 2L²; norms √5·L and √3·L → 2/√15
        //            (CIDEr without clipping would give 3/√15);
        //   order 2: candidate {"x x": L, "x y": L}, reference {"x y": L, "y z": L} → L² / (√2L·√2L) = 1/2;
        //   order 3: "x x y" vs "x y z" → 0; order 4: none → 0. Bigram counts 2 and 2 → δ = 0.
        //   score = 10·(2/√15 + 1/2)/4.
        // Item 2 "q" vs "q r": order 1: L² / (L·√2L) = 1/√2; the candidate has no bigram (norm 0) → 0.
        //   Lengths in bigrams: 0 and 1 → δ = −1 → penalty exp(−1/(2·6²)). score = 10·(1/√2)·exp(−1/72)/4.
        // Item 3 "s" vs "t" → 0.
        double item1 = 10 * (2 / Math.Sqrt(15) + 0.5) / 4;
        double item2 = 10 * (1 / Math.Sqrt(2)) * Math.Exp(-1.0 / 72) / 4;
        var (score, perItem) = Cider.Corpus([T("x x y"), T("q"), T("s")], [Refs("x y z"), Refs("q r"), Refs("t")]);
        Assert.Equal(item1, perItem[0], 12);
        Assert.Equal(item2, perItem[1], 12);
        Assert.Equal(0.0, perItem[2], 12);
        Assert.Equal((item1 + item2) / 3, score, 12);
    }

    [Fact]
    public void DocumentFrequencyCountsItemsNotReferences()
    {
        // "a" appears in both references of item 1 but df(a) = 1 (one item), weight ln2 ≠ 0.
        // Item 1: each reference gives similarity 1 at order 1 → (1 + 1)/4 summed over orders, / 2 references, ×10 = 2.5.
        var (score, perItem) = Cider.Corpus([T("a"), T("b")], [Refs("a", "a"), Refs("c")]);
        Assert.Equal(2.5, perItem[0], 12);
        Assert.Equal(1.25, score, 12);
    }

    [Fact]
    public void ScoreDependsOnTheCorpusThroughIdf()
    {
        // The same item scored in a larger corpus where its words are common gets a different (lower) score.
        var alone = Cider.Corpus([T("heart normal"), T("x")], [Refs("heart normal size"), Refs("y")]).PerItem[0];
        var common = Cider.Corpus([T("heart normal"), T("x"), T("z")], [Refs("heart normal size"), Refs("heart normal"), Refs("heart normal")]).PerItem[0];
        Assert.True(alone > common, $"{alone} vs {common}");
    }
}
