using System.Globalization;
using System.Text;
using System.Text.Json;
using XrayVL.Data.Labeler;

namespace XrayVL.Evaluation;

/// <summary>One row of the reference-figures table.</summary>
/// <param name="Name">What produced the predictions ("most common training report", ...).</param>
/// <param name="Tokenization">"coco-caption" (<see cref="CaptionTokenizer"/>) or "r2gen" (<see cref="ReferenceFigures.R2GenTokens"/>).</param>
public sealed record ReferenceRow(string Name, string Tokenization, TextScores Scores);

/// <summary>Text-only baselines on a report-generation test split, beside published figures.</summary>
public sealed record ReferenceFiguresResult(IReadOnlyList<ReferenceRow> Rows, int TrainReports, int TestReports, string ConstantReport, int RandomSeeds)
{
    /// <summary>R2Gen (Chen et al., EMNLP 2020), IU X-Ray test split, as published (no CIDEr, no CE for IU).</summary>
    public static readonly IReadOnlyDictionary<string, double> PublishedR2Gen = new Dictionary<string, double>
    {
        ["bleu1"] = 0.470, ["bleu2"] = 0.304, ["bleu3"] = 0.219, ["bleu4"] = 0.165, ["meteor"] = 0.187, ["rouge_l"] = 0.371,
    };

    /// <summary>The markdown table: published R2Gen first, then each baseline row.</summary>
    public string ToMarkdown()
    {
        static string F(double v) => v.ToString("0.000", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.AppendLine("| predictions (IU X-Ray, R2Gen test split) | tokens | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR* | ROUGE-L | CIDEr | CE micro F1 | CE macro F1 |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var p = PublishedR2Gen;
        sb.AppendLine($"| R2Gen (Chen et al., EMNLP 2020), published | R2Gen | {F(p["bleu1"])} | {F(p["bleu2"])} | {F(p["bleu3"])} | {F(p["bleu4"])} | {F(p["meteor"])} | {F(p["rouge_l"])} | – | – | – |");
        foreach (var row in Rows)
        {
            var s = row.Scores;
            sb.AppendLine($"| {row.Name} | {row.Tokenization} | {F(s.Bleu1)} | {F(s.Bleu2)} | {F(s.Bleu3)} | {F(s.Bleu4)} | {F(s.Meteor)} | {F(s.RougeL)} | {F(s.Cider)} | {F(s.CeMicroF1)} | {F(s.CeMacroF1)} |");
        }
        return sb.ToString();
    }
}

/// <summary>
/// Reference figures on IU X-Ray text alone: on the R2Gen test split (590 studies; reports = findings), the most
/// common training report predicted for every study, and a random training report per study (mean over seeds
/// 0..k−1), scored like a model — so a reader sees how much of a published score the template alone earns.
/// Each baseline is scored twice: on coco-caption tokens (<see cref="CaptionTokenizer"/>, this project's standard)
/// and on R2Gen-style tokens (<see cref="R2GenTokens"/>), which keep the sentence periods as words as R2Gen's own
/// pipeline does. Clinical efficacy is computed from the raw texts in both.
/// </summary>
public static class ReferenceFigures
{
    public const string R2GenAnnotationRelativePath = "iu-xray/splits/r2gen-annotation.json";

    /// <summary>
    /// Runs the IU baselines. <paramref name="sharedDataDirOrAnnotation"/> is the shared data folder (holding
    /// iu-xray/splits/r2gen-annotation.json) or the annotation file itself.
    /// </summary>
    public static ReferenceFiguresResult IuTextBaselines(string sharedDataDirOrAnnotation, int randomSeeds = 5, ILabeler? labeler = null)
    {
        string path = File.Exists(sharedDataDirOrAnnotation) ? sharedDataDirOrAnnotation : Path.Combine(sharedDataDirOrAnnotation, R2GenAnnotationRelativePath);
        var (train, test) = ReadR2GenAnnotation(path);
        return TextBaselines(train, test, randomSeeds, labeler);
    }

    /// <summary>Reads the train and test reports of an R2Gen-style annotation.json ({"train": [{"report": ...}], "test": [...]}).</summary>
    public static (List<string> Train, List<string> Test) ReadR2GenAnnotation(string path)
    {
        using var doc = Json.ReadDocument(path, "R2Gen annotation");
        try
        {
            List<string> Reports(string split) => doc.RootElement.TryGetProperty(split, out var list) && list.ValueKind == JsonValueKind.Array
                ? list.EnumerateArray().Select(e => e.TryGetProperty("report", out var r) ? r.GetString() ?? "" : "").ToList()
                : throw new XrayVLException($"{path}: no \"{split}\" list");
            return (Reports("train"), Reports("test"));
        }
        catch (InvalidOperationException e) { throw new XrayVLException($"{path}: unexpected structure ({e.Message})", e); }
    }

    /// <summary>The constant and random baselines of <paramref name="testReports"/> drawn from <paramref name="trainReports"/>.</summary>
    public static ReferenceFiguresResult TextBaselines(IReadOnlyList<string> trainReports, IReadOnlyList<string> testReports, int randomSeeds = 5, ILabeler? labeler = null)
    {
        if (randomSeeds < 1) throw new XrayVLException("randomSeeds must be at least 1");
        labeler = new CachingLabeler(labeler ?? Labeler.Default);   // the same texts are labeled in every row
        var test = testReports.Where(r => !string.IsNullOrWhiteSpace(r)).ToList();
        if (test.Count == 0) throw new XrayVLException("no test report to score");
        var references = test.Select(r => (IReadOnlyList<string>)[r]).ToList();
        string constant = Baselines.MostCommonReport(trainReports);
        var constantPredictions = Enumerable.Repeat(constant, test.Count).ToList();
        var randomPredictions = Enumerable.Range(0, randomSeeds).Select(seed => Baselines.RandomReports(trainReports, test.Count, seed)).ToList();

        var vocabulary = R2GenVocabulary(trainReports);
        string[] R2Gen(string text) => R2GenTokens(text, vocabulary);
        var rows = new List<ReferenceRow>();
        foreach (var (tokenization, tokenize) in new (string, Func<string, string[]>?)[] { ("coco-caption", null), ("r2gen", R2Gen) })
        {
            rows.Add(new ReferenceRow("most common training report", tokenization, Scorer.Score(constantPredictions, references, "en", labeler, tokenize)));
            var perSeed = randomPredictions.Select(p => Scorer.Score(p, references, "en", labeler, tokenize)).ToList();
            rows.Add(new ReferenceRow(randomSeeds == 1 ? "random training report (seed 0)" : $"random training report (mean of seeds 0–{randomSeeds - 1})", tokenization, Mean(perSeed)));
        }
        return new ReferenceFiguresResult(rows, trainReports.Count, test.Count, constant, randomSeeds);
    }

    /// <summary>
    /// Tokens as R2Gen's own IU pipeline makes them (re-implemented from its described behaviour): lower case; list
    /// numbers ("1. ", " 2. ") and doubled periods removed; the report cut into sentences at ". "; within each sentence
    /// the characters . , ? ; * ! % ^ &amp; _ + ( ) : &lt; = &gt; @ [ ] { } " / \ ' removed (hyphens stay); sentences joined
    /// by " . " with a final " ."; split on spaces, so each period is a word. With a <paramref name="vocabulary"/>,
    /// words outside it become "&lt;unk&gt;" (R2Gen keeps words seen at least 3 times in training), and the text is cut
    /// to 59 tokens (R2Gen's max_seq_length of 60 counts a start token).
    /// </summary>
    public static string[] R2GenTokens(string report, IReadOnlySet<string>? vocabulary = null)
    {
        string t = report;
        for (int i = 0; i < 3; i++) t = t.Replace("..", ".");
        t = t.Replace("1. ", "");
        foreach (string n in new[] { "2", "3", "4", "5" }) t = t.Replace($". {n}. ", ". ");
        foreach (string n in new[] { "2", "3", "4", "5" }) t = t.Replace($" {n}. ", ". ");
        var sentences = t.Trim().ToLowerInvariant().Split(". ");
        var cleaned = sentences.Select(s =>
        {
            var sb = new StringBuilder();
            foreach (char c in s.Trim())
                if (!IsR2GenRemoved(c)) sb.Append(c);
            return sb.ToString();
        });
        string joined = string.Join(" . ", cleaned) + " .";
        var tokens = joined.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (vocabulary is null) return tokens;
        return tokens.Take(59).Select(w => vocabulary.Contains(w) ? w : "<unk>").ToArray();
    }

    /// <summary>R2Gen's vocabulary: the tokens of the training reports that occur at least <paramref name="threshold"/> times.</summary>
    public static HashSet<string> R2GenVocabulary(IEnumerable<string> trainingReports, int threshold = 3)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string report in trainingReports)
            foreach (string token in R2GenTokens(report)) counts[token] = counts.GetValueOrDefault(token) + 1;
        return counts.Where(kv => kv.Value >= threshold).Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
    }

    // R2Gen's character class runs from ':' to '[' too, so < = > ? @ go as well (letters are lower case by then).
    private static bool IsR2GenRemoved(char c) => c is '.' or ',' or '?' or ';' or '*' or '!' or '%' or '^' or '&' or '_' or '+' or '(' or ')'
        or (>= ':' and <= '[') or ']' or '{' or '}' or '"' or '/' or '\\' or '\'';

    private static TextScores Mean(IReadOnlyList<TextScores> runs) => runs[0] with
    {
        Bleu1 = runs.Average(r => r.Bleu1),
        Bleu2 = runs.Average(r => r.Bleu2),
        Bleu3 = runs.Average(r => r.Bleu3),
        Bleu4 = runs.Average(r => r.Bleu4),
        RougeL = runs.Average(r => r.RougeL),
        Cider = runs.Average(r => r.Cider),
        Meteor = runs.Average(r => r.Meteor),
        CeMicroF1 = runs.Average(r => r.CeMicroF1),
        CeMacroF1 = runs.Average(r => r.CeMacroF1),
        CeMicroPrecision = runs.Average(r => r.CeMicroPrecision),
        CeMicroRecall = runs.Average(r => r.CeMicroRecall),
        CeMacroPrecision = runs.Average(r => r.CeMacroPrecision),
        CeMacroRecall = runs.Average(r => r.CeMacroRecall),
        CeAccuracy = runs.Average(r => r.CeAccuracy),
        ClinicalEfficacy = null,
    };
}

/// <summary>Remembers the labels of texts already labeled (baseline tables label the same reports many times).</summary>
internal sealed class CachingLabeler(ILabeler inner) : ILabeler
{
    private readonly Dictionary<(string, string), ChexpertLabels> cache = [];

    public ChexpertLabels Label(string report, string lang = "auto")
    {
        lock (cache)
        {
            if (cache.TryGetValue((report, lang), out var labels)) return labels;
        }
        var result = inner.Label(report, lang);
        lock (cache) cache[(report, lang)] = result;
        return result;
    }
}
