using System.CommandLine;

namespace XrayVL.Cli;

/// <summary>Options several commands share, defined once.</summary>
public static class CommonOptions
{
    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = "Checkpoint folder (config.json + model.safetensors + tokenizer); default: $XRAYVL_MODEL or models/default",
    };

    public static Option<string> Language(string defaultValue = "en", string description = "Language of prompts and answers: en or zh (default: en; zh for XrayGLM models)") => new Option<string>("--lang", "-l")
    {
        Description = description,
        DefaultValueFactory = _ => defaultValue,
    }.AcceptOnlyFromAmong("en", "zh");

    /// <summary>
    /// --lang as given; when the user did not give it, the model's own language (<paramref name="modelDefault"/>: Chinese
    /// for XrayGLM, as its CLI speaks).
    /// </summary>
    public static string LanguageOf(ParseResult parse, Option<string> lang, string modelDefault) =>
        parse.GetResult(lang) is { Implicit: false } ? parse.GetValue(lang)! : modelDefault;

    public static Option<bool> Json(string description = "Print JSON instead of text") => new("--json") { Description = description };

    public static Option<int> MaxTokens() => new Option<int>("--max-tokens")
    {
        Description = "Longest answer in tokens",
        DefaultValueFactory = _ => 256,
    }.AtLeast(1);

    public static Option<int?> Seed() => new("--seed") { Description = "Seed for sampling (reproducible answers)" };

    public static Option<double> Temperature() => new Option<double>("--temperature")
    {
        Description = "0 = greedy (default); above 0 samples with this temperature",
        DefaultValueFactory = _ => 0.0,
    }.AtLeast(0.0);

    /// <summary>`--dtype`: how weights are held for inference (see WeightFormats); fp32 by default.</summary>
    public static Option<string> DType() => new Option<string>("--dtype")
    {
        Description = "Weights for inference: fp32 (default), bf16, int8 (bf16 with Q8_0 int8 decoder linears) or int4 (bf16 with Q4_0 4-bit decoder linears)",
        DefaultValueFactory = _ => "fp32",
    }.AcceptOnlyFromAmong("fp32", "bf16", "int8", "int4");

    /// <summary>A list option that takes its values space- or comma-separated alike (`--tasks report vqa`,
    /// `--tasks report,vqa`, `--tasks report, vqa`); read it with <see cref="Values"/>.</summary>
    public static Option<string[]> List(string name, string description, string[] defaults) => new(name)
    {
        Description = description + " (space- or comma-separated)",
        DefaultValueFactory = _ => defaults,
        AllowMultipleArgumentsPerToken = true,
    };

    /// <summary>The values of a <see cref="List"/> option: each token split at commas, trimmed, empty ones dropped.</summary>
    public static string[] Values(ParseResult parse, Option<string[]> option) =>
        [.. (parse.GetValue(option) ?? []).SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))];

    /// <summary>Refuses values below <paramref name="minimum"/> at parse time, naming the flag (not the setting it feeds).</summary>
    public static Option<T> AtLeast<T>(this Option<T> option, T minimum) where T : struct, IComparable<T>
    {
        option.Validators.Add(result =>
        {
            T value;
            try { value = result.GetValueOrDefault<T>(); }
            catch (InvalidOperationException) { return; }   // not a number at all: the parser reports that itself
            if (value.CompareTo(minimum) < 0) result.AddError($"{option.Name} must be at least {minimum} (got {value})");
        });
        return option;
    }
}
