using System.CommandLine;
using XrayVL.Evaluation;

namespace XrayVL.Cli;

/// <summary>`xrayvl score --pred FILE --ref FILE`: caption metrics and clinical efficacy of given texts, no model needed.</summary>
public static class ScoreCommand
{
    public static Command Create(CliIO io)
    {
        var predictions = new Option<string>("--pred") { Description = "Predicted reports, one per line", Required = true };
        var references = new Option<string>("--ref") { Description = "Reference reports, one per line (several separated by ' ||| ')", Required = true };
        var lang = new Option<string>("--lang", "-l")
        {
            Description = "Language of the texts: auto (by their script), en (words) or zh (characters); a language the texts contradict is refused",
            DefaultValueFactory = _ => "auto",
        }.AcceptOnlyFromAmong("auto", "en", "zh");
        var json = CommonOptions.Json("One JSON object: bleu1..bleu4, rouge_l, cider, meteor, ce_micro_f1, ce_macro_f1");
        var command = new Command("score", "Score predicted reports against references (BLEU, ROUGE-L, CIDEr-D, METEOR*, clinical efficacy)")
            { predictions, references, lang, json };
        command.SetAction(parse =>
        {
            var scores = Scorer.ScoreFiles(parse.GetValue(predictions)!, parse.GetValue(references)!, parse.GetValue(lang)!);
            io.Out.WriteLine(parse.GetValue(json) ? scores.ToJson() : scores.ToText());
            return 0;
        });
        return command;
    }
}
