using System.Text.Json;
using XrayVL.Data.Labeler;

namespace XrayVL.Evaluation;

/// <summary>
/// All text scores of one set of predictions: the caption metrics (coco-caption style, on <see cref="CaptionTokenizer"/>
/// tokens) and clinical efficacy. Serialized with <see cref="Json.Options"/> the keys are bleu1, bleu2, bleu3, bleu4,
/// rouge_l, cider, meteor, ce_micro_f1, ce_macro_f1, then the other CE figures and counts.
/// </summary>
public sealed record TextScores
{
    public double Bleu1 { get; init; }
    public double Bleu2 { get; init; }
    public double Bleu3 { get; init; }
    public double Bleu4 { get; init; }
    public double RougeL { get; init; }
    public double Cider { get; init; }
    /// <summary>This project's METEOR approximation (exact + Porter-stem matchers), see <see cref="Evaluation.Meteor"/>.</summary>
    public double Meteor { get; init; }
    public double CeMicroF1 { get; init; }
    public double CeMacroF1 { get; init; }
    public double CeMicroPrecision { get; init; }
    public double CeMicroRecall { get; init; }
    public double CeMacroPrecision { get; init; }
    public double CeMacroRecall { get; init; }
    public double CeAccuracy { get; init; }
    /// <summary>Items scored.</summary>
    public int Items { get; init; }
    /// <summary>Items left out because their reference was empty (ScoreFiles).</summary>
    public int SkippedEmptyReferences { get; init; }
    /// <summary>"en" or "zh": how the texts were tokenized and labeled.</summary>
    public string Language { get; init; } = "en";

    /// <summary>The full CE result behind the ce_* figures (per label counts); not serialized.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public ClinicalEfficacyResult? ClinicalEfficacy { get; init; }

    /// <summary>The object `xrayvl score --json` prints (one line).</summary>
    public string ToJson(bool indented = false) => JsonSerializer.Serialize(this, indented ? Json.Options : Json.Line);

    /// <summary>A small aligned table for people.</summary>
    public string ToText() =>
        $"BLEU-1 {Bleu1:0.0000}  BLEU-2 {Bleu2:0.0000}  BLEU-3 {Bleu3:0.0000}  BLEU-4 {Bleu4:0.0000}\n" +
        $"ROUGE-L {RougeL:0.0000}  CIDEr {Cider:0.0000}  METEOR* {Meteor:0.0000}\n" +
        $"CE micro P/R/F1 {CeMicroPrecision:0.0000}/{CeMicroRecall:0.0000}/{CeMicroF1:0.0000}  macro P/R/F1 {CeMacroPrecision:0.0000}/{CeMacroRecall:0.0000}/{CeMacroF1:0.0000}\n" +
        $"{Items} items ({Language}){(SkippedEmptyReferences > 0 ? $", {SkippedEmptyReferences} with an empty reference left out" : "")}; *METEOR: exact + stem matchers only (not the official scorer)";
}

/// <summary>
/// Scores predicted texts against one or more references each: BLEU-1..4, ROUGE-L, CIDEr-D, METEOR (approximation)
/// and clinical efficacy — the entry point of `xrayvl score` and of the evaluation report.
/// </summary>
public static class Scorer
{
    /// <summary>Separates several references on one line of a reference file.</summary>
    public const string ReferenceSeparator = " ||| ";

    /// <summary>
    /// Scores <paramref name="predictions"/>[i] against <paramref name="references"/>[i] (at least one each). Text metrics
    /// use <see cref="CaptionTokenizer"/> in <paramref name="lang"/> ("zh": characters) unless <paramref name="tokenize"/>
    /// is given; clinical efficacy labels the raw texts, the reference side from the first reference of each item.
    /// </summary>
    public static TextScores Score(IReadOnlyList<string> predictions, IReadOnlyList<IReadOnlyList<string>> references, string lang = "en",
        ILabeler? labeler = null, Func<string, string[]>? tokenize = null)
    {
        if (predictions.Count != references.Count)
            throw new XrayVLException($"{predictions.Count} predictions but {references.Count} reference sets");
        if (lang is not ("en" or "zh")) throw new XrayVLException($"unknown scoring language '{lang}'; expected en or zh");
        for (int i = 0; i < references.Count; i++)
            if (references[i].Count == 0) throw new XrayVLException($"item {i + 1} has no reference");
        tokenize ??= text => CaptionTokenizer.Tokenize(text, lang);

        var candidates = predictions.Select(p => (IReadOnlyList<string>)tokenize(p)).ToList();
        var refs = references.Select(rs => (IReadOnlyList<IReadOnlyList<string>>)rs.Select(r => (IReadOnlyList<string>)tokenize(r)).ToList()).ToList();
        var bleu = Bleu.Corpus(candidates, refs);
        var ce = ClinicalEfficacy.FromTexts(predictions, references.Select(r => r[0]).ToList(), lang, labeler);
        return new TextScores
        {
            Bleu1 = bleu.Scores[0],
            Bleu2 = bleu.Scores[1],
            Bleu3 = bleu.Scores[2],
            Bleu4 = bleu.Scores[3],
            RougeL = Evaluation.RougeL.Corpus(candidates, refs).Score,
            Cider = Evaluation.Cider.Corpus(candidates, refs).Score,
            Meteor = Evaluation.Meteor.Corpus(candidates, refs, lang).Score,
            CeMicroF1 = ce.MicroF1,
            CeMacroF1 = ce.MacroF1,
            CeMicroPrecision = ce.MicroPrecision,
            CeMicroRecall = ce.MicroRecall,
            CeMacroPrecision = ce.MacroPrecision,
            CeMacroRecall = ce.MacroRecall,
            CeAccuracy = ce.Accuracy,
            Items = predictions.Count,
            Language = lang,
            ClinicalEfficacy = ce,
        };
    }

    /// <summary>
    /// `xrayvl score --pred FILE --ref FILE [--lang en|zh]`: one text per line, same order; a reference line may hold
    /// several references separated by " ||| ". The files must have the same number of lines (a final newline does not
    /// count as a line). A blank prediction line is scored as an empty text; an item whose reference line is blank has
    /// nothing to be scored against and is left out (counted in <see cref="TextScores.SkippedEmptyReferences"/>).
    /// </summary>
    /// <param name="lang">"en", "zh", or "auto": the script of the references decides. An explicit language that the texts'
    /// script contradicts is refused: English tokenization of Chinese (or the English labeler on it) gives wrong
    /// figures without any error.</param>
    public static TextScores ScoreFiles(string predictionPath, string referencePath, string lang = "auto", ILabeler? labeler = null)
    {
        var predictions = ReadLines(predictionPath, "prediction");
        var referenceLines = ReadLines(referencePath, "reference");
        lang = Labeler.CheckLanguage(string.Join('\n', referenceLines), lang, referencePath);
        Labeler.CheckLanguage(string.Join('\n', predictions), lang, predictionPath);
        if (predictions.Length != referenceLines.Length)
            throw new XrayVLException(
                $"{predictionPath} has {predictions.Length} lines but {referencePath} has {referenceLines.Length}: one prediction per reference line is needed");
        var keptPredictions = new List<string>();
        var keptReferences = new List<IReadOnlyList<string>>();
        int skipped = 0;
        for (int i = 0; i < predictions.Length; i++)
        {
            var refs = SplitReferences(referenceLines[i]);
            if (refs.Count == 0) { skipped++; continue; }
            keptPredictions.Add(predictions[i]);
            keptReferences.Add(refs);
        }
        if (keptPredictions.Count == 0) throw new XrayVLException($"{referencePath}: no non-empty reference line to score against");
        return Score(keptPredictions, keptReferences, lang, labeler) with { SkippedEmptyReferences = skipped };
    }

    /// <summary>The references of one line: split on " ||| ", trimmed, blanks dropped.</summary>
    public static List<string> SplitReferences(string line) =>
        line.Split(ReferenceSeparator.Trim(), StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToList();

    private static string[] ReadLines(string path, string what)
    {
        if (!File.Exists(path)) throw new XrayVLException($"{path}: {what} file not found");
        try { return File.ReadAllLines(path); }
        catch (IOException e) { throw new XrayVLException($"{path}: cannot read the {what} file ({e.Message})", e); }
        catch (UnauthorizedAccessException e) { throw new XrayVLException($"{path}: cannot read the {what} file ({e.Message})", e); }
    }
}
